//! The planner's memory model against the allocator: every method trains a
//! few steps of the tiny model in a process of its own, and what the heap
//! gained during a step (measured by the counting allocator) matches the
//! ledger's categories that come and go with a step (the planner's
//! formulas at that step's shape).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::event::{Event, LedgerEvent};

fn last_ledger(run_dir: &std::path::Path) -> LedgerEvent {
    let events = meft::train::read_events(run_dir).unwrap();
    events
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::Ledger(l) => Some(l),
            _ => None,
        })
        .expect("a ledger event")
}

/// (measured, planned) bytes a step adds on top of what it started with.
fn step_growth(method: &str, dtype: &str) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");
    let out = common::meft_bin()
        .args(["run", preset, "--out"])
        .arg(dir.path())
        .args(["--set", &format!("method.kind=\"{method}\"")])
        .args(["--set", &format!("model.dtype=\"{dtype}\"")])
        .args(["--set", "train.steps=3", "--set", "eval.limit=1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    let l = last_ledger(&run);
    let heap = l.heap.expect("the trainer reads the heap every step");
    use meft::event::Category::*;
    let planned = [Activations, AdapterActivations, Rows, Backward, Grads]
        .iter()
        .filter_map(|k| l.device.get(k))
        .sum::<u64>()
        + l.host.get(&Accumulators).copied().unwrap_or(0);
    (heap.peak - heap.before, planned)
}

#[test]
fn a_step_grows_the_heap_by_what_the_planner_counts() {
    for (method, dtype, tolerance) in [
        ("meft", "f32", 0.10),
        ("lora", "f32", 0.10),
        ("parallel", "f32", 0.10),
        ("full", "f32", 0.10),
        ("meft", "bf16", 0.15),
        ("lora", "bf16", 0.15),
    ] {
        let (measured, planned) = step_growth(method, dtype);
        let ratio = measured as f64 / planned as f64;
        eprintln!("{method} {dtype}: measured {measured} B, planned {planned} B, ratio {ratio:.3}");
        assert!(
            (ratio - 1.0).abs() <= tolerance,
            "{method} {dtype}: a step added {measured} B to the heap; the plan says {planned} B"
        );
    }
}
