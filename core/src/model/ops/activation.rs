//! SiLU and the SwiGLU product, each one op with a one-sweep backward.

use super::{contiguous, host_vec, run_kernel, FloatKernel};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// `silu(gate) · up`, the SwiGLU product, as one op: the backward pass
/// keeps only its two inputs and its output, and computes both gradients in
/// one sweep instead of the dozen temporaries candle's composed SiLU
/// backward makes. CPU only; other devices compose it.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu() && gate.shape() == up.shape() {
        gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
    } else {
        gate.silu()? * up
    }
}

/// `silu(x)` as one op with a one-sweep backward, for the dense adapter.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Silu)
    } else {
        x.silu()
    }
}

fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

struct SiluMul;

impl SiluMul {
    fn forward<T: Float + Send + Sync>(g: &[T], u: &[T]) -> Vec<T> {
        g.par_iter()
            .zip(u)
            .map(|(&g, &u)| g * sigmoid(g) * u)
            .collect()
    }

    /// d gate = grad·up·σ(g)(1 + g(1 − σ(g))), d up = grad·silu(g).
    fn backward<T: Float + Send + Sync>(g: &[T], u: &[T], grad: &[T]) -> (Vec<T>, Vec<T>) {
        g.par_iter()
            .zip(u)
            .zip(grad)
            .map(|((&g, &u), &d)| {
                let s = sigmoid(g);
                (d * u * s * (T::one() + g * (T::one() - s)), d * g * s)
            })
            .unzip()
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => CpuStorage::F32(Self::forward(
                contiguous(g, l1, "silu_mul")?,
                contiguous(u, l2, "silu_mul")?,
            )),
            (CpuStorage::F64(g), CpuStorage::F64(u)) => CpuStorage::F64(Self::forward(
                contiguous(g, l1, "silu_mul")?,
                contiguous(u, l2, "silu_mul")?,
            )),
            (g, u) => {
                let wide = |s: &CpuStorage, l: &Layout| -> Result<Vec<f32>> {
                    Ok(match s {
                        CpuStorage::BF16(v) => contiguous(v, l, "silu_mul")?
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                        CpuStorage::F16(v) => contiguous(v, l, "silu_mul")?
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                        _ => candle_core::bail!("silu_mul: both inputs f32, f64, bf16 or f16"),
                    })
                };
                let y = Self::forward(&wide(g, l1)?, &wide(u, l2)?);
                match g {
                    CpuStorage::BF16(_) => {
                        CpuStorage::BF16(y.into_iter().map(half::bf16::from_f32).collect())
                    }
                    _ => CpuStorage::F16(y.into_iter().map(half::f16::from_f32).collect()),
                }
            }
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (shape, dev, dtype) = (g.shape(), g.device(), g.dtype());
        let (dg, du) = match dtype {
            DType::F64 => {
                let (dg, du) = Self::backward(
                    &host_vec::<f64>(g)?,
                    &host_vec::<f64>(u)?,
                    &host_vec::<f64>(grad)?,
                );
                (
                    Tensor::from_vec(dg, shape, dev)?,
                    Tensor::from_vec(du, shape, dev)?,
                )
            }
            _ => {
                let (dg, du) = Self::backward(
                    &host_vec::<f32>(g)?,
                    &host_vec::<f32>(u)?,
                    &host_vec::<f32>(grad)?,
                );
                (
                    Tensor::from_vec(dg, shape, dev)?.to_dtype(dtype)?,
                    Tensor::from_vec(du, shape, dev)?.to_dtype(dtype)?,
                )
            }
        };
        Ok((Some(dg), Some(du)))
    }
}

struct Silu;

impl FloatKernel for Silu {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], _dims: &[usize]) -> Vec<T> {
        x.par_iter().map(|&v| v * sigmoid(v)).collect()
    }
}

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s, l, "silu")
    }

    /// dx = grad·σ(x)(1 + x(1 − σ(x))).
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        fn d<T: Float + Send + Sync>(x: &[T], g: &[T]) -> Vec<T> {
            x.par_iter()
                .zip(g)
                .map(|(&x, &g)| {
                    let s = sigmoid(x);
                    g * s * (T::one() + x * (T::one() - s))
                })
                .collect()
        }
        let (shape, dev, dtype) = (x.shape(), x.device(), x.dtype());
        Ok(Some(match dtype {
            DType::F64 => {
                Tensor::from_vec(d(&host_vec::<f64>(x)?, &host_vec::<f64>(grad)?), shape, dev)?
            }
            _ => Tensor::from_vec(d(&host_vec::<f32>(x)?, &host_vec::<f32>(grad)?), shape, dev)?
                .to_dtype(dtype)?,
        }))
    }
}
