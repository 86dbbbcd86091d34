//! `meft runs` and `meft compare` through the binary, on two tiny runs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");

/// Train `name` with `method` for three steps under `root`; its directory.
fn tiny_run(root: &std::path::Path, name: &str, method: &str) -> std::path::PathBuf {
    let (code, _, err) = run(&[
        "run",
        EXAMPLE,
        "--set",
        "train.steps=3",
        "--set",
        "eval.limit=2",
        "--set",
        &format!("name=\"{name}\""),
        "--set",
        &format!("method.kind=\"{method}\""),
        "--out",
        root.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
        })
        .unwrap()
}

#[test]
fn runs_lists_two_runs_and_compare_draws_them() {
    let root = tempfile::tempdir().unwrap();
    let a = tiny_run(root.path(), "alpha", "meft");
    let b = tiny_run(root.path(), "beta", "lora");

    let (code, out, err) = run(&["runs", root.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{out}"))
            .to_string()
    };
    let alpha = row("alpha-");
    assert!(
        alpha.contains("meft") && alpha.contains("M 4096 K 32"),
        "{alpha}"
    );
    assert!(
        alpha.contains(" 3/3 ") && alpha.contains("finished"),
        "{alpha}"
    );
    assert!(alpha.contains("nq_em "), "{alpha}");
    let beta = row("beta-");
    assert!(beta.contains("lora") && beta.contains("r 8"), "{beta}");
    assert!(
        beta.contains(" 3/3 ") && beta.contains("finished"),
        "{beta}"
    );

    let png = root.path().join("loss.png");
    let svg = root.path().join("loss.svg");
    let (code, out, err) = run(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for label in [
        "method",
        "trainable parameters",
        "peak device ledger",
        "host→device / step",
        "median step",
        "final loss",
        "nq_em",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(label)),
            "{label} missing from\n{out}"
        );
    }
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 1000, "{} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let text = std::fs::read_to_string(&svg).unwrap();
    // One line per run, and each named in the legend.
    assert_eq!(text.matches("<polyline").count(), 2);
    assert!(text.contains(">alpha-") && text.contains(">beta-"));

    // A chart format it does not write is refused before anything is read.
    let (code, _, err) = run(&["compare", a.to_str().unwrap(), "--out", "x.jpg"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("x.jpg"), "{err}");
}

#[test]
fn missing_and_broken_runs_are_named() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["runs", root.path().join("nope").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope"), "{err}");

    let broken = root.path().join("broken-1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("events.jsonl"), "not json\n").unwrap();
    let (code, out, err) = run(&["runs", root.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("broken-1") && l.contains("unreadable")),
        "{out}"
    );
    assert!(out.contains("events.jsonl:1"), "{out}");

    let (code, _, err) = run(&["compare", broken.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("events.jsonl:1"), "{err}");
}

#[test]
fn a_set_of_the_wrong_type_names_the_key_and_the_type() {
    let (code, _, err) = run(&["run", EXAMPLE, "--set", "train.steps=abc"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("train.steps") && err.contains("whole number"),
        "{err}"
    );
}
