//! The paper's overlap knobs against none: MEFT's step with the host
//! optimizer behind the next forward pass (`async_host_optim`), with rows
//! selected one layer early (`pre_retrieval = 1`), and with both. Each
//! setting trains steps back to back, so a step's host update runs behind
//! the next step's forward pass as in a run.

use super::step::{train_step, BenchBatch};
use super::{time, Section, Timing};
use crate::config::Experiment;
use crate::model::Model;
use crate::optim::{AdamWConfig, DeviceAdamW};
use crate::train::method::Method;

pub(super) fn section(
    title: String,
    model: &mut Model,
    batch: &BenchBatch,
    neurons: usize,
    top_k: usize,
    reps: usize,
) -> anyhow::Result<Section> {
    let mut s = Section::new(&title);
    let mut exp = Experiment::default();
    exp.method.meft.neurons = neurons;
    exp.method.meft.top_k = top_k;
    // Off first and last, so a drift over the section shows as the two
    // off figures differing; ratios are to the faster of them.
    let settings: [(&str, &str, usize, bool); 5] = [
        ("off", "off", 0, false),
        ("async host optimizer", "async", 0, true),
        ("pre-retrieval 1", "pre1", 1, false),
        ("both", "both", 1, true),
        ("off, again", "off_again", 0, false),
    ];
    // (label, key, no overlap, timing)
    let mut timings: Vec<(&str, &str, bool, Timing)> = Vec::new();
    for (label, key, pre, host) in settings {
        exp.method.meft.pre_retrieval = pre;
        exp.method.meft.async_host_optim = host;
        let (mut method, vars) = Method::build(&exp, model)?;
        let mut opt = DeviceAdamW::new(vars, AdamWConfig::default())?;
        let t = time(1, reps, || {
            train_step(&exp, model, &mut method, &mut opt, &[batch], false)?;
            Ok(())
        })?;
        // The last update finishes before the next setting is timed.
        method.settle()?;
        timings.push((label, key, pre == 0 && !host, t));
    }
    let off = timings
        .iter()
        .filter(|(_, _, none, _)| *none)
        .map(|(_, _, _, t)| t.median)
        .fold(f64::INFINITY, f64::min);
    for (label, key, none, t) in &timings {
        let vs = match none {
            true => String::new(),
            false => format!(" = {:.2}× off", t.median / off),
        };
        s.row(
            *label,
            format!("{:.3} s ±{:.0} %{vs}", t.median, t.spread_pct()),
            "measured, one optimizer step (median), steps back to back",
        );
        s.figure(&format!("{key}_s"), t.median);
    }
    s.row(
        "where it can win",
        "only where the host and the device are different processors; on a CPU-only machine both share the same cores",
        "note",
    );
    Ok(s)
}
