//! Differentiable building blocks that candle either fuses without a backward
//! pass (RMSNorm, rotary embeddings, softmax) or differentiates wastefully
//! (a frozen linear layer, whose weight gradient nobody wants).
//!
//! Each op has a CPU kernel for f32 and f64 (f64 is what the finite-difference
//! tests run in; bf16 and f16 run through the f32 kernel) and a hand-written
//! backward. On other devices the same maths
//! is composed from stock tensor ops, which is slower but exact.

mod activation;
mod attention;
mod loss;
mod norm;

pub use activation::{gated_mul, silu, silu_mul, Activation};
pub use attention::{masked_softmax, rope, softmax_last_dim, RopeLayout};
pub use loss::cross_entropy;
pub use norm::rms_norm;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;

/// `t` in f32 when it is half precision, as it is otherwise.
pub fn widen(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.to_dtype(DType::F32),
        _ => Ok(t.clone()),
    }
}

/// Half-precision storage through an f32 kernel: widen, run `f`, narrow.
/// `None` for the other dtypes.
pub(crate) fn via_f32(
    s: &CpuStorage,
    l: &Layout,
    what: &str,
    f: impl Fn(&[f32]) -> Vec<f32>,
) -> Result<Option<CpuStorage>> {
    use half::{bf16, f16};
    Ok(match s {
        CpuStorage::BF16(v) => {
            let wide: Vec<f32> = contiguous(v, l, what)?.iter().map(|x| x.to_f32()).collect();
            Some(CpuStorage::BF16(
                f(&wide).into_iter().map(bf16::from_f32).collect(),
            ))
        }
        CpuStorage::F16(v) => {
            let wide: Vec<f32> = contiguous(v, l, what)?.iter().map(|x| x.to_f32()).collect();
            Some(CpuStorage::F16(
                f(&wide).into_iter().map(f16::from_f32).collect(),
            ))
        }
        _ => None,
    })
}

pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// A CPU kernel written once for any float type, given the input's
/// dimensions; [`run_kernel`] runs it on a storage of whatever dtype (half
/// precision through f32).
pub(crate) trait FloatKernel {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], dims: &[usize]) -> Vec<T>;
}

pub(crate) fn run_kernel(
    k: &impl FloatKernel,
    s: &CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<(CpuStorage, Shape)> {
    let dims = l.shape().dims();
    let out = match s {
        CpuStorage::F32(v) => CpuStorage::F32(k.apply(contiguous(v, l, what)?, dims)),
        CpuStorage::F64(v) => CpuStorage::F64(k.apply(contiguous(v, l, what)?, dims)),
        other => match via_f32(other, l, what, |x| k.apply(x, dims))? {
            Some(s) => s,
            None => candle_core::bail!("{what}: only f32, f64, bf16 and f16 are supported"),
        },
    };
    Ok((out, l.shape().clone()))
}

/// `x · Wᵀ` where `W` is frozen: the backward pass returns only the input
/// gradient, so no weight-sized buffer is ever materialised.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = w.dims2()?;
    let dims = x.dims().to_vec();
    let Some((&last, lead)) = dims.split_last() else {
        candle_core::bail!("frozen_linear: scalar input");
    };
    if last != in_dim {
        candle_core::bail!("frozen_linear: input has {last} features, weight expects {in_dim}");
    }
    let rows: usize = lead.iter().product();
    let x2 = x.reshape((rows, in_dim))?.contiguous()?;
    let y = if x.device().is_cpu() || cfg!(feature = "cuda") {
        x2.apply_op2(&w.t()?, FrozenLinear)?
    } else {
        x2.matmul(&w.detach().t()?)?
    };
    let mut out_shape = lead.to_vec();
    out_shape.push(out_dim);
    y.reshape(out_shape)
}

struct FrozenLinear;

impl CustomOp2 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (_, n) = l2.shape().dims2()?;
        let out = s1.matmul(s2, (1, m, n, k), l1, l2)?;
        Ok((out, Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (_, n) = l2.shape().dims2()?;
        let out = s1.matmul(s2, (1, m, n, k), l1, l2)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        wt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&wt.t()?)?), None))
    }
}

