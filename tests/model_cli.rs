//! The binary: bad model files give one line naming the file, exit 2; the
//! real SmolLM2 answers a question.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meft_bin;
use std::path::Path;

fn generate_with(model: &str) -> (i32, String, String) {
    let out = meft_bin()
        .args([
            "generate",
            "--model",
            model,
            "--prompt",
            "hello",
            "--max-new-tokens",
            "2",
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(model: &str, names: &str, says: &str) {
    let (code, _out, err) = generate_with(model);
    assert_eq!(code, 2, "exit code for {model}: stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].contains(names), "{names} not named in: {err}");
    assert!(lines[0].contains(says), "{says:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn good_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 259, "rms_norm_eps": 1e-5, "max_position_embeddings": 64
    })
}

fn tiny_tokenizer(dir: &Path) {
    let tok = meft::model::Tokenizer::tiny(&[]).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), good_config().to_string()).unwrap();
    tiny_tokenizer(dir.path());
    let t = candle_core::Tensor::zeros(
        (259, 16),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let f = dir.path().join("model.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("model.embed_tokens.weight".to_string(), t)]),
        &f,
    )
    .unwrap();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(
        dir.path().to_str().unwrap(),
        "model.safetensors",
        "not a valid safetensors file",
    );
}

#[test]
fn gguf_with_a_wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.gguf");
    std::fs::write(&f, b"GGUX\x03\x00\x00\x00 this is not a model").unwrap();
    assert_one_line_error(f.to_str().unwrap(), "bad.gguf", "not a readable GGUF file");
}

#[test]
fn config_without_hidden_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = good_config();
    c.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    assert_one_line_error(dir.path().to_str().unwrap(), "config.json", "hidden_size");
}

#[test]
fn unparsable_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), good_config().to_string()).unwrap();
    let cfg = meft::model::load::parse_hf_config(&dir.path().join("config.json"))
        .unwrap()
        .0;
    let model = meft::model::load::random_model(&cfg, 1, &candle_core::Device::Cpu).unwrap();
    let tensors: std::collections::HashMap<_, _> = model.named_tensors().into_iter().collect();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        "{\"model\": [unterminated",
    )
    .unwrap();
    assert_one_line_error(
        dir.path().to_str().unwrap(),
        "tokenizer.json",
        "not a valid tokenizer.json",
    );
}

#[test]
fn directory_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), good_config().to_string()).unwrap();
    tiny_tokenizer(dir.path());
    assert_one_line_error(
        dir.path().to_str().unwrap(),
        dir.path().to_str().unwrap(),
        "no weights found",
    );
}

#[test]
fn unknown_model_reference() {
    assert_one_line_error("embedded:huge", "embedded:huge", "unknown embedded model");
}

