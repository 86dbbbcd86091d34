//! The device row cache: a step's row traffic (rows up, their gradients
//! down) against the cache's size, from one micro-batch's union up to M
//! rows, next to what the planner predicts for it.

use super::step::{train_step, BenchBatch};
use super::{time, Section};
use crate::config::Experiment;
use crate::model::Model;
use crate::optim::{AdamWConfig, DeviceAdamW};
use crate::telemetry::plan::cache_traffic;
use crate::train::method::Method;
use crate::units::bytes;

/// What one optimizer step over `micro` moved and took.
struct Measured {
    rows: u64,
    hits: u64,
    misses: u64,
    unions: u64,
    layers: u64,
    seconds: f64,
}

fn step(
    model: &mut Model,
    exp: &Experiment,
    micro: &[BenchBatch],
    reps: usize,
) -> anyhow::Result<Measured> {
    let mut out = None;
    let t = time(0, reps, || {
        // A fresh adapter each time, so every repeat moves the same rows.
        let (mut method, vars) = Method::build(exp, model)?;
        let mut opt = DeviceAdamW::new(vars, AdamWConfig::default())?;
        let micro: Vec<&BenchBatch> = micro.iter().collect();
        let st = train_step(exp, model, &mut method, &mut opt, &micro, false)?;
        let c = st.row_cache.unwrap_or_default();
        out = Some(Measured {
            rows: st.traffic[crate::event::Kind::Rows] + st.traffic[crate::event::Kind::Grads],
            hits: c.hits,
            misses: c.misses,
            unions: st.unions.iter().sum(),
            layers: st.unions.len() as u64,
            seconds: 0.0,
        });
        Ok(())
    })?;
    let mut m = out.ok_or_else(|| anyhow::anyhow!("no step measured"))?;
    m.seconds = t.median;
    Ok(m)
}

/// Step traffic of MEFT M `neurons` K `top_k` over the micro-batches in
/// `micro` with caches of 0, 1, 2 and 4 times one micro-batch's mean union,
/// and M rows. `halve_at_4x` adds the check that 4× at least halves it.
pub(super) fn section(
    title: String,
    model: &mut Model,
    micro: &[BenchBatch],
    neurons: usize,
    top_k: usize,
    reps: usize,
    halve_at_4x: bool,
) -> anyhow::Result<Section> {
    let mut s = Section::new(&title);
    let mut exp = Experiment::default();
    exp.method.meft.neurons = neurons;
    exp.method.meft.top_k = top_k;
    let off = step(model, &exp, micro, reps)?;
    let row = 2 * model.config.hidden_size as u64 * 4;
    let a = micro.len() as u64;
    let u1 = off.unions / (off.layers * a).max(1);
    s.row(
        "no cache",
        format!(
            "{} rows + grads per step · {:.3} s",
            bytes(off.rows),
            off.seconds
        ),
        &format!("measured; one micro-batch's union {u1} rows per layer"),
    );
    s.figure("union_per_micro_batch", u1);
    s.figure("off_bytes", off.rows);
    // A cache holds at most M rows.
    let m = neurons as u64;
    let mut sizes: Vec<(String, u64)> = [1, 2, 4]
        .iter()
        .filter(|&&x| x * u1 < m)
        .map(|&x| (format!("{x}× a union"), x * u1))
        .collect();
    sizes.push(("all M rows".into(), m));
    for (label, c) in sizes {
        exp.method.meft.row_cache = c as usize;
        let on = step(model, &exp, micro, reps)?;
        let share = on.rows as f64 / off.rows.max(1) as f64;
        let hit = on.hits as f64 / (on.hits + on.misses).max(1) as f64;
        let planned = cache_traffic(neurons as u64, u1, a, c, None).misses * 2 * row * off.layers;
        s.row(
            format!("cache {c} rows ({label})"),
            format!(
                "{} ({:.0} % of no cache) · hits {:.0} % · {:.3} s · planned {}",
                bytes(on.rows),
                100.0 * share,
                100.0 * hit,
                on.seconds,
                bytes(planned)
            ),
            "measured by the Link; planned: unions drawn at random, an upper bound",
        );
        s.figure(&format!("cache_{c}_share"), share);
        s.figure(&format!("cache_{c}_hit_rate"), hit);
        if halve_at_4x && (label.starts_with("4×") || (c == m && 4 * u1 >= m)) {
            s.check(
                "a cache of 4× one micro-batch's union at least halves the step's row traffic",
                share <= 0.5,
            );
        }
    }
    Ok(s)
}
