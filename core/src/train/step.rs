//! One optimizer step, as every run takes it: the micro-batches' forward and
//! backward passes with gradient accumulation, the global gradient norm over
//! device parameters and host rows, clipping, the learning-rate schedule, the
//! device optimizer and the host rows' AdamW. The trainer wraps it in its
//! accounting (ledgers, events, histograms); `meft bench` times this same
//! function.

use super::method::Method;
use crate::adapter::meft::StepStats;
use crate::config::{BiasCorrection, Experiment};
use crate::data::batch::Batch;
use crate::model::{Input, Model};
use crate::optim::{clip_coefficient, lr_at, warmup_steps, DeviceAdamW};
use anyhow::Result;
use candle_core::{DType, Tensor};

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Where in its run a step is: the steps taken before it, the run's total
/// (for the schedule) and the learning-rate multiplier set while training.
#[derive(Debug, Clone, Copy)]
pub struct StepAt {
    pub step: u64,
    pub total: u64,
    pub lr_scale: f64,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    /// The loss summed over micro-batches, each divided by their count.
    pub loss: f64,
    /// Unpadded tokens trained on.
    pub tokens: u64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// Host rows the host optimizer updated, and the bytes its
    /// accumulators held at their fullest.
    pub rows_updated: u64,
    pub accumulator_bytes: u64,
    /// The last micro-batch's padded tokens and sequence length.
    pub micro_shape: (u64, u64),
    /// The device's used memory at its highest, where `device_used` reads it.
    pub device_used: Option<u64>,
    /// What MEFT moved and kept.
    pub stats: StepStats,
}

/// One optimizer step of `method` over `batch / micro_batch` micro-batches
/// drawn from `next_batch`, at `at` in its run. `device_used` is read while
/// each micro-batch's graph is alive; `stats` turns on pick statistics. A
/// loss or norm that is not finite applies nothing and returns
/// [`super::Diverged`].
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step(
    exp: &Experiment,
    model: &Model,
    method: &mut Method,
    opt: &mut DeviceAdamW,
    at: StepAt,
    next_batch: &mut dyn FnMut() -> Result<Batch>,
    device_used: &dyn Fn() -> Option<u64>,
    stats: bool,
) -> Result<StepOutcome> {
    let accum = (exp.train.batch / exp.train.micro_batch).max(1);
    let mut grads: Vec<Option<Tensor>> = vec![None; opt.vars.len()];
    let mut out = StepOutcome::default();
    method.set_train(true);
    method.begin_step(stats)?;
    for micro in 0..accum {
        let seed = exp.train.seed ^ (at.step * 1_000 + micro as u64 + 1);
        method.begin_micro_batch(seed);
        let batch = next_batch()?;
        out.micro_shape = ((batch.batch * batch.seq) as u64, batch.seq as u64);
        out.tokens += batch.attn_mask.iter().filter(|&&m| m == 1).count() as u64;
        let input = Input::from(&batch);
        let logits = model.forward(&input, None, method, false)?;
        let loss = (super::objective::masked_loss(&logits, &batch)?.0 / accum as f64)?;
        out.loss += scalar(&loss)?;
        let g = loss.backward()?;
        for (acc, (_, var)) in grads.iter_mut().zip(&opt.vars) {
            if let Some(gi) = g.get(var.as_tensor()) {
                *acc = Some(match acc.take() {
                    Some(a) => (a + gi)?,
                    None => gi.clone(),
                });
            }
        }
        method.after_backward()?;
        // While the micro-batch's graph and gradients are still alive.
        out.device_used = out.device_used.max(device_used());
    }
    method.end_micro_batches()?;
    // Global norm over device parameters and host rows together.
    let mut sq = method.host_grad_sq_norm()?;
    for g in grads.iter().flatten() {
        sq += scalar(&g.sqr()?.sum_all()?)?;
    }
    out.grad_norm = sq.sqrt();
    if !out.loss.is_finite() || !out.grad_norm.is_finite() {
        // Nothing of this step is applied: the newest checkpoint on disk is
        // the last finite state.
        return Err(super::Diverged {
            step: at.step + 1,
            what: format!(
                "the loss is {} and the gradient norm {}",
                out.loss, out.grad_norm
            ),
        }
        .into());
    }
    let coef = clip_coefficient(out.grad_norm, exp.train.clip);
    let warm = warmup_steps(at.total, exp.train.warmup_ratio);
    out.lr = lr_at(exp.train.lr, at.step, at.total, warm, exp.train.schedule) * at.lr_scale;
    opt.step(&grads, out.lr, coef)?;
    let mut cfg = opt.cfg;
    if exp.method.meft.bias_correction == BiasCorrection::Global {
        cfg.global_step = Some(at.step + 1);
    }
    (out.rows_updated, out.accumulator_bytes) = method.host_step(out.lr, coef, &cfg)?;
    out.stats = method.take_step_stats();
    Ok(out)
}
