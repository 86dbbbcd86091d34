//! Tokenizers: pinned SmolLM2 ids, exact round trips.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::model::Tokenizer;

#[test]
fn tiny_round_trips_every_byte() {
    let tok = Tokenizer::tiny(&[]).unwrap();
    for s in [
        "Who completed the Veltrano lighthouse?",
        "  two leading spaces, tabs\tand\nnew lines",
        "4 * 18 = <<4*18=72>>72\n#### 72",
        "non-ASCII: café, naïve, 日本語, 🤖",
        "API MAIN INFO: Skyloom, Forecast, Weather",
    ] {
        let ids = tok.encode(s).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), s);
    }
    // Three specials, then the 256 bytes.
    assert_eq!(tok.vocab_size(), 259);
    assert_eq!((tok.pad_id, tok.bos_id, tok.eos_id), (0, Some(1), Some(2)));
    assert_eq!(tok.encode("<s>hi</s>").unwrap()[0], 1);
}

#[test]
#[ignore = "needs SmolLM2: scripts/get-smollm2.sh, then --include-ignored"]
fn smollm2_pinned_ids() {
    let path = common::smollm2();
    let loaded = meft::model::load_model(
        &meft::model::ModelRef::Gguf(path),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let tok = &loaded.tokenizer;
    for (text, ids) in PINNED {
        let got = tok.encode(text).unwrap();
        let pieces: Vec<String> = got
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap_or_default())
            .collect();
        eprintln!("{text:?} -> {got:?} {pieces:?}");
        assert_eq!(&got, ids, "ids of {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), *text, "round trip of {text:?}");
    }
    // Control tokens of the chat template are single special ids.
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert!(tok.stop_ids.contains(&2));
}

// Digits split one by one before the byte-level BPE (llama.cpp's "smollm"
// pre-tokenizer); the pieces are printed by the test for a human check.
const PINNED: &[(&str, &[u32])] = &[
    ("Hello world", &[19556, 905]),
    ("  leading spaces", &[216, 2899, 5600]),
    (
        "caf\u{e9} na\u{ef}ve \u{65e5}\u{672c}\u{8a9e}",
        &[
            83, 1939, 2756, 15486, 46494, 17097, 241, 115, 40993, 179, 120, 248,
        ],
    ),
    ("12345 apples", &[33, 34, 35, 36, 37, 13855]),
    (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
        &[1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198],
    ),
];

/// GGUF metadata of a byte-level BPE: the tiny vocabulary's 259 tokens, then
/// the merged ones, `pre` as `tokenizer.ggml.pre`, and specials typed 3.
fn gguf_bpe(
    pre: &str,
    merges: &[(&str, &str)],
    extra: &[(&str, u32)],
) -> std::collections::HashMap<String, candle_core::quantized::gguf_file::Value> {
    use candle_core::quantized::gguf_file::Value;
    let tiny = Tokenizer::tiny(&[]).unwrap();
    let mut tokens: Vec<String> = (0..tiny.vocab_size() as u32)
        .map(|i| tiny.id_to_token(i).unwrap())
        .collect();
    let mut types = vec![3, 3, 3];
    types.resize(tokens.len(), 1);
    for (a, b) in merges {
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    let mut md = std::collections::HashMap::new();
    let s = |x: &str| Value::String(x.to_string());
    md.insert("tokenizer.ggml.model".into(), s("gpt2"));
    md.insert("tokenizer.ggml.pre".into(), s(pre));
    md.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.iter().map(|t| s(t)).collect()),
    );
    md.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    md.insert(
        "tokenizer.ggml.merges".into(),
        Value::Array(merges.iter().map(|(a, b)| s(&format!("{a} {b}"))).collect()),
    );
    for (k, v) in extra {
        md.insert((*k).into(), Value::U32(*v));
    }
    md
}

/// llama.cpp's pre-tokenizer names choose how digits split before merging:
/// GPT-2 keeps "12345" one word, Llama 3 (`llama-bpe`) cuts runs of three,
/// Qwen2 every digit; the merges then give three different segmentations.
#[test]
fn gguf_pre_tokenizers_split_digits_as_their_family_does() {
    let merges = [("3", "4"), ("1", "2"), ("12", "3"), ("4", "5")];
    let pieces = |pre: &str| -> Vec<String> {
        let md = gguf_bpe(pre, &merges, &[]);
        let tok = Tokenizer::from_gguf(&md, std::path::Path::new("t.gguf")).unwrap();
        let ids = tok.encode("12345").unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), "12345");
        ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect()
    };
    assert_eq!(pieces("gpt2"), ["12", "34", "5"]);
    assert_eq!(pieces("llama-bpe"), ["123", "45"]);
    assert_eq!(pieces("qwen2"), ["1", "2", "3", "4", "5"]);
    // An unknown pre-tokenizer is refused, naming the file and the key.
    let md = gguf_bpe("deepseek-coder", &merges, &[]);
    let err = Tokenizer::from_gguf(&md, std::path::Path::new("t.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.gguf") && err.contains("tokenizer.ggml.pre \"deepseek-coder\""),
        "{err}"
    );
}

/// Specials come from the file: BOS, EOS and the end-of-turn id stop
/// generation, whatever their names.
#[test]
fn gguf_specials_come_from_the_metadata() {
    let md = gguf_bpe(
        "gpt2",
        &[],
        &[
            ("tokenizer.ggml.bos_token_id", 2),
            ("tokenizer.ggml.eos_token_id", 1),
            ("tokenizer.ggml.eot_token_id", 0),
        ],
    );
    let tok = Tokenizer::from_gguf(&md, std::path::Path::new("t.gguf")).unwrap();
    assert_eq!((tok.bos_id, tok.eos_id), (Some(2), Some(1)));
    assert!(
        tok.stop_ids.contains(&1) && tok.stop_ids.contains(&0),
        "{:?}",
        tok.stop_ids
    );
}
