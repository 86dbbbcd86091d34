//! The planner's memory model against the allocator: every method trains a
//! few steps of the tiny model in a process of its own, and what the heap
//! gained during a step (measured by the counting allocator) matches the
//! ledger's categories that come and go with a step (the planner's
//! formulas at that step's shape).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::event::{Event, LedgerEvent};

fn ledgers(run_dir: &std::path::Path) -> Vec<LedgerEvent> {
    let events = meft::train::read_events(run_dir).unwrap();
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Ledger(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// (measured, planned) bytes a step adds on top of what it started with,
/// and what the heap held before the last step beyond what it held before
/// the one ahead of it (what a step leaves behind).
fn step_growth(method: &str, dtype: &str) -> (u64, u64, i64) {
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
    let all = ledgers(&run);
    let l = all.last().cloned().expect("a ledger event");
    let heap = l.heap.expect("the trainer reads the heap every step");
    let before = |i: usize| all[i].heap.as_ref().map_or(0, |h| h.before as i64);
    let left = before(all.len() - 1) - before(all.len() - 2);
    use meft::event::Category::*;
    let planned = [Activations, AdapterActivations, Rows, Backward, Grads]
        .iter()
        .filter_map(|k| l.device.get(k))
        .sum::<u64>()
        + l.host.get(&Accumulators).copied().unwrap_or(0);
    (heap.peak - heap.before, planned, left)
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
        let (measured, planned, left) = step_growth(method, dtype);
        let ratio = measured as f64 / planned as f64;
        eprintln!("{method} {dtype}: measured {measured} B, planned {planned} B, ratio {ratio:.3}, left behind {left} B");
        // A step frees what it allocated: the heap before step 3 is the
        // heap before step 2, give or take small bookkeeping.
        assert!(
            left.abs() <= 1 << 20,
            "{method} {dtype}: step 2 left {left} B on the heap for good"
        );
        assert!(
            (ratio - 1.0).abs() <= tolerance,
            "{method} {dtype}: a step added {measured} B to the heap; the plan says {planned} B"
        );
    }
}