#[test]
#[ignore = "needs SmolLM2: scripts/get-smollm2.sh, then --include-ignored"]
fn smollm2_answers_paris() {
    let path = common::smollm2();
    let model = format!("gguf:{}", path.display());
    let out = meft_bin()
        .args([
            "generate",
            "--model",
            &model,
            "--prompt",
            common::CHAT_FRANCE,
            "--max-new-tokens",
            "24",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("greedy: {text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Paris"), "greedy answer: {text}");

    // The same question in the model's own markup, recognised by its tokens.
    let out = meft_bin()
        .args(["generate", "--model", &model, "--chat"])
        .args(["--prompt", "What is the capital of France?"])
        .args(["--max-new-tokens", "24"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Paris"), "--chat answer: {text}");

    let out = meft_bin()
        .args([
            "generate",
            "--model",
            &model,
            "--prompt",
            common::CHAT_FRANCE,
            "--beams",
            "4",
            "--repetition-penalty",
            "2.0",
            "--max-new-tokens",
            "16",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("beam 4, penalty 2.0: {text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.trim().is_empty());
}

#[test]
fn a_random_base_of_a_built_in_shape_trains_and_plans_without_a_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = meft_bin()
        .args(["run", example, "--out"])
        .arg(dir.path())
        .args(["--set", "model.reference=\"random:tiny\""])
        .args(["--set", "model.dtype=\"bf16\""])
        .args(["--set", "train.steps=2", "--set", "eval.limit=1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let run = common::the_run_in(dir.path());
    // The base is made in bf16: the tiny shape's 0.8 M parameters at 2 bytes.
    let events = meft::train::read_events(&run).unwrap();
    let base = events
        .iter()
        .find_map(|e| match e {
            meft::event::Event::Ledger(l) => l.device.get(&meft::event::Category::Base).copied(),
            _ => None,
        })
        .unwrap();
    let params = meft::model::shapes::builtin_shape("tiny")
        .unwrap()
        .param_count() as u64;
    assert_eq!(base, 2 * params);

    // Planned as the shape it names.
    let plan = |reference: &str| {
        let out = meft_bin()
            .args(["plan", example, "--gpu-mem", "24GiB", "--json"])
            .args(["--set", &format!("model.reference=\"{reference}\"")])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["plan"]["device_total"].as_u64().unwrap()
    };
    assert_eq!(plan("random:llama-7b"), plan("builtin:llama-7b"));

    // An unknown shape is one line naming the field.
    let out = meft_bin()
        .args(["plan", example, "--set", "model.reference=\"random:gpt-9\""])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("model.reference") && err.contains("random:gpt-9"),
        "{err}"
    );
}

/// A GGUF file with the given metadata and one small embedding tensor.
fn tiny_gguf(path: &Path, arch: &str, tokenizer_model: &str) {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::{GgmlDType, QTensor};
    let tokens = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.into())),
        (
            "tokenizer.ggml.model",
            Value::String(tokenizer_model.into()),
        ),
        ("tokenizer.ggml.tokens", tokens),
        ("llama.embedding_length", Value::U32(4)),
        ("llama.attention.head_count", Value::U32(1)),
        ("llama.feed_forward_length", Value::U32(8)),
        ("llama.block_count", Value::U32(0)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let embd =
        candle_core::Tensor::zeros((2, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    let q = QTensor::quantize(&embd, GgmlDType::F32).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &[("token_embd.weight", &q)])
        .unwrap();
}

#[test]
fn gguf_of_an_unknown_architecture_or_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("arch.gguf");
    tiny_gguf(&f, "gpt9", "gpt2");
    assert_one_line_error(
        f.to_str().unwrap(),
        "arch.gguf",
        "general.architecture \"gpt9\" is not supported",
    );
    let f = dir.path().join("tok.gguf");
    tiny_gguf(&f, "llama", "rwkv");
    assert_one_line_error(
        f.to_str().unwrap(),
        "tok.gguf",
        "tokenizer.ggml.model \"rwkv\" is not supported",
    );
}

#[test]
fn config_of_an_unknown_family_or_rope_scaling_or_without_a_bias() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = good_config();
    c["model_type"] = "falcon".into();
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    assert_one_line_error(
        dir.path().to_str().unwrap(),
        "config.json",
        "model_type \"falcon\"",
    );
    let mut c = good_config();
    c["rope_scaling"] = serde_json::json!({"rope_type": "longrope", "factor": 2.0});
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    assert_one_line_error(
        dir.path().to_str().unwrap(),
        "config.json",
        "rope_scaling type \"longrope\" is not supported",
    );
}

/// A published config.json of each style, scaled down (2 layers, d 64),
/// with seeded safetensors written here: loaded, planned and trained.
#[test]
fn llama32_and_qwen25_style_directories_load_plan_and_train() {
    let tok = meft::model::Tokenizer::tiny(&[]).unwrap();
    let v = tok.vocab_size();
    let llama32 = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
        "eos_token_id": [2], "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
        "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 131072,
        "mlp_bias": false, "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "use_cache": true, "vocab_size": v
    });
    let qwen25 = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 64,
        "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 32768,
        "max_window_layers": 21, "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "use_cache": true, "use_sliding_window": false, "vocab_size": v
    });
    for (name, config) in [("llama-3.2", llama32), ("qwen2.5", qwen25)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("config.json");
        std::fs::write(&cfg_path, config.to_string()).unwrap();
        let (shape, _, _) = meft::model::load::parse_hf_config(&cfg_path).unwrap();
        let model = meft::model::load::random_model(&shape, 9, &candle_core::Device::Cpu).unwrap();
        let tensors: std::collections::HashMap<_, _> = model.named_tensors().into_iter().collect();
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
        tiny_tokenizer(dir.path());
        let reference = format!("model.reference=\"hf:{}\"", dir.path().display());
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");
        let out = meft_bin()
            .args(["plan", example, "--set", &reference])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let runs = tempfile::tempdir().unwrap();
        for method in ["meft", "lora", "parallel"] {
            let out = meft_bin()
                .args(["run", example, "--out"])
                .arg(runs.path().join(method))
                .args([
                    "--set",
                    &reference,
                    "--set",
                    &format!("method.kind=\"{method}\""),
                ])
                .args(["--set", "train.steps=5", "--set", "eval.limit=1"])
                .args(["--set", "train.checkpoint_every=0"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name} {method}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let events =
                meft::train::read_events(&common::the_run_in(&runs.path().join(method))).unwrap();
            let steps = events
                .iter()
                .filter(|e| matches!(e, meft::event::Event::Step(_)))
                .count();
            assert_eq!(steps, 5, "{name} {method}");
        }
    }
}
