//! Helpers shared by the integration tests.
#![allow(dead_code)]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

/// The SmolLM2 GGUF file (`scripts/get-smollm2.sh`, or `MEFT_SMOLLM2=path`).
/// The tests that need it are ignored by default; run with
/// `--include-ignored` without the file, they fail saying how to get it.
pub fn smollm2() -> PathBuf {
    cached_gguf("MEFT_SMOLLM2", "smollm2", "scripts/get-smollm2.sh")
}

/// The Gemma 3 270M GGUF file (`scripts/get-gemma3.sh`, or `MEFT_GEMMA3=path`).
pub fn gemma3() -> PathBuf {
    cached_gguf("MEFT_GEMMA3", "gemma3", "scripts/get-gemma3.sh")
}

fn cached_gguf(var: &str, cache: &str, script: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".cache")
        .join(cache);
    std::fs::read_dir(dir)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        })
        .unwrap_or_else(|| panic!("{cache} GGUF not found: run {script}"))
}

pub const GEMMA_FRANCE: &str =
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n";

pub const CHAT_FRANCE: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

/// Logits of one unpadded row through the frozen base (batch × seq × vocab,
/// or the last position only), as f32 values.
pub fn row_logits(model: &meft::model::Model, ids: &[u32], last_only: bool) -> Vec<f32> {
    values(&row_forward(model, ids, last_only))
}

/// The logits tensor of one unpadded row through the frozen base.
pub fn row_forward(
    model: &meft::model::Model,
    ids: &[u32],
    last_only: bool,
) -> candle_core::Tensor {
    row_forward_with(model, &mut meft::model::NoHooks, ids, last_only)
}

/// [`row_forward`] with `hooks` on every layer (an adapter).
pub fn row_forward_with(
    model: &meft::model::Model,
    hooks: &mut dyn meft::model::Hooks,
    ids: &[u32],
    last_only: bool,
) -> candle_core::Tensor {
    let mask = vec![1u8; ids.len()];
    let input = meft::model::Input {
        ids,
        pad_mask: &mask,
        batch: 1,
        seq: ids.len(),
    };
    model.forward(&input, None, hooks, last_only).unwrap()
}

/// A tensor's values, row-major, as f32.
pub fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

pub fn meft_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_meft"))
}

/// The binary run with `args`: its exit code, stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = meft_bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one run directory `meft run --out DIR` made in `root`, which holds
/// nothing else.
pub fn the_run_in(root: &std::path::Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].is_dir(), "{entries:?}");
    entries[0].clone()
}

/// A small training experiment of method `kind` on the embedded tiny model.
pub fn tiny(kind: &str, steps: usize) -> meft::config::Experiment {
    let mut e = meft::config::Experiment {
        name: format!("test-{kind}"),
        ..Default::default()
    };
    e.model.reference = "embedded:tiny-random".into();
    e.data.train = "synth:entities=30,seed=5".into();
    e.method.kind = kind.parse().unwrap();
    e.method.meft.neurons = 1024;
    e.method.meft.top_k = 16;
    e.method.meft.probe = 4;
    e.method.parallel.size = 1024;
    e.train.steps = steps;
    e.train.batch = 8;
    e.train.micro_batch = 8;
    e.train.lr = 1e-2;
    e.train.cutoff_len = 48;
    e.train.checkpoint_every = 0;
    e.eval.limit = 4;
    e.eval.max_new_tokens = 4;
    e
}

/// A trainer for `exp` writing into `dir`, with its event stream.
pub fn trainer(
    exp: &meft::config::Experiment,
    dir: &std::path::Path,
) -> (
    meft::train::trainer::Trainer,
    std::sync::mpsc::Receiver<meft::event::Event>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (_ctl, ctl_rx) = std::sync::mpsc::channel();
    let loaded = meft::train::load_base(exp).unwrap();
    let t = meft::train::trainer::Trainer::new(exp.clone(), loaded, dir, tx, ctl_rx).unwrap();
    (t, rx)
}

/// Every event a started run sends, in order, once its thread is done.
pub fn all_events(mut h: meft::train::RunHandle) -> Vec<meft::event::Event> {
    let events = h.events.iter().collect();
    if let Some(t) = h.thread.take() {
        t.join().unwrap();
    }
    events
}

/// A finished tiny run of `kind` (12 steps, checkpoints at 6 and 12) in `root`.
pub fn tiny_run(root: &std::path::Path, kind: &str) -> PathBuf {
    let out = root.join(format!("runs-{kind}"));
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/nq.toml");
    let (code, _, err) = run(&[
        "run",
        preset,
        "--set",
        &format!("method.kind=\"{kind}\""),
        "--set",
        "train.steps=12",
        "--set",
        "train.checkpoint_every=6",
        "--set",
        "eval.limit=1",
        "--set",
        "method.lora.targets=[\"q_proj\", \"v_proj\", \"down_proj\"]",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    the_run_in(&out)
}
