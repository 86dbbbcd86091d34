//! Attention's ops: softmax, the masked and scaled softmax, rotary
//! position embeddings in both checkpoint layouts.

use super::{host_vec, run_kernel, widen, FloatKernel};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Arc;

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

fn softmax_kernel<T: Float + Send + Sync>(x: &[T], d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(dst, row)| {
            let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
            if max == T::neg_infinity() {
                return;
            }
            let mut sum = T::zero();
            for (o, &v) in dst.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum = sum + *o;
            }
            for o in dst.iter_mut() {
                *o = *o / sum;
            }
        });
    out
}

impl FloatKernel for SoftmaxOp {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
        softmax_kernel(x, dims.last().copied().unwrap_or(1).max(1))
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        run_kernel(self, s, l, "softmax")
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dtype = y.dtype();
        let (y, grad) = (&widen(y)?, &widen(grad)?);
        let dot = (grad * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * grad.broadcast_sub(&dot)?)?.to_dtype(dtype)?))
    }
}

/// `softmax(scale·x + mask)` over the last dimension of the attention
/// scores `x` (batch, heads, queries, keys), with an additive mask of 0 or
/// `-inf` per (batch, query, key) shared by every head. One op in place of
/// scale, mask, softmax: the backward pass keeps only the raw scores and the
/// probabilities, and the mask, a constant, never gets a gradient. A query
/// that may attend to nothing gets zeros. CPU only; other devices compose
/// the same from stock ops.
pub fn masked_softmax(x: &Tensor, mask: &Arc<Vec<f32>>, scale: f64) -> Result<Tensor> {
    let (b, _h, q, k) = x.dims4()?;
    if mask.len() != b * q * k {
        candle_core::bail!(
            "masked_softmax: a mask of {} values for {b}×{q}×{k}",
            mask.len()
        );
    }
    x.contiguous()?.apply_op1(MaskedSoftmax {
        mask: mask.clone(),
        scale,
    })
}

struct MaskedSoftmax {
    mask: Arc<Vec<f32>>,
    scale: f64,
}

impl MaskedSoftmax {
    /// Row r of the scores is query r % q of batch r / (heads·q); its mask
    /// row is the same for every head.
    fn mask_row(&self, row: usize, heads: usize, q: usize, k: usize) -> &[f32] {
        let b = row / (heads * q);
        let i = row % q;
        &self.mask[(b * q + i) * k..(b * q + i + 1) * k]
    }

    fn forward<T: Float + Send + Sync>(&self, x: &[T], heads: usize, q: usize, k: usize) -> Vec<T> {
        let scale = T::from(self.scale).unwrap_or_else(T::one);
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(k)
            .zip(x.par_chunks(k))
            .enumerate()
            .for_each(|(r, (dst, row))| {
                let m = self.mask_row(r, heads, q, k);
                let mut max = T::neg_infinity();
                for ((o, &v), &mv) in dst.iter_mut().zip(row).zip(m) {
                    *o = scale * v + T::from(mv).unwrap_or_else(T::zero);
                    max = max.max(*o);
                }
                if max == T::neg_infinity() {
                    dst.fill(T::zero());
                    return;
                }
                let mut sum = T::zero();
                for o in dst.iter_mut() {
                    *o = (*o - max).exp();
                    sum = sum + *o;
                }
                for o in dst.iter_mut() {
                    *o = *o / sum;
                }
            });
        out
    }

    /// dx = scale · p ∘ (g − Σ p∘g), row by row.
    fn backward<T: Float + Send + Sync>(&self, p: &[T], g: &[T], k: usize) -> Vec<T> {
        let scale = T::from(self.scale).unwrap_or_else(T::one);
        let mut out = vec![T::zero(); p.len()];
        out.par_chunks_mut(k)
            .zip(p.par_chunks(k).zip(g.par_chunks(k)))
            .for_each(|(dst, (pr, gr))| {
                let dot = pr.iter().zip(gr).fold(T::zero(), |a, (&x, &y)| a + x * y);
                for ((o, &x), &y) in dst.iter_mut().zip(pr).zip(gr) {
                    *o = scale * x * (y - dot);
                }
            });
        out
    }
}

