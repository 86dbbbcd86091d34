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

/// What the last step of a 3-step run did to the heap.
struct Growth {
    /// Bytes the step added on top of what it started with (the
    /// allocator's peak), and the planner's figure for them.
    measured: u64,
    planned: u64,
    /// What the heap held before the last step beyond what it held before
    /// the one ahead of it (what a step leaves behind).
    left: i64,
    /// The rows themselves: on the device (the ledger's rows, at the run's
    /// measured unions) and their gradients' accumulators on the host.
    rows: u64,
}

/// A 3-step run of `presets/example.toml` with `method.kind = method`,
/// `model.dtype = dtype` and further `--set`s.
fn step_growth(method: &str, dtype: &str, sets: &[&str]) -> Growth {
    let dir = tempfile::tempdir().unwrap();
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");
    let out = common::meft_bin()
        .args(["run", preset, "--out"])
        .arg(dir.path())
        .args(["--set", &format!("method.kind=\"{method}\"")])
        .args(["--set", &format!("model.dtype=\"{dtype}\"")])
        .args(["--set", "train.steps=3", "--set", "eval.limit=1"])
        .args(sets.iter().flat_map(|s| ["--set", s]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = common::the_run_in(dir.path());
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
    let rows =
        l.device.get(&Rows).copied().unwrap_or(0) + l.host.get(&Accumulators).copied().unwrap_or(0);
    Growth {
        measured: heap.peak - heap.before,
        planned,
        left,
        rows,
    }
}

#[test]
fn a_step_grows_the_heap_by_what_the_planner_counts() {
    const COMPOSED: &[&str] = &["method.meft.kernel=\"composed\""];
    const COMPOSED_BF16: &[&str] = &[
        "method.meft.kernel=\"composed\"",
        "method.meft.row_dtype=\"bf16\"",
    ];
    for (method, dtype, sets, tolerance) in [
        ("meft", "f32", &[][..], 0.10),
        ("lora", "f32", &[], 0.10),
        ("parallel", "f32", &[], 0.10),
        ("full", "f32", &[], 0.10),
        ("meft", "bf16", &[], 0.15),
        ("lora", "bf16", &[], 0.15),
        // The GPU path's kernel, run on the CPU.
        ("meft", "f32", COMPOSED, 0.10),
        ("meft", "f32", COMPOSED_BF16, 0.10),
    ] {
        let Growth {
            measured,
            planned,
            left,
            ..
        } = step_growth(method, dtype, sets);
        let ratio = measured as f64 / planned as f64;
        eprintln!("{method} {dtype} {sets:?}: measured {measured} B, planned {planned} B, ratio {ratio:.3}, left behind {left} B");
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

#[test]
fn the_composed_path_holds_one_layers_row_gradients_at_a_time() {
    // What a step adds beyond the rows themselves (on the device, and their
    // gradients' accumulators on the host), with the adapter in one layer
    // and in all four: were every layer's row gradients (and the N × |U|
    // scores) kept until the backward pass ends, four layers would add
    // well over twice what one does.
    for sets in [
        &["method.meft.kernel=\"composed\""][..],
        &[
            "method.meft.kernel=\"composed\"",
            "method.meft.row_dtype=\"bf16\"",
        ],
    ] {
        let beyond = |layers: &str| {
            let mut all = sets.to_vec();
            all.push(layers);
            let g = step_growth("meft", "f32", &all);
            eprintln!(
                "{sets:?} {layers}: step added {} B, rows {} B",
                g.measured, g.rows
            );
            g.measured.saturating_sub(g.rows)
        };
        let one = beyond("method.meft.layers=[0]");
        let four = beyond("method.meft.layers=\"all\"");
        let ratio = four as f64 / one as f64;
        eprintln!("{sets:?}: beyond the rows, 1 layer {one} B, 4 layers {four} B ({ratio:.2}×)");
        assert!(
            ratio < 1.3,
            "{sets:?}: 4 layers add {four} B beyond their rows, 1 layer {one} B"
        );
    }
}
