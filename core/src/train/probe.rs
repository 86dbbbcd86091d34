//! A probe of a MEFT run before it starts: forward passes over its first
//! micro-batches, in training order, with the adapter as the run initialises
//! it. Values start at zero, so the adapter adds nothing and every layer sees
//! exactly the inputs the run's first step will; what the probe measures —
//! the padded batch shape, |U| per layer and how fast the set of rows the
//! host optimizer touches grows — is what the planner otherwise has to
//! assume at its worst.

use super::method::Method;
use crate::config::Experiment;
use crate::data::batch::{Batch, Batcher};
use crate::data::spec::{encode_all, load_data};
use crate::model::Input;
use anyhow::{Context, Result};

/// What a probe measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Probe {
    /// Micro-batches probed, and how many the run will train on.
    pub micro_batches: u64,
    pub run_micro_batches: u64,
    /// Mean padded tokens per micro-batch (N) and padded sequence length.
    pub tokens: u64,
    pub seq: u64,
    /// Mean |U| per adapter layer over the probed micro-batches.
    pub unions: Vec<u64>,
    /// Distinct rows touched per layer (mean over layers) after each probed
    /// micro-batch.
    pub touched: Vec<u64>,
    /// Rows per layer the host optimizer will hold moments for when the run
    /// ends: measured when the probe covered the whole run, otherwise the
    /// curve `touched` fitted and followed out to the run's end.
    pub touched_at_end: u64,
    pub extrapolated: bool,
}

/// Probe up to `limit` micro-batches of `exp` (a MEFT experiment), calling
/// `progress(done, of)` after each.
pub fn probe(exp: &Experiment, limit: usize, progress: &mut dyn FnMut(u64, u64)) -> Result<Probe> {
    exp.validate()?;
    anyhow::ensure!(
        exp.method.kind == crate::config::MethodKind::Meft,
        "method.kind: a probe measures MEFT's unions; this run is \"{}\"",
        exp.method.kind
    );
    let loaded = super::load_base(exp)?;
    let (train_ex, _) = load_data(exp)?;
    let tokenizer = loaded.tokenizer;
    let encoded = encode_all(exp, &train_ex, &tokenizer, None)?;
    let mut model = loaded.model;
    let (mut method, _) = Method::build(exp, &mut model)?;
    method.set_train(false);
    let accum = (exp.train.batch / exp.train.micro_batch).max(1) as u64;
    let run_micro_batches = exp.total_steps(encoded.len()).saturating_mul(accum);
    let n = (limit.max(1) as u64).min(run_micro_batches);
    let mut batcher = Batcher::new(encoded.len(), exp.train.micro_batch, exp.train.seed)?;
    let m = method
        .meft_mut()
        .context("a MEFT run builds a MEFT adapter")?;
    m.collect_stats = true;
    let layers = m.layers.len();
    let (mut tokens, mut seq) = (0u64, 0u64);
    let mut union_sums = vec![0u64; layers];
    let mut touched = Vec::new();
    for i in 0..n {
        let idx = batcher.next_batch();
        let rows: Vec<_> = idx.iter().map(|&i| encoded[i].clone()).collect();
        let batch = Batch::left_padded(&rows, tokenizer.pad_id)?;
        tokens += (batch.batch * batch.seq) as u64;
        seq += batch.seq as u64;
        let input = Input::from(&batch);
        model.forward(&input, None, &mut method, true)?;
        let m = method
            .meft_mut()
            .context("a MEFT run builds a MEFT adapter")?;
        let mut distinct = 0u64;
        for (sum, l) in union_sums.iter_mut().zip(&m.layers) {
            *sum += l.last_union() as u64;
            distinct += l.stats.counts.iter().filter(|&&c| c > 0).count() as u64;
        }
        touched.push(distinct / layers.max(1) as u64);
        m.link.take();
        progress(i + 1, n);
    }
    let neurons = exp.method.meft.neurons as u64;
    let (touched_at_end, extrapolated) = if n >= run_micro_batches {
        let last = touched
            .last()
            .copied()
            .context("the run has no micro-batch to probe")?;
        (last, false)
    } else {
        (saturating_fit(&touched, run_micro_batches, neurons), true)
    };
    Ok(Probe {
        micro_batches: n,
        run_micro_batches,
        tokens: tokens / n,
        seq: seq / n,
        unions: union_sums.iter().map(|s| s / n).collect(),
        touched,
        touched_at_end,
        extrapolated,
    })
}

