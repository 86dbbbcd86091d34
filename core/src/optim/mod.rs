//! Optimizers and schedules: AdamW for device parameters, the row-wise host
//! AdamW used by the MEFT store (lazy and dense), learning-rate schedules and
//! global gradient-norm clipping.

pub mod moments;

use crate::checkpoint::{Buffer, CheckpointReader, CheckpointWriter};
use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The run's optimizer step (1-based) when every host row's bias
    /// correction uses it (`method.meft.bias_correction = "global"`);
    /// `None`: each row's own update count.
    #[serde(default)]
    pub global_step: Option<u64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            global_step: None,
        }
    }
}

/// One AdamW update of a row (or any slice) in place; `step` is the
/// 1-based count its bias correction uses (the row's own updates, or the
/// run's step: `AdamWConfig::global_step`).
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
    // Zipped rather than indexed, so the loop has no bounds checks and
    // vectorises.
    let lanes = param
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut())
        .zip(v.iter_mut());
    for (((p, &g), m), v) in lanes {
        let g = g * scale;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p = *p * decay - step_size * *m / denom;
    }
}

/// AdamW over candle `Var`s on the compute device.
pub struct DeviceAdamW {
    pub vars: Vec<(String, Var)>,
    moments: Vec<Moments>,
    pub step: u64,
    pub cfg: AdamWConfig,
}

/// One variable's first and second moments.
enum Moments {
    /// On the compute device (or in the variable's own dtype), updated by
    /// tensor ops.
    Tensors { m: Tensor, v: Tensor },
    /// An f32 variable on the CPU: the moments are plain buffers and one
    /// pass updates them and the variable in place, with [`adamw_row`],
    /// the host rows' own update.
    InPlace { m: Vec<f32>, v: Vec<f32> },
}

impl DeviceAdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|(_, v)| {
                let t = v.as_tensor();
                Ok(if t.device().is_cpu() && t.dtype() == DType::F32 {
                    let n = t.elem_count();
                    Moments::InPlace {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    let m = t.zeros_like()?;
                    Moments::Tensors { v: m.clone(), m }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            moments,
            step: 0,
            cfg,
        })
    }

    pub fn param_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The variables, their moments (`opt.m.*`, `opt.v.*`) and the step
    /// count into a checkpoint.
    pub fn save<'a>(&'a self, w: &mut CheckpointWriter<'a>) -> Result<()> {
        for ((name, var), mom) in self.vars.iter().zip(&self.moments) {
            w.add_tensor(name.clone(), var.as_tensor())?;
            match mom {
                Moments::Tensors { m, v } => {
                    w.add_tensor(format!("opt.m.{name}"), m)?;
                    w.add_tensor(format!("opt.v.{name}"), v)?;
                }
                Moments::InPlace { m, v } => {
                    w.add(format!("opt.m.{name}"), var.dims(), Buffer::F32(m));
                    w.add(format!("opt.v.{name}"), var.dims(), Buffer::F32(v));
                }
            }
        }
        w.meta.insert("opt_step".into(), self.step.to_string());
        Ok(())
    }

    /// Read back what [`DeviceAdamW::save`] wrote, shapes checked.
    pub fn restore(&mut self, r: &mut CheckpointReader) -> anyhow::Result<()> {
        restore_vars(&self.vars, r)?;
        for ((name, var), mom) in self.vars.iter().zip(&mut self.moments) {
            let (shape, dev) = (var.dims().to_vec(), var.device().clone());
            match mom {
                Moments::Tensors { m, v } => {
                    *m = r.tensor(&format!("opt.m.{name}"), &shape, &dev)?;
                    *v = r.tensor(&format!("opt.v.{name}"), &shape, &dev)?;
                }
                Moments::InPlace { m, v } => {
                    r.read_into(&format!("opt.m.{name}"), &shape, m)?;
                    r.read_into(&format!("opt.v.{name}"), &shape, v)?;
                }
            }
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
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, ((_, var), mom)) in self.vars.iter().zip(&mut self.moments).enumerate() {
            let Some(g) = grads.get(i).and_then(|g| g.as_ref()) else {
                continue;
            };
            // Detached: a gradient can carry the graph that computed it, and
            // the moments would hold every step's graph alive through it.
            let g = g.detach();
            let (m, v) = match mom {
                Moments::InPlace { m, v } => {
                    let op = InPlaceAdamW {
                        moments: std::sync::Mutex::new((m, v)),
                        step: self.step as u32,
                        lr,
                        scale: scale as f32,
                        cfg: c,
                    };
                    var.as_tensor().inplace_op2(&g.contiguous()?, &op)?;
                    continue;
                }
                Moments::Tensors { m, v } => (m, v),
            };
            let g = (g * scale)?;
            let m_new = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v_new = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((&v_new / bc2)?.sqrt()? + c.eps)?;
            let update = ((&m_new / bc1)? / denom)?;
            let p = var.as_tensor();
            let decayed = if c.weight_decay != 0.0 {
                (p * (1.0 - lr * c.weight_decay))?
            } else {
                p.clone()
            };
            var.set(&(decayed - (update * lr)?)?)?;
            *m = m_new;
            *v = v_new;
        }
        Ok(())
    }
}

