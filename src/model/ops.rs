//! Differentiable building blocks that candle either fuses without a backward
//! pass (RMSNorm, rotary embeddings, softmax) or differentiates wastefully
//! (a frozen linear layer, whose weight gradient nobody wants).
//!
//! Each op has a CPU kernel for f32 and f64 (f64 is what the finite-difference
//! tests run in; bf16 and f16 run through the f32 kernel) and a hand-written
//! backward. On other devices the same maths
//! is composed from stock tensor ops, which is slower but exact.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use num_traits::Float;
use std::sync::Arc;

/// `t` in f32 when it is half precision, as it is otherwise.
pub fn widen(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.to_dtype(DType::F32),
        _ => Ok(t.clone()),
    }
}

/// Half-precision storage through an f32 kernel: widen, run `f`, narrow.
/// `None` for the other dtypes.
fn via_f32(
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

fn rms_norm_kernel<T: Float>(x: &[T], w: &[f64], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ms = row
            .iter()
            .map(|v| {
                let v = v.to_f64().unwrap_or(0.0);
                v * v
            })
            .sum::<f64>()
            / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(v, w)| T::from(v.to_f64().unwrap_or(0.0) * r * w).unwrap_or_else(T::zero)),
        );
    }
    out
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-frozen"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(rms_norm_kernel(
                contiguous(v, l, "rms_norm")?,
                &self.weight,
                self.eps,
            )),
            CpuStorage::F64(v) => CpuStorage::F64(rms_norm_kernel(
                contiguous(v, l, "rms_norm")?,
                &self.weight,
                self.eps,
            )),
            other => match via_f32(other, l, "rms_norm", |x| {
                rms_norm_kernel(x, &self.weight, self.eps)
            })? {
                Some(s) => s,
                None => candle_core::bail!("rms_norm: only f32, f64, bf16 and f16 are supported"),
            },
        };
        Ok((out, l.shape().clone()))
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

/// Softmax over the last dimension. A row that is entirely `-inf` (a padding
/// query that may attend to nothing) yields zeros rather than NaN.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(SoftmaxOp)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

struct SoftmaxOp;

fn softmax_kernel<T: Float>(x: &[T], d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    for (row, dst) in x.chunks(d).zip(out.chunks_mut(d)) {
        let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        if max == T::neg_infinity() {
            continue;
        }
        let mut sum = T::zero();
        for (o, &v) in dst.iter_mut().zip(row) {
            *o = (v - max).exp();
            sum = sum + *o;
        }
        for o in dst.iter_mut() {
            *o = *o / sum;
        }
    }
    out
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(softmax_kernel(contiguous(v, l, "softmax")?, d)),
            CpuStorage::F64(v) => CpuStorage::F64(softmax_kernel(contiguous(v, l, "softmax")?, d)),
            other => match via_f32(other, l, "softmax", |x| softmax_kernel(x, d))? {
                Some(s) => s,
                None => candle_core::bail!("softmax: only f32, f64, bf16 and f16 are supported"),
            },
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dtype = y.dtype();
        let (y, grad) = (&widen(y)?, &widen(grad)?);
        let dot = (grad * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * grad.broadcast_sub(&dot)?)?.to_dtype(dtype)?))
    }
}

/// How a head's dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Hugging Face checkpoints: dimension i pairs with i + head_dim/2.
    HalfSplit,
    /// GGUF (llama.cpp) checkpoints: dimension 2i pairs with 2i + 1.
    Interleaved,
}

/// Rotary position embedding on `x` of shape (batch, heads, seq, head_dim),
/// with an explicit position per (batch, seq) entry so left-padded rows start
/// counting at their first real token.
pub fn rope(
    x: &Tensor,
    positions: &Arc<Vec<u32>>,
    theta: f64,
    layout: RopeLayout,
) -> Result<Tensor> {
    let (b, _h, s, hd) = x.dims4()?;
    if positions.len() != b * s {
        candle_core::bail!("rope: {} positions for {b}×{s} tokens", positions.len());
    }
    let op = RopeOp {
        positions: positions.clone(),
        theta,
        layout,
        inverse: false,
    };
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(op)
    } else {
        let (cos, sin) = op.tables(b, s, hd);
        let dev = x.device();
        let cos = Tensor::from_vec(cos, (b, 1, s, hd / 2), dev)?.to_dtype(x.dtype())?;
        let sin = Tensor::from_vec(sin, (b, 1, s, hd / 2), dev)?.to_dtype(x.dtype())?;
        let (x0, x1) = match layout {
            RopeLayout::HalfSplit => (
                x.narrow(D::Minus1, 0, hd / 2)?,
                x.narrow(D::Minus1, hd / 2, hd / 2)?,
            ),
            RopeLayout::Interleaved => {
                let xr = x.reshape((b, x.dim(1)?, s, hd / 2, 2))?;
                (
                    xr.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?,
                    xr.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?,
                )
            }
        };
        let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        match layout {
            RopeLayout::HalfSplit => Tensor::cat(&[y0, y1], D::Minus1),
            RopeLayout::Interleaved => Tensor::stack(&[y0, y1], D::Minus1)?.flatten_from(D::Minus2),
        }
    }
}

#[derive(Clone)]
struct RopeOp {
    positions: Arc<Vec<u32>>,
    theta: f64,
    layout: RopeLayout,
    inverse: bool,
}

impl RopeOp {
    /// cos and sin per (batch, seq, pair), computed in f64.
    fn tables(&self, b: usize, s: usize, hd: usize) -> (Vec<f64>, Vec<f64>) {
        let half = hd / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.theta.powf((2 * i) as f64 / hd as f64))
            .collect();
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for &p in self.positions.iter() {
            for f in &inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos());
                sin.push(if self.inverse { -a.sin() } else { a.sin() });
            }
        }
        (cos, sin)
    }

    fn kernel<T: Float>(&self, x: &[T], b: usize, h: usize, s: usize, hd: usize) -> Vec<T> {
        let half = hd / 2;
        let (cos, sin) = self.tables(b, s, hd);
        let mut out = vec![T::zero(); x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for si in 0..s {
                    let base = ((bi * h + hi) * s + si) * hd;
                    let tab = (bi * s + si) * half;
                    let src = &x[base..base + hd];
                    let dst = &mut out[base..base + hd];
                    for i in 0..half {
                        let (a, bidx) = match self.layout {
                            RopeLayout::HalfSplit => (i, i + half),
                            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let c = T::from(cos[tab + i]).unwrap_or_else(T::one);
                        let sn = T::from(sin[tab + i]).unwrap_or_else(T::zero);
                        let x0 = src[a];
                        let x1 = src[bidx];
                        dst[a] = x0 * c - x1 * sn;
                        dst[bidx] = x0 * sn + x1 * c;
                    }
                }
            }
        }
        out
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-positions"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h, s, hd) = l.shape().dims4()?;
        let out = match st {
            CpuStorage::F32(v) => {
                CpuStorage::F32(self.kernel(contiguous(v, l, "rope")?, b, h, s, hd))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(self.kernel(contiguous(v, l, "rope")?, b, h, s, hd))
            }
            other => match via_f32(other, l, "rope", |x| self.kernel(x, b, h, s, hd))? {
                Some(s) => s,
                None => candle_core::bail!("rope: only f32, f64, bf16 and f16 are supported"),
            },
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // A rotation's adjoint is the rotation by the opposite angle.
        let mut inv = self.clone();
        inv.inverse = !self.inverse;
        Ok(Some(grad.contiguous()?.apply_op1(inv)?))
    }
}