impl FloatKernel for MaskedSoftmax {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
        self.forward(x, dims[1], dims[2], dims[3])
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        l.shape().dims4()?;
        run_kernel(self, s, l, "masked_softmax")
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let k = p.dim(D::Minus1)?;
        let dx = match p.dtype() {
            DType::F64 => {
                let (pv, gv) = (host_vec::<f64>(p)?, host_vec::<f64>(grad)?);
                Tensor::from_vec(self.backward(&pv, &gv, k), p.shape(), p.device())?
            }
            dtype => {
                let (pv, gv) = (host_vec::<f32>(p)?, host_vec::<f32>(grad)?);
                Tensor::from_vec(self.backward(&pv, &gv, k), p.shape(), p.device())?
                    .to_dtype(dtype)?
            }
        };
        Ok(Some(dx))
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
/// counting at their first real token, and one inverse frequency per pair of
/// dimensions (head_dim / 2 of them: the base's, after any rope scaling).
pub fn rope(
    x: &Tensor,
    positions: &Arc<Vec<u32>>,
    inv_freq: &Arc<Vec<f64>>,
    layout: RopeLayout,
) -> Result<Tensor> {
    let (b, _h, s, hd) = x.dims4()?;
    if positions.len() != b * s {
        candle_core::bail!("rope: {} positions for {b}×{s} tokens", positions.len());
    }
    if inv_freq.len() * 2 != hd {
        candle_core::bail!(
            "rope: {} frequencies for a head of {hd} dimensions",
            inv_freq.len()
        );
    }
    let op = RopeOp {
        positions: positions.clone(),
        inv_freq: inv_freq.clone(),
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
    inv_freq: Arc<Vec<f64>>,
    layout: RopeLayout,
    inverse: bool,
}

impl RopeOp {
    /// cos and sin per (batch, seq, pair), computed in f64.
    fn tables(&self, b: usize, s: usize, hd: usize) -> (Vec<f64>, Vec<f64>) {
        let half = hd / 2;
        let inv_freq = &self.inv_freq;
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for &p in self.positions.iter() {
            for f in inv_freq.iter() {
                let a = p as f64 * f;
                cos.push(a.cos());
                sin.push(if self.inverse { -a.sin() } else { a.sin() });
            }
        }
        (cos, sin)
    }

    fn kernel<T: Float + Send + Sync>(
        &self,
        x: &[T],
        b: usize,
        h: usize,
        s: usize,
        hd: usize,
    ) -> Vec<T> {
        let half = hd / 2;
        let (cos, sin) = self.tables(b, s, hd);
        let mut out = vec![T::zero(); x.len()];
        // One head's vectors of one sequence per task, in parallel.
        out.par_chunks_mut(s * hd)
            .zip(x.par_chunks(s * hd))
            .enumerate()
            .for_each(|(bh, (head_out, head_in))| {
                let bi = bh / h.max(1);
                for si in 0..s {
                    let tab = (bi * s + si) * half;
                    let src = &head_in[si * hd..(si + 1) * hd];
                    let dst = &mut head_out[si * hd..(si + 1) * hd];
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
            });
        out
    }
}

impl FloatKernel for RopeOp {
    fn apply<T: Float + Send + Sync>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
        self.kernel(x, dims[0], dims[1], dims[2], dims[3])
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-positions"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        l.shape().dims4()?;
        run_kernel(self, st, l, "rope")
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // A rotation's adjoint is the rotation by the opposite angle.
        let mut inv = self.clone();
        inv.inverse = !self.inverse;
        Ok(Some(grad.contiguous()?.apply_op1(inv)?))
    }
}