/// Follow distinct-rows-so-far `c(i)` (after micro-batch i = 1, 2, …) out
/// to micro-batch `at`: the least-squares fit of c(i) = C − B·i^(−α) (the
/// saturating growth of a set drawn from a skewed distribution), over a
/// grid of α with C and B solved exactly for each, kept between the last
/// measurement and `cap`.
pub fn saturating_fit(c: &[u64], at: u64, cap: u64) -> u64 {
    // Nothing measured yet: no row touched.
    let last = c.last().copied().unwrap_or(0);
    if c.len() < 3 {
        return last;
    }
    let ys: Vec<f64> = c.iter().map(|&v| v as f64).collect();
    let mut best: Option<(f64, f64, f64, f64)> = None;
    for step in 1..=150 {
        let alpha = step as f64 * 0.02;
        // y = C − B·x with x = i^(−α): ordinary least squares in (C, B).
        let xs: Vec<f64> = (1..=c.len()).map(|i| (i as f64).powf(-alpha)).collect();
        let k = xs.len() as f64;
        let (sx, sy) = (xs.iter().sum::<f64>(), ys.iter().sum::<f64>());
        let sxx: f64 = xs.iter().map(|x| x * x).sum();
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| x * y).sum();
        let den = k * sxx - sx * sx;
        if den.abs() < 1e-12 {
            continue;
        }
        let slope = (k * sxy - sx * sy) / den;
        let intercept = (sy - slope * sx) / k;
        let sse: f64 = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (intercept + slope * x - y).powi(2))
            .sum();
        if best.is_none_or(|b| sse < b.0) {
            best = Some((sse, intercept, slope, alpha));
        }
    }
    let Some((_, c0, slope, alpha)) = best else {
        return last;
    };
    let predicted = c0 + slope * (at as f64).powf(-alpha);
    (predicted.round().max(last as f64) as u64).min(cap)
}

/// `meft plan --probe`: probe up to `limit` micro-batches (a progress line on
/// a terminal's stderr) and hand the planner what was measured.
pub fn observe(exp: &Experiment, limit: usize) -> Result<crate::telemetry::plan::Observed> {
    use std::io::IsTerminal;
    anyhow::ensure!(limit >= 1, "--probe: probe at least one micro-batch");
    let tty = std::io::stderr().is_terminal();
    let p = probe(exp, limit, &mut |done, of| {
        if tty {
            eprint!("\rprobing micro-batch {done}/{of}");
        }
        if done == of {
            if tty {
                eprintln!();
            } else {
                eprintln!("probed {of} micro-batches");
            }
        }
    })?;
    let rows = if p.extrapolated {
        format!(
            "rows touched by the end followed out from {} of the run's {} micro-batches",
            p.micro_batches, p.run_micro_batches
        )
    } else {
        format!("all {} micro-batches of the run", p.run_micro_batches)
    };
    Ok(crate::telemetry::plan::Observed {
        tokens: p.tokens,
        seq: p.seq,
        unions: p.unions,
        moment_rows: Some(p.touched_at_end),
        source: format!("N, |U| and touched rows probed at the initial state ({rows})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturating_curve_is_followed_to_its_end() {
        // c(i) = 3000 − 1200·i^(−0.5), rounded, measured for 12 micro-batches.
        let c: Vec<u64> = (1..=12)
            .map(|i| (3000.0 - 1200.0 * (i as f64).powf(-0.5)).round() as u64)
            .collect();
        let at_100 = saturating_fit(&c, 100, 4096);
        assert!((2875..=2885).contains(&at_100), "{at_100}");
        // Never below what was measured, never above the cap.
        assert_eq!(saturating_fit(&c, 100, 2500), 2500);
        assert_eq!(saturating_fit(&[5, 9], 100, 4096), 9);
    }
}
