//! `meft run` and `meft plan` through the binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");

#[test]
fn impossible_values_name_the_field() {
    for (set, field) in [
        ("method.meft.top_k=5000", "method.meft.top_k"),
        ("method.meft.experts=300", "method.meft.experts"),
        ("train.lr=-0.1", "train.lr"),
        ("method.kind=\"prefix\"", "method.kind"),
        ("train.micro_batch=5", "train.micro_batch"),
        ("model.dtype=\"int4\"", "model.dtype"),
        ("method.meft.moments=\"q4\"", "method.meft.moments"),
    ] {
        let (code, _, err) = run(&[
            "run",
            EXAMPLE,
            "--set",
            set,
            "--out",
            "/nonexistent-never-created",
        ]);
        assert_eq!(code, 2, "{set}: {err}");
        assert_eq!(err.lines().count(), 1, "{set}: {err}");
        assert!(err.contains(field), "{set}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[train]\nlr = \"fast\"\n").unwrap();
    let (code, _, err) = run(&["run", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml") && err.contains("lr"), "{err}");
}

#[test]
fn example_config_runs_headless() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&[
        "run",
        EXAMPLE,
        "--set",
        "train.steps=3",
        "--set",
        "eval.limit=2",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "steps",
        "loss (first → final)",
        "tokens/s",
        "host→device / step",
        "device→host / step",
        "peak device ledger",
        "nq_em",
    ] {
        assert!(out.contains(line), "{line:?} missing from {out}");
    }
    let runs: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1);
    let run_dir = runs[0].path();
    for f in ["config.toml", "events.jsonl", "summary.json"] {
        assert!(run_dir.join(f).is_file(), "{f}");
    }
    assert!(run_dir
        .join("checkpoints/step-0000003.safetensors")
        .is_file());
}

#[test]
fn plan_bad_inputs() {
    let (code, _, err) = run(&["plan", EXAMPLE, "--gpu-mem", "24 parsecs"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--gpu-mem") && err.contains("24 parsecs"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "plan",
        EXAMPLE,
        "--set",
        "model.reference=\"builtin:gpt-9\"",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("model.reference"), "{err}");
}

#[test]
fn paper_memory_and_traffic_story() {
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/paper/nq.toml");
    let (code, out, err) = run(&["plan", preset, "--gpu-mem", "24GiB"]);
    assert_eq!(code, 0, "{err}");
    let verdict = out
        .lines()
        .find(|l| l.starts_with("On 24 GiB"))
        .expect(&out);
    eprintln!("{verdict}");
    // On a GPU the rows are f16 like the base and each layer's row
    // gradients leave the device as its backward makes them: the paper's
    // setting fits even with every row in flight, in under half the dense
    // adapter's need.
    assert!(
        verdict.contains("MEFT needs 20.2 GiB at worst-case unions (fits)"),
        "{verdict}"
    );
    assert!(
        verdict.contains("18.3 GiB at the paper's union (fits)"),
        "{verdict}"
    );
    assert!(
        verdict.contains("the dense adapter needs 48.8 GiB (does not fit)"),
        "{verdict}"
    );

    let traffic = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/paper/traffic.toml");
    let (code, out, err) = run(&["plan", traffic]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("At the paper's measured union"))
        .expect(&out);
    eprintln!("{line}");
    assert!(line.contains("× a dense offload of 12 GiB"), "{line}");
}

#[test]
fn every_preset_plans() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
    let mut n = 0;
    for dir in [root.clone(), root.join("paper")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let (code, _, err) = run(&["plan", p.to_str().unwrap()]);
                assert_eq!(code, 0, "{}: {err}", p.display());
                n += 1;
            }
        }
    }
    assert!(n >= 10, "{n} presets");
}

#[test]
fn bench_times_a_configs_own_steps_through_the_trainer() {
    let (code, out, err) = run(&[
        "bench",
        "--config",
        EXAMPLE,
        "--steps",
        "3",
        "--set",
        "method.meft.neurons=256",
        "--set",
        "train.micro_batch=4",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("meft · 3 of 100 steps"), "{out}");
    assert!(out.contains("median step"), "{out}");
    assert!(
        out.contains("as `meft run` reports its median step"),
        "{out}"
    );
    // An impossible setting is refused as `meft run` refuses it.
    let (code, _, err) = run(&["bench", "--config", EXAMPLE, "--set", "train.micro_batch=5"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("train.micro_batch"), "{err}");
}
