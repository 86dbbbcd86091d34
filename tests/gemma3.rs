//! The real Gemma 3 270M (GGUF Q4_K_M, `scripts/get-gemma3.sh`): logits
//! against candle-transformers' Gemma 3, pinned token ids, a question
//! answered, and every adapter training on it. Ignored without the file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device, Tensor};
use meft::model::ops::Activation;
use meft::model::{load_model, ModelRef};
use std::collections::HashMap;

fn gemma() -> meft::model::LoadedModel {
    load_model(&ModelRef::Gguf(common::gemma3()), &Device::Cpu).unwrap()
}

/// max |a − b| / max |b|, and whether both pick the same next token.
fn compare(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    eprintln!(
        "{what}: max |Δ| / max |logit| = {:e}, next token {} vs {}",
        diff / scale,
        argmax(got),
        argmax(want)
    );
    assert_eq!(argmax(got), argmax(want), "{what}: next token");
    diff / scale
}

const PROMPT: &str = "Question: What is the capital of France?\nAnswer:";

#[test]
#[ignore = "needs Gemma 3 270M: scripts/get-gemma3.sh, then --include-ignored"]
fn gemma3_logits_match_candle_transformers() {
    let loaded = gemma();
    let ids = loaded.tokenizer.encode_prompt(PROMPT).unwrap();
    let got = common::row_logits(&loaded.model, &ids, true);
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();

    // candle-transformers' Gemma 3 (GELU-tanh, as the checkpoint says) on
    // the same dequantized weights, under their Hugging Face names.
    let cfg = meft::model::load::hf_config_json(&loaded.model.config, None, None);
    let cfg: candle_transformers::models::gemma3::Config = serde_json::from_value(cfg).unwrap();
    let tensors: HashMap<String, Tensor> = loaded.model.named_tensors().into_iter().collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let mut reference = candle_transformers::models::gemma3::Model::new(false, &cfg, vb).unwrap();
    let want = common::values(&reference.forward(&x, 0).unwrap());
    let rel = compare("gemma3 vs candle gemma3", &got, &want);
    assert!(rel <= 1e-3, "relative difference {rel}");

    // candle-transformers' quantized Gemma 3 reads the GGUF file itself, and
    // its FFN applies SiLU where Gemma 3 uses GELU-tanh (candle issue #3745):
    // against it, meft runs with SiLU too, and everything else (the file's
    // reading, norms, local/global RoPE, windows, q/k norms) must agree.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut silu = loaded.model.clone();
    silu.config.activation = Activation::Silu;
    let got = common::row_logits(&silu, &ids, true);
    let path = common::gemma3();
    let mut file = std::fs::File::open(&path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut quantized = candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(
        ct,
        &mut file,
        &Device::Cpu,
    )
    .unwrap();
    let want = common::values(&quantized.forward(&x, 0).unwrap());
    let rel = compare("gemma3 (SiLU) vs candle quantized_gemma3", &got, &want);
    assert!(rel <= 1e-3, "relative difference {rel}");
}

/// Ids pinned from SentencePiece itself (the `sentencepiece` package run on
/// a model built from this file's pieces, scores and types, user-defined
/// pieces with their spaces escaped as llama.cpp's converter unescaped
/// them): Gemma's tokenizer is a SentencePiece BPE with byte fallback, no
/// dummy prefix, and whitespace runs as user-defined pieces.
#[test]
#[ignore = "needs Gemma 3 270M: scripts/get-gemma3.sh, then --include-ignored"]
fn gemma3_token_ids_match_sentencepiece() {
    let loaded = gemma();
    let tok = &loaded.tokenizer;
    let cases: [(&str, &[u32]); 3] = [
        (
            "What is the capital of France?",
            &[3689, 563, 506, 5279, 529, 7001, 236881],
        ),
        (
            "Odile Marsk built the lighthouse in 1874.\n\n  Spaces  and\ttabs, naïve café — 東京 🙂",
            &[
                46130, 755, 23156, 236767, 5284, 506, 63937, 528, 236743, 236770, 236828, 236832,
                236812, 236761, 108, 138, 121256, 138, 624, 255968, 39218, 236764, 120362, 33443,
                2192, 86459, 57235,
            ],
        ),
        (
            "def f(x):\n    return x  *  2\n\n\n# 12345 3.14159 ,,, !!! 'quoted' \"double\"",
            &[
                2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 138, 236829, 138, 236778,
                109, 236865, 236743, 236770, 236778, 236800, 236812, 236810, 236743, 236800,
                236761, 236770, 236812, 236770, 236810, 236819, 1031, 17930, 42228, 756, 148758,
                236789, 623, 7902, 236775,
            ],
        ),
    ];
    for (text, want) in cases {
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(tok.decode(&got).unwrap(), text, "round trip of {text:?}");
    }
    // The model's own specials, from the file's metadata.
    assert_eq!(tok.bos_id, Some(2));
    assert_eq!(tok.eos_id, Some(1));
    assert_eq!(tok.pad_id, 0);
    assert!(tok.add_bos);
    assert_eq!(tok.token_to_id("<end_of_turn>"), Some(106));
    assert!(tok.stop_ids.contains(&106), "end of turn stops generation");
    assert_eq!(
        tok.encode("<start_of_turn>user\nhi<end_of_turn>\n")
            .unwrap()[..3],
        [105, 2364, 107]
    );
    assert_eq!(
        tok.chat_format(),
        Some(meft::model::tokenizer::ChatFormat::Gemma)
    );
}

/// `meft run` on Gemma 3 270M with each adapter: 20 steps, the loss
/// falling; then `meft plan --probe` on it.
#[test]
#[ignore = "needs Gemma 3 270M: scripts/get-gemma3.sh, then --include-ignored"]
fn gemma3_trains_with_every_adapter_and_plans_with_a_probe() {
    let path = common::gemma3();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");
    let reference = format!("model.reference=\"gguf:{}\"", path.display());
    let small = [
        "train.steps=20",
        "train.batch=4",
        "train.micro_batch=4",
        "train.cutoff_len=48",
        "train.checkpoint_every=0",
        "eval.limit=1",
    ];
    for method in ["meft", "lora", "parallel"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = common::meft_bin();
        cmd.args(["run", example, "--out"]).arg(dir.path());
        cmd.args(["--set", &reference]);
        cmd.args(["--set", &format!("method.kind=\"{method}\"")]);
        for s in small {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events = meft::train::read_events(&common::the_run_in(dir.path())).unwrap();
        let losses: Vec<f64> = events
            .iter()
            .filter_map(|e| match e {
                meft::event::Event::Step(s) => Some(s.loss),
                _ => None,
            })
            .collect();
        assert_eq!(losses.len(), 20, "{method}");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&losses[..5]), mean(&losses[15..]));
        eprintln!("gemma3 {method}: loss {first:.3} over steps 1-5, {last:.3} over 16-20");
        assert!(last < first, "{method}: loss did not fall: {losses:?}");
    }
    let out = common::meft_bin()
        .args(["plan", example, "--probe", "4", "--set", &reference])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("gemma3"), "the plan names the family: {text}");
}

/// The checkpoint is Gemma 3's pretrained base (its file carries no chat
/// template): asked in the question/answer form it completes, it answers.
#[test]
#[ignore = "needs Gemma 3 270M: scripts/get-gemma3.sh, then --include-ignored"]
fn gemma3_answers_paris() {
    let out = common::meft_bin()
        .args(["generate", "--model"])
        .arg(format!("gguf:{}", common::gemma3().display()))
        .args(["--prompt", PROMPT, "--max-new-tokens", "8"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("gemma3: {PROMPT:?} → {text:?}");
    assert!(text.trim_start().starts_with("Paris"), "{text}");
}
