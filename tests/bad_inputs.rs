//! Bad input at every entry point of the binary: each case exits 2 with one
//! line that names the file, field or line at fault — never a panic, never a
//! backtrace.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meft_bin;
use std::path::Path;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");

/// Files the cases below point at, written into `dir`.
fn fixtures(dir: &Path) {
    let w = |name: &str, text: &[u8]| std::fs::write(dir.join(name), text).unwrap();
    w("not-toml.toml", b"name = \n[model\n");
    w("unknown.toml", b"[model]\nreferenc = \"embedded:tiny\"\n");
    w("wrong-type.toml", b"[train]\nsteps = \"many\"\n");
    w("empty.toml", b"");
    w("binary.toml", &[0xff, 0xfe, 0x00, 0x01]);
    w(
        "bad.jsonl",
        b"{\"question\": \"q\", \"answer\": [\"a\"]}\n{\"question\": 3}\n",
    );
    w("not-json.jsonl", b"this is not json\n");
    w("squad-bad.json", b"{\"data\": [{\"title\": \"t\"}]}");
    w("gsm8k-bad.jsonl", b"{\"question\": \"q\"}\n");
    w("tool-bad.json", b"[{\"query\": 1}]");
    w("meta-bad.json", b"{\"query\": \"q\"}");
    w("preds.jsonl", b"{\"id\": \"0\", \"prediction\": \"x\"}\n");
    w("preds-bad.jsonl", b"{\"nope\": 1}\n");
    w("model.gguf", b"NOTAGGUFFILE0000");
    w(
        "events-bad.jsonl",
        b"{\"type\": \"step\", \"step\": \"one\"}\n",
    );
    w("events-empty.jsonl", b"");
    // A run directory whose events do not parse, and one with no events.
    std::fs::create_dir_all(dir.join("run-bad")).unwrap();
    w("run-bad/events.jsonl", b"{\"type\":\"nonsense\"}\n");
    std::fs::copy(EXAMPLE, dir.join("run-bad/config.toml")).unwrap();
    std::fs::create_dir_all(dir.join("run-empty")).unwrap();
    // A Hugging Face directory with a broken config and one with no weights.
    std::fs::create_dir_all(dir.join("hf-bad")).unwrap();
    w("hf-bad/config.json", b"{\"model_type\": \"llama\"}");
    std::fs::create_dir_all(dir.join("hf-noweights")).unwrap();
    w(
        "hf-noweights/config.json",
        br#"{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#,
    );
}

