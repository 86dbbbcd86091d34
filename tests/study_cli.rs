//! `meft study` through the binary: a two-point grid at two seeds on the
//! tiny model, its report checked against the runs' own summaries, and a
//! second run of the same study reusing every run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meft_bin;
use meft::event::Event;
use std::path::Path;

const FACTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/study/facts.toml");

fn study(dir: &Path, study: &Path, out: &Path) -> (i32, String, String) {
    study_with(dir, study, out, &[])
}

fn study_with(dir: &Path, study: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = meft_bin()
        .current_dir(dir)
        .args([
            "study",
            study.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The metrics of a run's `finished` event.
fn summary_metric(run: &Path, metric: &str) -> f64 {
    meft::train::read_events(run)
        .unwrap()
        .into_iter()
        .find_map(|e| match e {
            Event::Finished { summary } => summary.metrics.get(metric).copied(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{}: no finished event with {metric}", run.display()))
}

fn write_study(dir: &Path) -> std::path::PathBuf {
    // Three people, 30 steps: long enough that the runs answer some of
    // the held-out questions, so the figures are not all zero.
    let text = format!(
        r#"
name = "two"
title = "Two points"
seeds = [1, 2]

[[group]]
id = "pair"
title = "MEFT against LoRA"
base = "{FACTS}"
metric = "nq_em"
sets = ["data.train = \"synth:entities=3,seed=7\"", "train.steps = 30", "train.batch = 8",
        "train.micro_batch = 8", "train.lr = 1e-2", "eval.limit = 12"]

[[point]]
group = "pair"
series = "MEFT"
label = "M 256"
sets = ["method.meft.neurons = 256"]

[[point]]
group = "pair"
series = "LoRA"
label = "r 8"
sets = ["method.kind = \"lora\"", "method.lora.rank = 8"]

[[claim]]
text = "MEFT ahead"
group = "pair"
kind = "ahead"
a = "MEFT"
b = "LoRA"
by = 0
"#
    );
    let path = dir.join("two.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `NAME.toml` in `dir`: one seed, one group "a" on the facts preset with
/// `sets` (a TOML array), then `points` as given.
fn one_group(dir: &Path, name: &str, sets: &str, points: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\ntitle = \"{name}\"\nseeds = [1]\n\n[[group]]\nid = \"a\"\ntitle = \"A\"\nbase = \"{FACTS}\"\nmetric = \"nq_em\"\nsets = {sets}\n\n{points}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_two_point_study_reports_its_runs_and_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_study(dir.path());
    let out = dir.path().join("out");
    let (code, stdout, err) = study(dir.path(), &spec, &out);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert_eq!(stdout.matches("(trained in").count(), 4, "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    let points = json["groups"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let mut means = Vec::new();
    for p in points {
        let runs = p["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "one run per seed");
        let mut sum = 0.0;
        for r in runs {
            let run_dir = out.join(r["dir"].as_str().unwrap());
            let from_run = summary_metric(&run_dir, "nq_em");
            assert_eq!(
                r["metric"].as_f64().unwrap(),
                from_run,
                "{}",
                run_dir.display()
            );
            sum += from_run;
        }
        let mean = p["mean"].as_f64().unwrap();
        assert!(
            (mean - sum / 2.0).abs() < 1e-12,
            "mean {mean}, runs sum {sum}"
        );
        // The report's table shows the same mean, to four places.
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", p["series"].as_str().unwrap())))
            .unwrap();
        assert!(row.contains(&format!("| {mean:.4} |")), "{row}");
        means.push(mean);
    }
    assert!(
        means.iter().any(|&m| m > 0.0),
        "no run learned anything: {means:?}"
    );
    // The claim is decided by those two means.
    let claim = &json["claims"][0];
    let holds = means[0] >= means[1];
    assert_eq!(claim["verdict"], if holds { "holds" } else { "fails" });
    for f in ["pair.svg", "pair.png"] {
        assert!(out.join(f).metadata().unwrap().len() > 0, "{f}");
    }

    // Again: every run is reused and the report is the same.
    let (code, stdout, err) = study(dir.path(), &spec, &out);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert_eq!(stdout.matches("(reused)").count(), 4, "{stdout}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(again, json);

    // Dropping the finished runs' checkpoints keeps every run reusable and
    // the report the same.
    let run_dirs: Vec<_> = points
        .iter()
        .flat_map(|p| p["runs"].as_array().unwrap().clone())
        .map(|r| out.join(r["dir"].as_str().unwrap()))
        .collect();
    assert!(run_dirs.iter().all(|d| d.join("checkpoints").is_dir()));
    let (code, stdout, err) = study_with(dir.path(), &spec, &out, &["--drop-checkpoints"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(
        stdout.contains("checkpoints of finished runs removed"),
        "{stdout}"
    );
    assert!(run_dirs.iter().all(|d| !d.join("checkpoints").exists()));
    let (code, stdout, err) = study(dir.path(), &spec, &out);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert_eq!(stdout.matches("(reused)").count(), 4, "{stdout}");
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(after, json);
}

#[test]
fn a_study_naming_an_unknown_group_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let spec = one_group(
        dir.path(),
        "bad",
        "[]",
        "[[point]]\ngroup = \"a\"\nseries = \"MEFT\"\nlabel = \"x\"\n\n[[point]]\ngroup = \"b\"\nseries = \"MEFT\"\nlabel = \"y\"\n",
    );
    let (code, stdout, err) = study(dir.path(), &spec, &dir.path().join("out"));
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(
        line.contains("bad.toml") && line.contains("point MEFT y") && line.contains("\"b\""),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing written");
}

#[test]
fn a_study_whose_data_will_not_load_stops_saying_which_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = one_group(
        dir.path(),
        "nodata",
        "[\"data.train = \\\"absent.jsonl\\\"\"]",
        "[[point]]\ngroup = \"a\"\nseries = \"MEFT\"\nlabel = \"x\"\n",
    );
    let out = dir.path().join("out");
    let (code, _, err) = study(dir.path(), &spec, &out);
    assert_eq!(code, 2, "{err}");
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(
        line.contains("[1/1] a · MEFT x · seed 1") && line.contains("absent.jsonl"),
        "{err}"
    );
    // The refused run left no directory behind.
    let runs: Vec<_> = std::fs::read_dir(out.join("runs"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "{runs:?}");
}

const SMALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/study-small");

/// Copy a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_committed_study_rebuilds_its_report_byte_for_byte() {
    // The runs' packed logs are all a report reads: rebuilt from them, by
    // whatever source tree, the report and its JSON are the committed ones.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    copy_tree(&Path::new(SMALL).join("out"), &out);
    for f in ["report.md", "study.json", "lr.svg", "pair.svg"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let (code, stdout, err) = study_with(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        Path::new(SMALL),
        &out,
        &["--report-only"],
    );
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(!stdout.contains("trained"), "{stdout}");
    for f in ["report.md", "study.json", "lr.svg", "pair.svg"] {
        let want = std::fs::read_to_string(Path::new(SMALL).join("out").join(f)).unwrap();
        let got = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(
            got == want,
            "{f} differs from the committed one; if what a run records changed, regenerate the fixture as tests/fixtures/study-small/study.toml says"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("95 % interval ["), "{report}");
    assert!(
        report.contains("Learning rates chosen on validation"),
        "{report}"
    );
}

#[test]
fn rates_are_chosen_on_validation_and_other_trees_runs_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, err) = study_with(root, Path::new(SMALL), &out, &["--quick"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    // Three selection runs in the quick grid, then the two final points.
    assert_eq!(stdout.matches("(trained in").count(), 5, "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    let choices = json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{json}");
    // Selection runs decode the validation rows once and no test question;
    // final runs train at the chosen rate and are scored on the test.
    for g in json["groups"].as_array().unwrap() {
        for p in g["points"].as_array().unwrap() {
            for r in p["runs"].as_array().unwrap() {
                let run = out.join(r["dir"].as_str().unwrap());
                let events = meft::train::read_events(&run).unwrap();
                let evals: Vec<&meft::event::EvalEvent> = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Eval(e) => Some(e),
                        _ => None,
                    })
                    .collect();
                let validation = meft::event::EvalSplit::Validation;
                let (val, test): (Vec<&meft::event::EvalEvent>, Vec<_>) =
                    evals.iter().copied().partition(|e| e.split == validation);
                let select = g["select"].as_bool().unwrap();
                assert_eq!(test.len(), usize::from(!select), "{}", run.display());
                if select {
                    assert_eq!(val.len(), 1, "{}", run.display());
                    assert_eq!(val[0].n, 9);
                } else {
                    assert_eq!(test[0].n, 9, "half of 18 held-out questions");
                    assert_eq!(test[0].row_scores["nq_em"].len(), 9);
                    // The samples shown are the first rows, with their scores.
                    assert_eq!(test[0].sample_scores.len(), 5);
                    for (i, s) in test[0].sample_scores.iter().enumerate() {
                        assert_eq!(s["nq_em"], test[0].row_scores["nq_em"][i]);
                    }
                    let series = p["series"].as_str().unwrap();
                    let chosen = choices
                        .iter()
                        .find(|c| c["from"] == format!("lr/{series}"))
                        .unwrap();
                    assert_eq!(p["lr"], chosen["lr"], "{p}");
                }
            }
        }
    }
    // A finished run that another source tree trained is trained again...
    let pair = json["groups"][1]["points"][0]["runs"][0]["dir"]
        .as_str()
        .unwrap()
        .to_string();
    let log = out.join(&pair).join("events.jsonl");
    let restamp = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap();
        let at = text.find("\"source\":\"").unwrap() + 10;
        let end = at + text[at..].find('"').unwrap();
        std::fs::write(
            log,
            format!("{}0000000000000000{}", &text[..at], &text[end..]),
        )
        .unwrap();
    };
    restamp(&log);
    let (code, stdout, err) = study_with(root, Path::new(SMALL), &out, &["--quick"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert_eq!(stdout.matches("trained again").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("(reused)").count(), 4, "{stdout}");
    // ... or, with --reuse-stale, reused and marked in the report.
    restamp(&log);
    let (code, stdout, err) =
        study_with(root, Path::new(SMALL), &out, &["--quick", "--reuse-stale"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert_eq!(stdout.matches("stale)").count(), 1, "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("1 runs were reused from another source tree under `--reuse-stale`"),
        "{report}"
    );
    assert!(report.contains("(seed 1, stale)"), "{report}");
    assert!(report.contains("`0000000000000000` (1 runs)"), "{report}");
}

#[test]
fn the_committed_study_files_plan() {
    // Every point resolves and validates (the runs are not trained here).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["presets/study/study.toml", "presets/study/smollm2.toml"] {
        let dir = tempfile::tempdir().unwrap();
        let (code, stdout, err) =
            study_with(root, &root.join(file), dir.path(), &["--report-only"]);
        assert_eq!(code, 0, "{file}: {stdout}\n{err}");
        let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(report.contains("not run yet"), "{file}: {report}");
    }
}