/// A tensor's values, row-major, converted to `T`.
pub(crate) fn host_vec<T: candle_core::WithDType>(t: &Tensor) -> Result<Vec<T>> {
    t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};
    use std::sync::Arc;

    fn var(seed: u64, shape: &[usize]) -> Var {
        let n: usize = shape.iter().product();
        let mut rng = crate::rng::seeded(seed);
        let v: Vec<f64> = crate::rng::normal_vec(&mut rng, n, 1.0)
            .into_iter()
            .map(f64::from)
            .collect();
        match Var::from_vec(v, shape, &Device::Cpu) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .and_then(|t| t.to_vec1())
            .unwrap_or_default()
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + y.abs()))
    }

    /// A fused op and its composition from stock ops give the same value
    /// and the same gradient for every input, under a random linear probe.
    fn same(inputs: &[&Var], fused: &Tensor, composed: &Tensor) {
        assert!(close(&flat(fused), &flat(composed)), "values differ");
        let probe = var(99, fused.dims());
        let loss = |t: &Tensor| match t.rank() {
            0 => t.clone(),
            _ => (t * probe.as_tensor())
                .and_then(|p| p.sum_all())
                .unwrap_or_else(|e| panic!("{e}")),
        };
        let (gf, gc) = match (loss(fused).backward(), loss(composed).backward()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => panic!("backward failed"),
        };
        for (i, x) in inputs.iter().enumerate() {
            let (a, b) = (gf.get(x.as_tensor()), gc.get(x.as_tensor()));
            let (a, b) = (
                flat(a.unwrap_or_else(|| panic!("input {i}: no fused gradient"))),
                flat(b.unwrap_or_else(|| panic!("input {i}: no gradient"))),
            );
            assert!(a.iter().any(|v| *v != 0.0), "input {i}: trivial gradient");
            assert!(close(&a, &b), "input {i}: gradients differ");
        }
    }

    #[test]
    fn masked_softmax_is_scale_mask_softmax() -> Result<()> {
        let x = var(1, &[2, 3, 4, 5]);
        // Causal over the last 4 of 5 keys, and row 1 of batch 1 sees nothing.
        let mut m = vec![0f32; 2 * 4 * 5];
        for b in 0..2 {
            for i in 0..4 {
                for j in 0..5 {
                    if j > i + 1 || (b == 1 && i == 1) {
                        m[(b * 4 + i) * 5 + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let mask = Arc::new(m.clone());
        let fused = masked_softmax(x.as_tensor(), &mask, 0.125)?;
        let mt = Tensor::from_vec(
            m.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            (2, 1, 4, 5),
            &Device::Cpu,
        )?;
        let composed = softmax_last_dim(&(x.as_tensor() * 0.125)?.broadcast_add(&mt)?)?;
        same(&[&x], &fused, &composed);
        // The blind row is zeros, not NaN.
        let row: Vec<f64> = fused
            .narrow(0, 1, 1)?
            .narrow(2, 1, 1)?
            .flatten_all()?
            .to_vec1()?;
        assert!(row.iter().all(|v| *v == 0.0));
        Ok(())
    }

    #[test]
    fn silu_ops_are_silu() -> Result<()> {
        let (g, u) = (var(2, &[3, 7]), var(3, &[3, 7]));
        let fused = silu_mul(g.as_tensor(), u.as_tensor())?;
        let composed = (g.as_tensor().silu()? * u.as_tensor())?;
        same(&[&g, &u], &fused, &composed);
        let fused = silu(g.as_tensor())?;
        same(&[&g], &fused, &g.as_tensor().silu()?);
        let fused = gated_mul(g.as_tensor(), u.as_tensor(), Activation::GeluTanh)?;
        // GELU's tanh form from stock ops (candle's own gelu backward rounds
        // its constants): 0.5·g·(1 + tanh(√(2/π)(g + 0.044715 g³))).
        let gt = g.as_tensor();
        let inner =
            ((gt + ((gt.sqr()? * gt)? * 0.044_715)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
        let gelu = ((gt * 0.5)? * (inner.tanh()? + 1.0)?)?;
        same(&[&g, &u], &fused, &(gelu * u.as_tensor())?);
        Ok(())
    }

    #[test]
    fn cross_entropy_is_the_weighted_mean_negative_log_likelihood() -> Result<()> {
        let logits = var(4, &[2, 3, 6]);
        let targets = vec![1u32, 5, 0, 2, 2, 4];
        let weights = vec![1f32, 0.0, 1.0, 1.0, 0.0, 1.0];
        let fused = cross_entropy(logits.as_tensor(), targets.clone(), weights.clone())?;
        let flat_logits = logits.as_tensor().reshape((6, 6))?;
        let logp = candle_nn::ops::log_softmax(&flat_logits, D::Minus1)?;
        let t = Tensor::from_vec(targets, (6, 1), &Device::Cpu)?;
        let picked = logp.gather(&t, 1)?.squeeze(1)?;
        let w = Tensor::from_vec(
            weights.iter().map(|&w| w as f64).collect::<Vec<_>>(),
            6,
            &Device::Cpu,
        )?;
        let composed = ((picked * w)?.sum_all()? / -4.0)?;
        same(&[&logits], &fused, &composed);
        // A target outside the vocabulary is an error, not a panic.
        assert!(cross_entropy(logits.as_tensor(), vec![6; 6], vec![1.0; 6]).is_err());
        Ok(())
    }
}
