//! The loss as one op that keeps nothing but the logits.

use super::{contiguous, host_vec};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Arc;

/// Σ wᵢ · −log softmax(logitsᵢ)[targetᵢ] / Σ wᵢ over the rows of `logits`
/// (any leading shape × vocab), as one op: nothing but the logits is kept
/// for the backward pass, which recomputes the softmax and returns
/// (softmax − one-hot)·wᵢ/Σw in a single tensor. Rows of weight 0 count
/// for nothing. CPU only; other devices compose it from stock ops.
pub fn cross_entropy(logits: &Tensor, targets: Vec<u32>, weights: Vec<f32>) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let rows = logits.elem_count() / v.max(1);
    if targets.len() != rows || weights.len() != rows {
        candle_core::bail!(
            "cross_entropy: {} targets and {} weights for {rows} rows",
            targets.len(),
            weights.len()
        );
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross_entropy: target {t} is outside the vocabulary of {v}");
    }
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    if !logits.device().is_cpu() {
        let dev = logits.device();
        let flat = logits.reshape((rows, v))?;
        let logp = candle_nn::ops::log_softmax(&flat, D::Minus1)?;
        let t = Tensor::from_vec(targets, (rows, 1), dev)?;
        let picked = logp.gather(&t, 1)?.squeeze(1)?;
        let w = Tensor::from_vec(weights, rows, dev)?.to_dtype(picked.dtype())?;
        return (picked * w)?.sum_all()? / (-total.max(1.0));
    }
    logits.contiguous()?.apply_op1(CrossEntropy {
        targets: Arc::new(targets),
        weights: Arc::new(weights),
        total: total.max(1.0),
    })
}

struct CrossEntropy {
    targets: Arc<Vec<u32>>,
    weights: Arc<Vec<f32>>,
    total: f64,
}

impl CrossEntropy {
    fn forward<T: Float + Send + Sync>(&self, x: &[T], v: usize) -> f64 {
        // Rows in parallel; their losses summed in order, so the total does
        // not depend on how the rows were shared out.
        let per_row: Vec<f64> = x
            .par_chunks(v)
            .zip(self.targets.par_iter())
            .zip(self.weights.par_iter())
            .map(|((row, &t), &w)| {
                if w == 0.0 {
                    return 0.0;
                }
                let max = row.iter().fold(T::neg_infinity(), |m, &a| m.max(a));
                let sum: f64 = row
                    .iter()
                    .map(|&a| (a - max).to_f64().unwrap_or(0.0).exp())
                    .sum();
                let lse = max.to_f64().unwrap_or(0.0) + sum.ln();
                w as f64 * (lse - row[t as usize].to_f64().unwrap_or(0.0))
            })
            .collect();
        per_row.iter().sum::<f64>() / self.total
    }

    fn backward<T: Float + Send + Sync>(&self, x: &[T], v: usize, g: f64) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(self.targets.par_iter())
            .zip(self.weights.par_iter())
            .for_each(|(((dst, row), &t), &w)| {
                if w == 0.0 {
                    return;
                }
                let scale = g * w as f64 / self.total;
                let max = row.iter().fold(T::neg_infinity(), |m, &a| m.max(a));
                let mut sum = 0f64;
                for (o, &a) in dst.iter_mut().zip(row) {
                    let e = (a - max).to_f64().unwrap_or(0.0).exp();
                    sum += e;
                    *o = T::from(e).unwrap_or_else(T::zero);
                }
                for (j, o) in dst.iter_mut().enumerate() {
                    let p = o.to_f64().unwrap_or(0.0) / sum;
                    let hot = if j == t as usize { 1.0 } else { 0.0 };
                    *o = T::from(scale * (p - hot)).unwrap_or_else(T::zero);
                }
            });
        out
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(vec![self
                .forward(contiguous(x, l, "cross_entropy")?, v)
                as f32]),
            CpuStorage::F64(x) => {
                CpuStorage::F64(vec![self.forward(contiguous(x, l, "cross_entropy")?, v)])
            }
            _ => candle_core::bail!("cross_entropy: logits must be f32 or f64"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let v = x.dim(D::Minus1)?;
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let dx = match x.dtype() {
            DType::F64 => Tensor::from_vec(
                self.backward(&host_vec::<f64>(x)?, v, g),
                x.shape(),
                x.device(),
            )?,
            _ => Tensor::from_vec(
                self.backward(&host_vec::<f32>(x)?, v, g),
                x.shape(),
                x.device(),
            )?,
        };
        Ok(Some(dx))
    }
}
