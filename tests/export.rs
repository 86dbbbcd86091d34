//! `meft export` on tiny runs: PEFT's names, shapes and config for LoRA; the
//! merged Hugging Face directory gives the logits of the base with the
//! adapter on; MEFT's adapter export keeps its weights and drops its
//! optimizer state; what cannot be written is refused in one line.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;
use meft::model::ModelRef;
use std::path::Path;

fn logits(model: &meft::model::Model, hooks: &mut dyn meft::model::Hooks, ids: &[u32]) -> Vec<f32> {
    common::values(&common::row_forward_with(model, hooks, ids, false))
}

fn safetensors_header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.remove("__metadata__");
    h
}

#[test]
fn lora_exports_as_peft_and_merged() {
    let root = tempfile::tempdir().unwrap();
    let dir = common::tiny_run(root.path(), "lora");
    let d = dir.display().to_string();

    let peft = root.path().join("peft");
    let (code, said, err) = run(&[
        "export",
        &d,
        "--format",
        "peft",
        "--out",
        &peft.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("peft export of step 12"), "{said}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 8);
    assert_eq!(config["lora_alpha"], 16.0);
    assert_eq!(config["lora_dropout"], 0.05);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    assert_eq!(config["base_model_name_or_path"], "embedded:tiny");
    // The tiny base: d 128, 4 query heads and 2 KV heads of 32, FFN 352,
    // 4 layers; A is [r, in], B is [out, r].
    let h = safetensors_header(&peft.join("adapter_model.safetensors"));
    assert_eq!(h.len(), 4 * 3 * 2);
    let shape = |k: &str| h[k]["shape"].clone();
    let l = "base_model.model.model.layers";
    assert_eq!(
        shape(&format!("{l}.0.self_attn.q_proj.lora_A.weight")),
        serde_json::json!([8, 128])
    );
    assert_eq!(
        shape(&format!("{l}.0.self_attn.q_proj.lora_B.weight")),
        serde_json::json!([128, 8])
    );
    assert_eq!(
        shape(&format!("{l}.3.self_attn.v_proj.lora_B.weight")),
        serde_json::json!([64, 8])
    );
    assert_eq!(
        shape(&format!("{l}.2.mlp.down_proj.lora_A.weight")),
        serde_json::json!([8, 352])
    );
    assert_eq!(
        h[&format!("{l}.1.mlp.down_proj.lora_B.weight")]["dtype"],
        "F32"
    );

    // Merged: the base with W + (α/r)·B·A folded in gives the logits of the
    // base with the adapter hooked on, at every position.
    let merged = root.path().join("merged");
    let (code, _, err) = run(&[
        "export",
        &d,
        "--format",
        "merged",
        "--out",
        &merged.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut r = meft::train::export::restore_run(&dir, None, &[]).unwrap();
    let folded =
        meft::model::load_model(&ModelRef::Hf(merged.clone()), &meft::model::Device::Cpu).unwrap();
    let ids = r
        .tokenizer
        .encode_prompt("Q: where was Tova Renn born\nA:")
        .unwrap();
    let want = logits(&r.model, &mut r.method, &ids);
    let got = logits(&folded.model, &mut meft::model::NoHooks, &ids);
    let base = logits(&r.model, &mut meft::model::NoHooks, &ids);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        max_diff(&want, &got) < 1e-4,
        "merged vs adapter: {}",
        max_diff(&want, &got)
    );
    assert!(max_diff(&want, &base) > 1e-3, "the adapter changed nothing");
    // As GGUF: read back by meft within each format's rounding of the
    // weights (relative to the largest logit), with llama.cpp's keys.
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (dtype, file, within) in [
        ("f16", "model-f16.gguf", 1e-3),
        ("q8_0", "model-q8_0.gguf", 1e-2),
    ] {
        let out = root.path().join(format!("gguf-{dtype}"));
        let (code, said, err) = run(&[
            "export",
            &d,
            "--format",
            "gguf",
            "--gguf-dtype",
            dtype,
            "--out",
            &out.display().to_string(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(said.contains(file), "{said}");
        let path = out.join(file);
        let loaded =
            meft::model::load_model(&ModelRef::Gguf(path.clone()), &meft::model::Device::Cpu)
                .unwrap();
        let got = logits(&loaded.model, &mut meft::model::NoHooks, &ids);
        let rel = max_diff(&want, &got) / scale;
        assert!(rel < within, "{dtype}: {rel}");
        assert_eq!(
            loaded.tokenizer.encode_prompt("Q: where").unwrap(),
            r.tokenizer.encode_prompt("Q: where").unwrap()
        );
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        let text = |k: &str| ct.metadata[k].to_string().unwrap().clone();
        assert_eq!(text("general.architecture"), "llama");
        assert_eq!(text("tokenizer.ggml.model"), "gpt2");
        assert_eq!(
            ct.metadata["tokenizer.ggml.tokens"].to_vec().unwrap().len(),
            r.tokenizer.vocab_size()
        );
        let want_type = match dtype {
            "f16" => candle_core::quantized::GgmlDType::F16,
            _ => candle_core::quantized::GgmlDType::Q8_0,
        };
        assert_eq!(ct.tensor_infos["blk.0.attn_q.weight"].ggml_dtype, want_type);
    }
    // Through the command line: the same greedy answer, BOS and all.
    let prompt = "Q: where was Tova Renn born\nA:";
    let answer = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let hf = format!("hf:{}", merged.display());
    assert_eq!(
        answer(&[
            "generate",
            "--run",
            &d,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "8"
        ]),
        answer(&[
            "generate",
            "--model",
            &hf,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "8"
        ])
    );
    // An earlier checkpoint, by its step.
    let (code, said, err) = run(&[
        "export",
        &d,
        "--step",
        "6",
        "--format",
        "peft",
        "--out",
        &root.path().join("peft6").display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("of step 6"), "{said}");
}

#[test]
fn meft_exports_its_adapter_without_optimizer_state_and_refuses_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let dir = common::tiny_run(root.path(), "meft");
    let d = dir.display().to_string();
    let out = root.path().join("adapter");
    let (code, _, err) = run(&[
        "export",
        &d,
        "--format",
        "meft",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let h = safetensors_header(&out.join("adapter.safetensors"));
    let mut names: Vec<&String> = h.keys().collect();
    names.sort();
    let want: Vec<String> = (0..4)
        .flat_map(|l| ["keys", "router", "values"].map(|t| format!("meft.{l}.{t}")))
        .collect();
    assert_eq!(names, want.iter().collect::<Vec<_>>());
    // Byte for byte the checkpoint's weights.
    let ckpt = dir
        .join("checkpoints")
        .join(meft::checkpoint::file_name(12));
    let mut r = meft::checkpoint::CheckpointReader::open(&ckpt).unwrap();
    let mut e = meft::checkpoint::CheckpointReader::open(&out.join("adapter.safetensors")).unwrap();
    let a = r.read_vec::<f32>("meft.2.values", &[None, None]).unwrap();
    let b = e.read_vec::<f32>("meft.2.values", &[None, None]).unwrap();
    assert_eq!(a, b);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter.json")).unwrap()).unwrap();
    assert_eq!(info["method"], "meft");
    assert_eq!(info["step"], 12);
    assert_eq!(info["base"], "embedded:tiny");
    assert_eq!(info["base_fnv1a64"].as_str().unwrap().len(), 16);

    // On its base the exported adapter answers a test question as the run's
    // own evaluation did; the base alone answers otherwise.
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let eval = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|e| e["type"] == "eval")
        .unwrap();
    let (question, predicted) = (
        eval["samples"][0][0].as_str().unwrap(),
        eval["samples"][0][1].as_str().unwrap(),
    );
    let prompt = meft::data::prompt::eval_prompt(meft::config::Template::Plain, question, None);
    let adapter = out.display().to_string();
    let answer = |extra: &[&str]| {
        let mut args = vec!["generate", "--prompt", &prompt, "--max-new-tokens", "16"];
        args.extend(extra);
        let (code, said, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        said.lines().next().unwrap_or_default().trim().to_string()
    };
    let tuned = answer(&["--model", "embedded:tiny", "--adapter", &adapter]);
    assert_eq!(tuned, predicted.trim());
    assert_eq!(answer(&["--adapter", &adapter]), tuned, "the base it names");
    assert_ne!(answer(&["--model", "embedded:tiny"]), tuned);

    let one_line_2 = |args: &[&str], says: &str| {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{says:?} not in {err}");
        assert!(out.is_empty(), "{out}");
    };
    let fresh = |n: &str| root.path().join(n).display().to_string();
    one_line_2(
        &["export", &d, "--format", "merged", "--out", &fresh("m")],
        "cannot be folded into the base",
    );
    one_line_2(
        &["export", &d, "--format", "peft", "--out", &fresh("p")],
        "export it with --format meft",
    );
    one_line_2(
        &["export", &d, "--format", "gguf", "--out", &fresh("g")],
        "cannot be folded into the base",
    );
    one_line_2(
        &[
            "export",
            &d,
            "--step",
            "7",
            "--format",
            "meft",
            "--out",
            &fresh("s"),
        ],
        "has no checkpoint of that step (it has: 6, 12)",
    );
    one_line_2(
        &[
            "export",
            &d,
            "--format",
            "meft",
            "--out",
            &out.display().to_string(),
        ],
        "exists and is not empty",
    );
    let bare = root.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(dir.join("config.toml"), bare.join("config.toml")).unwrap();
    one_line_2(
        &[
            "export",
            &bare.display().to_string(),
            "--format",
            "meft",
            "--out",
            &fresh("b"),
        ],
        "the run has no checkpoint",
    );
    // Nothing was left behind by the refusals.
    for n in ["m", "p", "g", "s", "b"] {
        assert!(!root.path().join(n).exists(), "{n}");
    }
    let stray: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    one_line_2(
        &[
            "generate",
            "--model",
            "embedded:tiny-random",
            "--adapter",
            &adapter,
            "--prompt",
            "x",
        ],
        "hashes to",
    );
    one_line_2(
        &["generate", "--adapter", &fresh("none"), "--prompt", "x"],
        "no such file",
    );
    let alone = root.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(
        out.join("adapter.safetensors"),
        alone.join("adapter.safetensors"),
    )
    .unwrap();
    one_line_2(
        &[
            "chat",
            "--adapter",
            &alone.join("adapter.safetensors").display().to_string(),
        ],
        "no adapter.json beside it",
    );
}
