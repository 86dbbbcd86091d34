//! Optimizers and schedules: AdamW for device parameters, the row-wise host
//! AdamW used by the MEFT store (lazy and dense), learning-rate schedules and
//! global gradient-norm clipping.

pub mod moments;

use crate::checkpoint::{CheckpointReader, CheckpointWriter};
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// One AdamW update of a row (or any slice) in place; `step` is this row's
/// own 1-based update count, used for bias correction.
#[allow(clippy::too_many_arguments)]
pub fn adamw_row(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: u32,
    lr: f64,
    scale: f32,
    cfg: &AdamWConfig,
) {
    let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
    let bc1 = 1.0 - cfg.beta1.powi(step as i32);
    let bc2 = 1.0 - cfg.beta2.powi(step as i32);
    let step_size = (lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let eps = cfg.eps as f32;
    let decay = 1.0 - (lr * cfg.weight_decay) as f32;
    for i in 0..param.len() {
        let g = grad[i] * scale;
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        param[i] = param[i] * decay - step_size * m[i] / denom;
    }
}

/// AdamW over candle `Var`s on the compute device.
pub struct DeviceAdamW {
    pub vars: Vec<(String, Var)>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub step: u64,
    pub cfg: AdamWConfig,
}

impl DeviceAdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            cfg,
        })
    }

    pub fn param_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The variables, their moments (`opt.m.*`, `opt.v.*`) and the step
    /// count into a checkpoint.
    pub fn save(&self, w: &mut CheckpointWriter) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            w.add_tensor(name.clone(), var.as_tensor())?;
            w.add_tensor(format!("opt.m.{name}"), &self.m[i])?;
            w.add_tensor(format!("opt.v.{name}"), &self.v[i])?;
        }
        w.meta.insert("opt_step".into(), self.step.to_string());
        Ok(())
    }

    /// Read back what [`DeviceAdamW::save`] wrote, shapes checked.
    pub fn restore(&mut self, r: &mut CheckpointReader) -> anyhow::Result<()> {
        restore_vars(&self.vars, r)?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let (shape, dev) = (var.dims().to_vec(), var.device().clone());
            self.m[i] = r.tensor(&format!("opt.m.{name}"), &shape, &dev)?;
            self.v[i] = r.tensor(&format!("opt.v.{name}"), &shape, &dev)?;
        }
        self.step = r.meta_u64("opt_step")?;
        Ok(())
    }
}

/// Set each variable from the checkpoint tensor of its name (shape checked).
pub fn restore_vars(vars: &[(String, Var)], r: &mut CheckpointReader) -> anyhow::Result<()> {
    for (name, var) in vars {
        let shape = var.dims().to_vec();
        var.set(
            &r.tensor(name, &shape, var.device())?
                .to_dtype(var.dtype())?,
        )?;
    }
    Ok(())
}

impl DeviceAdamW {
    /// Apply one update from accumulated gradients (same order as `vars`),
    /// each multiplied by `scale` (the clipping coefficient).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, scale: f64) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(i).and_then(|g| g.as_ref()) else {
                continue;
            };
            // Detached: a gradient can carry the graph that computed it, and
            // the moments would hold every step's graph alive through it.
            let g = (g.detach() * scale)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + c.eps)?;
            let update = ((&m / bc1)? / denom)?;
            let p = var.as_tensor();
            let decayed = if c.weight_decay != 0.0 {
                (p * (1.0 - lr * c.weight_decay))?
            } else {
                p.clone()
            };
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

pub use crate::config::Schedule;

pub fn warmup_steps(total: u64, ratio: f64) -> u64 {
    (total as f64 * ratio).ceil() as u64
}

pub fn lr_at(base: f64, step: u64, total: u64, warmup: u64, schedule: Schedule) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    match schedule {
        Schedule::ConstantWithWarmup => base,
        Schedule::Linear => {
            let rest = total.saturating_sub(warmup).max(1) as f64;
            base * (total.saturating_sub(step) as f64 / rest).max(0.0)
        }
    }
}

/// The coefficient that scales every gradient so the global norm is at most
/// `max_norm` (1 when it already is, or when clipping is off).
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && total_norm > max_norm {
        max_norm / (total_norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_by_hand() {
        // 100 steps, 2 % warm-up → 2 warm-up steps.
        let w = warmup_steps(100, 0.02);
        assert_eq!(w, 2);
        assert_eq!(lr_at(1.0, 0, 100, w, Schedule::Linear), 0.0);
        assert_eq!(lr_at(1.0, 1, 100, w, Schedule::Linear), 0.5);
        assert_eq!(lr_at(1.0, 2, 100, w, Schedule::Linear), 1.0);
        assert!((lr_at(1.0, 51, 100, w, Schedule::Linear) - 49.0 / 98.0).abs() < 1e-12);
        assert_eq!(lr_at(1.0, 100, 100, w, Schedule::Linear), 0.0);
        assert_eq!(lr_at(2e-4, 1, 100, w, Schedule::ConstantWithWarmup), 1e-4);
        assert_eq!(lr_at(2e-4, 70, 100, w, Schedule::ConstantWithWarmup), 2e-4);
    }

    #[test]
    fn clipping_by_hand() {
        assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
        assert!((clip_coefficient(4.0, 1.0) - 0.25).abs() < 1e-6);
        assert_eq!(clip_coefficient(4.0, 0.0), 1.0);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // On step 1, m̂ = g and v̂ = g², so the update is lr·g/(|g|+ε) ≈ lr·sign(g).
        let mut p = vec![1.0f32, -1.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        adamw_row(
            &mut p,
            &[0.3, -2.0],
            &mut m,
            &mut v,
            1,
            0.1,
            1.0,
            &AdamWConfig::default(),
        );
        assert!((p[0] - 0.9).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] + 0.9).abs() < 1e-6, "{}", p[1]);
    }
}
