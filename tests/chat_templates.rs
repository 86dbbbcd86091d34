//! Chat templates render as Hugging Face's `apply_chat_template` does, and
//! the loss mask covers exactly the assistant turns.
//!
//! The goldens in tests/golden/ were made by `scripts/golden-chat.py`, which
//! gives the same templates (SmolLM2's from its GGUF file, kept here as
//! tests/golden/smollm2.jinja; meft's built-ins from core/src/data/chat.rs)
//! to transformers' `PreTrainedTokenizerFast.apply_chat_template` with the
//! same conversation, with and without `add_generation_prompt`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::data::batch::encode_segments;
use meft::data::chat::{builtin, ChatTemplate, Message, Role};
use meft::model::Tokenizer;

fn golden(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/").to_string() + name;
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn conversation() -> Vec<Message> {
    vec![
        Message::new(Role::System, "You answer in one short sentence."),
        Message::new(Role::User, "Who built the Veltrano lighthouse?"),
        Message::new(Role::Assistant, "Odile Marsk built it."),
        Message::new(Role::User, "In which year?"),
        Message::new(Role::Assistant, "In 1874."),
    ]
}

/// (golden name, template source, BOS text, EOS text), as the script gives them.
fn templates() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "smollm2",
            golden("smollm2.jinja"),
            "<|im_start|>",
            "<|im_end|>",
        ),
        ("chatml", builtin("chatml").unwrap().into(), "", ""),
        (
            "llama3",
            builtin("llama3").unwrap().into(),
            "<|begin_of_text|>",
            "<|eot_id|>",
        ),
        ("gemma", builtin("gemma").unwrap().into(), "<bos>", "<eos>"),
        ("mistral", builtin("mistral").unwrap().into(), "<s>", "</s>"),
    ]
}

#[test]
fn templates_render_byte_for_byte_as_apply_chat_template() {
    let conv = conversation();
    for (name, source, bos, eos) in templates() {
        let t = ChatTemplate::new(&source, name, bos, eos).unwrap();
        assert_eq!(
            t.render(&conv, false).unwrap(),
            golden(&format!("chat-{name}.txt")),
            "{name}"
        );
        assert_eq!(
            t.render(&conv[..4], true).unwrap(),
            golden(&format!("chat-{name}-prompt.txt")),
            "{name} with the generation prompt"
        );
    }
}

/// Token by token: a token is a target exactly when it belongs to an
/// assistant turn (its words and the markup that closes it).
#[test]
fn the_loss_mask_covers_exactly_the_assistant_tokens() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    let conv = conversation();
    for (name, source, bos, eos) in templates() {
        let t = ChatTemplate::new(&source, name, bos, eos).unwrap();
        let segments = t.segments(&conv).unwrap();
        let enc = encode_segments(&segments, &tok, 4096, false).unwrap();
        // The tiny tokenizer is byte-level (its <s> and </s> one token
        // each), so every token's segment is known by counting.
        assert_eq!(enc.ids[0], 1, "{name}: BOS first, once");
        assert_ne!(enc.ids[1], 1, "{name}: BOS first, once");
        let mut want = Vec::new();
        for s in &segments {
            let n = tok.encode(&s.text).unwrap().len();
            want.extend(std::iter::repeat_n(u8::from(s.trained), n));
        }
        if !segments[0].text.starts_with("<s>") {
            want.insert(0, 0);
        }
        want[0] = 0;
        assert_eq!(enc.loss_mask, want, "{name}");
        let trained: Vec<u32> = enc
            .ids
            .iter()
            .zip(&enc.loss_mask)
            .filter(|(_, m)| **m == 1)
            .map(|(i, _)| *i)
            .collect();
        let text = tok.decode(&trained).unwrap();
        assert!(
            text.starts_with("Odile Marsk built it."),
            "{name}: {text:?}"
        );
        assert!(text.contains("In 1874."), "{name}: {text:?}");
        assert!(
            !text.contains("lighthouse") && !text.contains("year"),
            "{name}: {text:?}"
        );
        // With train_on_inputs every token but the first is a target.
        let all = encode_segments(&segments, &tok, 4096, true).unwrap();
        assert!(all.loss_mask[1..].iter().all(|m| *m == 1), "{name}");
    }
}

/// The template inside the SmolLM2 file is the one the goldens were made
/// from, and `meft generate --chat` renders the question through it.
#[test]
#[ignore = "needs SmolLM2: scripts/get-smollm2.sh, then --include-ignored"]
fn smollm2_carries_its_template() {
    let loaded = meft::model::load_model(
        &meft::model::ModelRef::Gguf(common::smollm2()),
        &meft::model::Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        loaded.tokenizer.chat_template.as_deref(),
        Some(golden("smollm2.jinja").as_str())
    );
}
