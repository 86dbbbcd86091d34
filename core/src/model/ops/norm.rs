//! RMSNorm with a frozen weight, one op with its backward.

use super::{run_kernel, widen, FloatKernel};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Arc;

/// RMSNorm with a frozen weight: `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() {
        let x = x.contiguous()?;
        let w: Vec<f64> = weight.to_dtype(DType::F64)?.to_vec1()?;
        x.apply_op1(RmsNormOp {
            weight: Arc::new(w),
            eps,
        })
    } else {
        let d = x.dim(D::Minus1)? as f64;
        let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / d)?;
        let r = (ms + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&r)?.broadcast_mul(&weight.detach())
    }
}

struct RmsNormOp {
    weight: Arc<Vec<f64>>,
    eps: f64,
}

fn rms_norm_kernel<T: Float + Send + Sync>(x: &[T], w: &[f64], eps: f64) -> Vec<T> {
    let d = w.len().max(1);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(dst, row)| {
            let ms = row
                .iter()
                .map(|v| {
                    let v = v.to_f64().unwrap_or(0.0);
                    v * v
                })
                .sum::<f64>()
                / d as f64;
            let r = 1.0 / (ms + eps).sqrt();
            for ((o, v), w) in dst.iter_mut().zip(row).zip(w) {
                *o = T::from(v.to_f64().unwrap_or(0.0) * r * w).unwrap_or_else(T::zero);
            }
        });
    out
}

impl FloatKernel for RmsNormOp {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], _dims: &[usize]) -> Vec<T> {
        rms_norm_kernel(x, &self.weight, self.eps)
    }
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-frozen"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s, l, "rms_norm")
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // y = x·r·w with r = (mean(x²)+eps)^(-1/2):
        // dx = r·(g∘w) − x·r³·mean((g∘w)∘x)
        // r³ overflows half precision for small rows: work in f32 there.
        let dtype = x.dtype();
        let (x, grad) = (&widen(x)?, &widen(grad)?);
        let d = x.dim(D::Minus1)?;
        let w = Tensor::from_vec(self.weight.to_vec(), d, x.device())?.to_dtype(x.dtype())?;
        let gw = grad.broadcast_mul(&w)?;
        let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / d as f64)?;
        let r = (ms + self.eps)?.sqrt()?.recip()?;
        let dot = ((&gw * x)?.sum_keepdim(D::Minus1)? / d as f64)?;
        let r3 = r.powf(3.0)?;
        let dx = (gw.broadcast_mul(&r)? - x.broadcast_mul(&(r3 * dot)?)?)?;
        Ok(Some(dx.to_dtype(dtype)?))
    }
}