#[test]
fn every_entry_point_rejects_bad_input_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fixtures(dir);
    let d = dir.display().to_string();
    let p = |name: &str| format!("{d}/{name}");
    let set = |kv: &str| {
        vec![
            "run".to_string(),
            EXAMPLE.into(),
            "--set".into(),
            kv.into(),
            "--out".into(),
            p("runs"),
        ]
    };
    let plan_set = |kv: &str| {
        vec![
            "plan".to_string(),
            EXAMPLE.into(),
            "--set".into(),
            kv.into(),
        ]
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Config files.
        (args(&["run", &p("missing.toml")]), "missing.toml"),
        (args(&["run", &p("not-toml.toml")]), "not-toml.toml"),
        (args(&["run", &p("unknown.toml")]), "referenc"),
        (args(&["run", &p("wrong-type.toml")]), "wrong-type.toml"),
        (args(&["run", &p("binary.toml")]), "binary.toml"),
        (args(&["plan", &p("missing.toml")]), "missing.toml"),
        (args(&["plan", &p("not-toml.toml")]), "not-toml.toml"),
        (args(&["plan", &p("unknown.toml")]), "referenc"),
        (
            args(&["tui", "--preset", &p("not-toml.toml")]),
            "not-toml.toml",
        ),
        (
            args(&["tui", "--preset", &p("missing.toml")]),
            "missing.toml",
        ),
        // Fields, through --set.
        (set("method.meft.top_k=0"), "method.meft.top_k"),
        (set("method.meft.top_k=100000"), "method.meft.top_k"),
        (set("method.meft.neurons=0"), "method.meft.neurons"),
        (set("method.meft.experts=7"), "method.meft.experts"),
        (set("method.meft.probe=0"), "method.meft.probe"),
        (set("method.meft.probe=100000"), "method.meft.probe"),
        (
            set("method.meft.expert_factor=0"),
            "method.meft.expert_factor",
        ),
        (set("method.meft.routing=\"random\""), "method.meft.routing"),
        (
            set("method.meft.host_optimizer=\"sgd\""),
            "method.meft.host_optimizer",
        ),
        (set("method.meft.moments=\"fp8\""), "method.meft.moments"),
        (set("method.meft.layers=[99]"), "method.meft.layers"),
        (set("method.meft.layers=[1, 1]"), "method.meft.layers"),
        (set("method.meft.layers=\"some\""), "method.meft.layers"),
        (
            set("method.meft.pre_retrieval=4"),
            "method.meft.pre_retrieval",
        ),
        (
            set("method.meft.pre_retrieval=-1"),
            "method.meft.pre_retrieval",
        ),
        (
            set("method.meft.async_host_optim=2"),
            "method.meft.async_host_optim",
        ),
        (set("method.meft.kernel=\"fast\""), "method.meft.kernel"),
        (set("method.meft.row_dtype=\"f8\""), "method.meft.row_dtype"),
        (
            args(&[
                "plan",
                EXAMPLE,
                "--set",
                "model.device=\"cuda:0\"",
                "--set",
                "method.meft.kernel=\"fused\"",
            ]),
            "method.meft.kernel",
        ),
        (set("method.kind=\"prefix\""), "method.kind"),
        (set("method.parallel.size=0"), "method.parallel.size"),
        (set("method.lora.rank=0"), "method.lora.rank"),
        (set("method.lora.dropout=1.5"), "method.lora.dropout"),
        (
            set("method.lora.targets=[\"x_proj\"]"),
            "method.lora.targets",
        ),
        (set("method.lora.targets=[]"), "method.lora.targets"),
        (set("model.dtype=\"int4\""), "model.dtype"),
        (set("model.device=\"tpu\""), "model.device"),
        (set("model.device=\"cuda:x\""), "model.device"),
        (set("model.reference=\"nowhere:thing\""), "model.reference"),
        (
            set(&format!("model.reference=\"gguf:{}\"", p("model.gguf"))),
            "model.gguf",
        ),
        (
            set(&format!("model.reference=\"gguf:{}\"", p("none.gguf"))),
            "none.gguf",
        ),
        (
            set(&format!("model.reference=\"hf:{}\"", p("hf-bad"))),
            "hidden_size",
        ),
        (
            set(&format!("model.reference=\"hf:{}\"", p("hf-noweights"))),
            "hf-noweights",
        ),
        (
            args(&[
                "run",
                EXAMPLE,
                "--set",
                "model.dtype=\"bf16\"",
                "--set",
                "method.kind=\"full\"",
                "--out",
                &p("runs"),
            ]),
            "model.dtype",
        ),
        (set("train.lr=-1"), "train.lr"),
        (set("train.lr=0"), "train.lr"),
        (set("train.warmup_ratio=2"), "train.warmup_ratio"),
        (set("train.batch=0"), "train.batch"),
        (set("train.micro_batch=3"), "train.micro_batch"),
        (set("train.micro_batch=0"), "train.micro_batch"),
        (set("train.cutoff_len=2"), "train.cutoff_len"),
        (set("train.clip=-1"), "train.clip"),
        (set("train.weight_decay=-0.1"), "train.weight_decay"),
        (set("train.weight_decay=\"lots\""), "train.weight_decay"),
        (set("train.schedule=\"cosine\""), "train.schedule"),
        (set("train.steps=\"abc\""), "train.steps"),
        (set("train.nonsense=1"), "nonsense"),
        (set("train.steps"), "train.steps"),
        (set("eval.beams=0"), "eval.beams"),
        (set("eval.metrics=[\"bogus\"]"), "eval.metrics"),
        (set("eval.metrics=[\"tool_iou\"]"), "eval.metrics"),
        (set("eval.decoding=\"sample\""), "eval.decoding"),
        (set("eval.repetition_penalty=0"), "eval.repetition_penalty"),
        (set("data.task=\"mmlu\""), "data.task"),
        (set("data.template=\"chatml2\""), "data.template"),
        (set("data.template=\"model\""), "data.template"),
        (set("data.train=\"synth:entities=abc\""), "data.train"),
        (set("data.train=\"synth:colour=3\""), "data.train"),
        (
            set(&format!("data.train={:?}", p("bad.jsonl"))),
            "bad.jsonl:2",
        ),
        (
            set(&format!("data.train={:?}", p("not-json.jsonl"))),
            "not-json.jsonl:1",
        ),
        (
            set(&format!("data.train={:?}", p("absent.jsonl"))),
            "absent.jsonl",
        ),
        (plan_set("method.meft.top_k=0"), "method.meft.top_k"),
        (
            plan_set("model.reference=\"builtin:gpt-9\""),
            "model.reference",
        ),
        (args(&["plan", EXAMPLE, "--gpu-mem", "lots"]), "--gpu-mem"),
        (args(&["plan", EXAMPLE, "--union", "2"]), "--union"),
        // Resume, eval, replay, screenshot: run directories.
        (args(&["run", "--resume", &p("run-empty")]), "run-empty"),
        (args(&["run", "--resume", &p("nowhere")]), "nowhere"),
        (args(&["eval", &p("run-empty")]), "run-empty"),
        (args(&["eval", &p("run-bad")]), "run-bad"),
        (args(&["replay", &p("run-bad")]), "events.jsonl:1"),
        (args(&["replay", &p("run-empty")]), "run-empty"),
        (
            args(&["replay", &p("events-bad.jsonl")]),
            "events-bad.jsonl:1",
        ),
        (
            args(&["screenshot", &p("run-bad"), "--out", &p("shot.png")]),
            "events.jsonl:1",
        ),
        (
            args(&["screenshot", &p("run-empty"), "--out", &p("shot.png")]),
            "run-empty",
        ),
        (
            args(&["screenshot", &p("run-bad"), "--out", &p("shot.bmp")]),
            "shot.bmp",
        ),
        (
            args(&[
                "screenshot",
                &p("run-bad"),
                "--out",
                &p("shot.png"),
                "--size",
                "tiny",
            ]),
            "--size",
        ),
        // Data commands.
        (
            args(&["data", "check", "--format", "nq", &p("bad.jsonl")]),
            "bad.jsonl:2",
        ),
        (
            args(&["data", "check", "--format", "squad", &p("squad-bad.json")]),
            "squad-bad.json",
        ),
        (
            args(&["data", "check", "--format", "gsm8k", &p("gsm8k-bad.jsonl")]),
            "gsm8k-bad.jsonl:1",
        ),
        (
            args(&[
                "data",
                "check",
                "--format",
                "toolbench",
                &p("tool-bad.json"),
            ]),
            "tool-bad.json",
        ),
        (
            args(&["data", "check", "--format", "metamath", &p("meta-bad.json")]),
            "meta-bad.json",
        ),
        (
            args(&["data", "check", "--format", "nq", &p("absent.jsonl")]),
            "absent.jsonl",
        ),
        (
            args(&[
                "score",
                "--format",
                "nq",
                "--gold",
                &p("bad.jsonl"),
                "--pred",
                &p("preds.jsonl"),
            ]),
            "bad.jsonl:2",
        ),
        (
            args(&[
                "score",
                "--format",
                "nq",
                "--gold",
                &p("absent.jsonl"),
                "--pred",
                &p("preds.jsonl"),
            ]),
            "absent.jsonl",
        ),
        // Models.
        (
            args(&[
                "generate",
                "--model",
                &format!("gguf:{}", p("model.gguf")),
                "--prompt",
                "x",
            ]),
            "model.gguf",
        ),
        (
            args(&[
                "generate",
                "--model",
                &format!("hf:{}", p("hf-bad")),
                "--prompt",
                "x",
            ]),
            "hidden_size",
        ),
        (
            args(&["generate", "--model", "nowhere:thing", "--prompt", "x"]),
            "nowhere",
        ),
    ];
    let mut cases = cases;
    if !cfg!(feature = "cuda") {
        cases.push((set("model.device=\"cuda:0\""), "--features cuda"));
    }
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (argv, needle) in &cases {
        let out = meft_bin()
            .args(argv)
            .env("MEFT_CACHE", dir.join(".cache"))
            .env("RUST_BACKTRACE", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let one_line = err.lines().count() == 1;
        let named = err.contains(needle);
        let panicked = err.contains("panicked") || err.contains("stack backtrace");
        if code != Some(2) || !one_line || !named || panicked {
            failures.push(format!(
                "{argv:?}: exit {code:?}, stderr {err:?} (wanted {needle:?})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // A run refused for its settings, its data or its model leaves no
    // run directory behind.
    let left: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "failed starts left run directories: {left:?}"
    );
}
