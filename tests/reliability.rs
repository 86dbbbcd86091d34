//! A run directory survives signals, crashes, divergence, a second writer
//! and resumes that have nothing to do — through the binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{meft_bin, run};
use std::path::{Path, PathBuf};
use std::process::Stdio;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");

/// A small, quick version of the example run.
const QUICK: [&str; 6] = [
    "--set",
    "data.train=\"synth:entities=20,seed=7\"",
    "--set",
    "eval.limit=2",
    "--set",
    "eval.max_new_tokens=4",
];

/// `meft run` on the quick example into `out`, with `--set` for each of `sets`.
fn run_example(out: &str, sets: &[&str]) -> (i32, String, String) {
    let mut args = vec!["run", EXAMPLE, "--out", out];
    args.extend(QUICK);
    for s in sets {
        args.extend(["--set", s]);
    }
    run(&args)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn event_types(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["type"].as_str().unwrap().to_string()
        })
        .collect()
}

fn spawn_run(out: &Path, sets: &[&str]) -> std::process::Child {
    let mut args = vec!["run", EXAMPLE, "--out", out.to_str().unwrap()];
    args.extend(QUICK);
    for s in sets {
        args.extend(["--set", s]);
    }
    meft_bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the run has logged `steps` steps.
fn wait_for_steps(root: &Path, steps: usize) -> PathBuf {
    for _ in 0..600 {
        if let Ok(mut d) = std::fs::read_dir(root) {
            if let Some(Ok(e)) = d.next() {
                let log = e.path().join("events.jsonl");
                let n = std::fs::read_to_string(&log)
                    .map(|t| t.matches("\"type\":\"step\"").count())
                    .unwrap_or(0);
                if n >= steps {
                    return e.path();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the run never reached step {steps}");
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let (code, _, err) = run_example(out.path().to_str().unwrap(), &["train.steps=3"]);
    assert_eq!(code, 0, "{err}");
    let dir = common::the_run_in(out.path());
    let before = snapshot(&dir);
    let (code, stdout, err) = run(&["run", "--resume", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("the run finished at step 3; nothing to resume"),
        "{stdout}"
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn resume_without_a_checkpoint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(EXAMPLE, dir.path().join("config.toml")).unwrap();
    let (code, _, err) = run(&["run", "--resume", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no checkpoint to resume from"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_signal_stops_safely_with_a_checkpoint_and_a_summary() {
    for (signal, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let out = tempfile::tempdir().unwrap();
        let child = spawn_run(out.path(), &["train.steps=100000"]);
        let dir = wait_for_steps(out.path(), 2);
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let done = child.wait_with_output().unwrap();
        assert_eq!(done.status.code(), Some(code));
        let stdout = String::from_utf8_lossy(&done.stdout);
        assert!(
            stdout.contains("resume with `meft run --resume"),
            "{stdout}"
        );
        let types = event_types(&dir);
        let stopped = types
            .iter()
            .position(|t| t == "stopped")
            .expect("a stopped event");
        assert_eq!(types.last().map(String::as_str), Some("finished"));
        assert!(types[..stopped].contains(&"checkpoint".to_string()));
        assert!(dir.join("summary.json").is_file());
        let steps = types.iter().filter(|t| *t == "step").count() as u64;
        let (last, _) = meft::checkpoint::latest(&dir.join("checkpoints")).unwrap();
        assert_eq!(last, steps);
    }
}

#[test]
fn a_second_writer_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let mut first = spawn_run(out.path(), &["train.steps=100000"]);
    let dir = wait_for_steps(out.path(), 1);
    let (code, _, err) = run(&["run", "--resume", dir.to_str().unwrap()]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("another meft process (pid {})", first.id())),
        "{err}"
    );
}

#[test]
fn divergence_stops_at_the_step_and_keeps_a_finite_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let (code, _, err) = run_example(
        out.path().to_str().unwrap(),
        &[
            "method.kind=\"lora\"",
            "train.lr=1e300",
            "train.clip=0",
            "train.checkpoint_every=1",
            "train.steps=10",
        ],
    );
    assert_eq!(code, 1, "{err}");
    // Warm-up makes step 1's update 0; step 2's sends the weights to inf.
    assert!(
        err.contains("step 2: the last update left non-finite parameters"),
        "{err}"
    );
    let dir = common::the_run_in(out.path());
    assert_eq!(
        event_types(&dir).last().map(String::as_str),
        Some("diverged")
    );
    let (step, path) = meft::checkpoint::latest(&dir.join("checkpoints")).unwrap();
    assert_eq!(step, 1);
    let mut r = meft::checkpoint::CheckpointReader::open(&path).unwrap();
    let names: Vec<String> = r.names().map(str::to_string).collect();
    assert!(!names.is_empty());
    for name in names {
        let rank = r.info(&name).unwrap().shape.len();
        let (_, v) = r.read_vec::<f32>(&name, &vec![None; rank]).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}

#[test]
fn a_torn_last_line_is_repaired_on_resume() {
    let out = tempfile::tempdir().unwrap();
    let (code, _, err) = run_example(
        out.path().to_str().unwrap(),
        &["train.steps=2", "train.checkpoint_every=1"],
    );
    assert_eq!(code, 0, "{err}");
    let dir = common::the_run_in(out.path());
    // A crash mid-write: half a line at the end of the log.
    let log = dir.join("events.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"type\":\"step\",\"st");
    std::fs::write(&log, text).unwrap();
    let (code, _, err) = run(&[
        "run",
        "--resume",
        dir.to_str().unwrap(),
        "--set",
        "train.steps=3",
    ]);
    assert_eq!(code, 0, "{err}");
    let types = event_types(&dir);
    assert_eq!(types.iter().filter(|t| *t == "step").count(), 3);
    assert_eq!(types.iter().filter(|t| *t == "run_started").count(), 2);
}

#[test]
fn layer_lists_must_name_distinct_layers() {
    for (layers, what) in [
        ("[]", "name at least one layer"),
        ("[0, 0]", "layer 0 is listed twice"),
    ] {
        let set = format!("method.meft.layers={layers}");
        let (code, _, err) = run(&["plan", EXAMPLE, "--set", &set]);
        assert_eq!(code, 2, "{layers}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("method.meft.layers") && err.contains(what),
            "{err}"
        );
    }
}

fn summary_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_killed_run_resumes_to_the_same_end_and_a_whole_run_summary() {
    let sets = ["train.steps=12", "train.checkpoint_every=2"];
    let whole = tempfile::tempdir().unwrap();
    let (code, _, err) = run_example(whole.path().to_str().unwrap(), &sets);
    assert_eq!(code, 0, "{err}");
    let expected = summary_json(&common::the_run_in(whole.path()));

    let out = tempfile::tempdir().unwrap();
    let mut child = spawn_run(out.path(), &sets);
    let dir = wait_for_steps(out.path(), 7);
    child.kill().unwrap();
    let _ = child.wait();
    let (code, _, err) = run(&["run", "--resume", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let got = summary_json(&dir);
    for key in ["steps", "first_loss", "final_loss", "tokens"] {
        assert_eq!(got[key], expected[key], "{key}");
    }
    // Three checkpoints are kept, the newest.
    let mut kept: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "step-0000008.safetensors",
            "step-0000010.safetensors",
            "step-0000012.safetensors"
        ]
    );
}

/// The terminal hangs up mid-run, before the first checkpoint is due: the
/// run checkpoints where it stopped (exit 129), and resumed it ends exactly
/// where an uninterrupted run ends.
#[cfg(unix)]
#[test]
fn a_hangup_stops_safely_and_resumes_to_the_same_end() {
    let sets = ["train.steps=120", "train.checkpoint_every=1000"];
    let whole = tempfile::tempdir().unwrap();
    let (code, _, err) = run_example(whole.path().to_str().unwrap(), &sets);
    assert_eq!(code, 0, "{err}");
    let expected = summary_json(&common::the_run_in(whole.path()));

    let out = tempfile::tempdir().unwrap();
    let child = spawn_run(out.path(), &sets);
    let dir = wait_for_steps(out.path(), 5);
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(129));
    let types = event_types(&dir);
    let steps = types.iter().filter(|t| *t == "step").count() as u64;
    assert!(steps < 120, "stopped before the end");
    let (last, _) = meft::checkpoint::latest(&dir.join("checkpoints")).unwrap();
    assert_eq!(last, steps);
    assert!(types.contains(&"stopped".to_string()));
    let (code, _, err) = run(&["run", "--resume", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let got = summary_json(&dir);
    for key in ["steps", "first_loss", "final_loss", "tokens"] {
        assert_eq!(got[key], expected[key], "{key}");
    }
}

#[test]
fn records_cut_by_the_cutoff_are_counted_in_a_warning() {
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, err) = run_example(
        out.path().to_str().unwrap(),
        &["train.steps=1", "train.cutoff_len=8"],
    );
    assert_eq!(code, 0, "{err}");
    // Eight byte-level tokens never hold a question and its answer.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("(100.0 %) reach train.cutoff_len = 8"),
        "{line}"
    );
}

#[test]
fn an_adapter_larger_than_memory_is_refused_before_it_is_allocated() {
    for (sets, knob) in [
        (
            [
                "method.meft.neurons=1000000000000",
                "method.meft.experts=1000000",
            ],
            "method.meft.neurons",
        ),
        (
            [
                "method.kind=\"parallel\"",
                "method.parallel.size=100000000000",
            ],
            "method.parallel.size",
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (code, _, err) = run_example(out.path().to_str().unwrap(), &sets);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("meft: {knob}: ")), "{err}");
        assert!(
            err.contains("PiB of memory before the first step") && err.ends_with("is free\n"),
            "{err}"
        );
    }
}

/// A tmpfs of `size` mounted for the life of the value (needs root).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
#[ignore = "needs root to mount a small tmpfs; run with --ignored as root (CI does)"]
fn a_full_disk_stops_the_run_with_one_line_and_no_temporary_files() {
    let Some(disk) = SmallDisk::mount("64k") else {
        panic!("cannot mount a small tmpfs here: this test needs root");
    };
    let root = disk.0.path();
    let (code, _, err) = run_example(
        root.to_str().unwrap(),
        &[
            "method.kind=\"lora\"",
            "train.steps=100000",
            "train.checkpoint_every=0",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let dir = common::the_run_in(root);
    let leftovers: Vec<String> = snapshot(&dir)
        .into_iter()
        .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn resuming_on_changed_data_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("facts.jsonl");
    let synth = work.path().join("synth");
    let (code, _, err) = run(&[
        "data",
        "synth",
        "--task",
        "nq",
        "--entities",
        "10",
        "--seed",
        "3",
        "--out",
        synth.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let train = std::fs::read_dir(&synth)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("train"))
        .unwrap();
    std::fs::copy(&train, &data).unwrap();
    let out = work.path().join("runs");
    let set_data = format!("data.train={:?}", data.to_str().unwrap());
    let (code, _, err) = run(&[
        "run",
        EXAMPLE,
        "--out",
        out.to_str().unwrap(),
        "--set",
        &set_data,
        "--set",
        "train.steps=2",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "eval.limit=1",
    ]);
    assert_eq!(code, 0, "{err}");
    let dir = common::the_run_in(&out);
    // Same size, other content: one letter changed.
    let text = std::fs::read_to_string(&data).unwrap();
    let i = text.find('a').unwrap();
    std::fs::write(&data, format!("{}b{}", &text[..i], &text[i + 1..])).unwrap();
    let (code, _, err) = run(&[
        "run",
        "--resume",
        dir.to_str().unwrap(),
        "--set",
        "train.steps=3",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("data.train: ") && err.contains("is not the file this run started with"),
        "{err}"
    );
}