/// One AdamW update of an f32 CPU variable and its moments, in place and
/// in one pass, chunk by chunk in parallel.
struct InPlaceAdamW<'a> {
    moments: std::sync::Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
    step: u32,
    lr: f64,
    scale: f32,
    cfg: AdamWConfig,
}

impl candle_core::InplaceOp2 for InPlaceAdamW<'_> {
    fn name(&self) -> &'static str {
        "adamw-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<()> {
        use candle_core::CpuStorage::F32;
        use rayon::prelude::*;
        let (F32(param), F32(grad)) = (s1, s2) else {
            candle_core::bail!("adamw-in-place: f32 only");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw-in-place: contiguous tensors only");
        };
        let mut guard = match self.moments.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (m, v) = &mut *guard;
        let (param, grad) = (&mut param[p0..p1], &grad[g0..g1]);
        if param.len() != grad.len() || m.len() != param.len() || v.len() != param.len() {
            candle_core::bail!("adamw-in-place: sizes differ");
        }
        const CHUNK: usize = 1 << 14;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                adamw_row(p, g, m, v, self.step, self.lr, self.scale, &self.cfg);
            });
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
    fn weight_decay_shrinks_a_row_by_lr_times_decay() {
        // A zero gradient and fresh moments leave only the decay:
        // p ← p · (1 − lr · wd) = 2 · (1 − 0.1 · 0.5) = 1.9.
        let cfg = AdamWConfig {
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let (mut p, mut m, mut v) = (vec![2.0f32; 3], vec![0.0; 3], vec![0.0; 3]);
        adamw_row(&mut p, &[0.0; 3], &mut m, &mut v, 1, 0.1, 1.0, &cfg);
        assert_eq!(p, vec![1.9f32; 3]);
        // Without decay the same step leaves it.
        let mut q = vec![2.0f32; 3];
        let cfg = AdamWConfig::default();
        adamw_row(&mut q, &[0.0; 3], &mut m, &mut v, 1, 0.1, 1.0, &cfg);
        assert_eq!(q, vec![2.0f32; 3]);
    }

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
    fn device_adamw_in_place_matches_the_tensor_ops() {
        // An f32 CPU variable is updated in place; an f64 one by tensor ops.
        let dev = candle_core::Device::Cpu;
        let p0 = [1.0f64, -1.0, 0.5, 2.0];
        let grads = [[0.3f64, -2.0, 0.0, 1e-3], [-0.1, 0.5, 0.2, -4.0]];
        let run = |dtype: DType, steps: usize| -> Vec<f64> {
            let var = Var::from_tensor(
                &Tensor::new(&p0, &dev)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap_or_else(|_| unreachable!()),
            )
            .unwrap_or_else(|_| unreachable!());
            let mut opt = DeviceAdamW::new(vec![("p".into(), var.clone())], AdamWConfig::default())
                .unwrap_or_else(|_| unreachable!());
            for (i, g) in grads.iter().enumerate().take(steps) {
                let g = Tensor::new(g, &dev)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap_or_else(|_| unreachable!());
                opt.step(&[Some(g)], 0.1, [1.0, 0.5][i])
                    .unwrap_or_else(|_| unreachable!());
            }
            var.as_tensor()
                .to_dtype(DType::F64)
                .and_then(|t| t.to_vec1())
                .unwrap_or_else(|_| unreachable!())
        };
        // Step 1 moves each weight by lr against its gradient's sign; a zero
        // gradient leaves it.
        let one = run(DType::F32, 1);
        for (a, b) in one.iter().zip([0.9, -0.9, 0.5, 1.9]) {
            assert!((a - b).abs() < 1e-5, "{one:?}");
        }
        let (in_place, ops) = (run(DType::F32, 2), run(DType::F64, 2));
        for (a, b) in in_place.iter().zip(&ops) {
            assert!((a - b).abs() < 1e-5, "{in_place:?} vs {ops:?}");
        }
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
