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

/// A CPU kernel written once for any float type, given the input's
/// dimensions; [`run_kernel`] runs it on a storage of whatever dtype (half
/// precision through f32).
trait FloatKernel {
    fn apply<T: Float>(&self, x: &[T], dims: &[usize]) -> Vec<T>;
}

fn run_kernel(
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

impl FloatKernel for RmsNormOp {
    fn apply<T: Float>(&self, x: &[T], _dims: &[usize]) -> Vec<T> {
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

impl FloatKernel for SoftmaxOp {
    fn apply<T: Float>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
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

    fn forward<T: Float>(&self, x: &[T], heads: usize, q: usize, k: usize) -> Vec<T> {
        let scale = T::from(self.scale).unwrap_or_else(T::one);
        let mut out = vec![T::zero(); x.len()];
        for (r, (row, dst)) in x.chunks(k).zip(out.chunks_mut(k)).enumerate() {
            let m = self.mask_row(r, heads, q, k);
            let mut max = T::neg_infinity();
            for ((o, &v), &mv) in dst.iter_mut().zip(row).zip(m) {
                *o = scale * v + T::from(mv).unwrap_or_else(T::zero);
                max = max.max(*o);
            }
            if max == T::neg_infinity() {
                dst.fill(T::zero());
                continue;
            }
            let mut sum = T::zero();
            for o in dst.iter_mut() {
                *o = (*o - max).exp();
                sum = sum + *o;
            }
            for o in dst.iter_mut() {
                *o = *o / sum;
            }
        }
        out
    }

    /// dx = scale · p ∘ (g − Σ p∘g), row by row.
    fn backward<T: Float>(&self, p: &[T], g: &[T], k: usize) -> Vec<T> {
        let scale = T::from(self.scale).unwrap_or_else(T::one);
        let mut out = vec![T::zero(); p.len()];
        for ((pr, gr), dst) in p.chunks(k).zip(g.chunks(k)).zip(out.chunks_mut(k)) {
            let dot = pr.iter().zip(gr).fold(T::zero(), |a, (&x, &y)| a + x * y);
            for ((o, &x), &y) in dst.iter_mut().zip(pr).zip(gr) {
                *o = scale * x * (y - dot);
            }
        }
        out
    }
}

impl FloatKernel for MaskedSoftmax {
    fn apply<T: Float>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
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

/// A tensor's values, row-major, converted to `T`.
fn host_vec<T: candle_core::WithDType>(t: &Tensor) -> Result<Vec<T>> {
    t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()
}

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
    fn forward<T: Float>(g: &[T], u: &[T]) -> Vec<T> {
        g.iter().zip(u).map(|(&g, &u)| g * sigmoid(g) * u).collect()
    }

    /// d gate = grad·up·σ(g)(1 + g(1 − σ(g))), d up = grad·silu(g).
    fn backward<T: Float>(g: &[T], u: &[T], grad: &[T]) -> (Vec<T>, Vec<T>) {
        let mut dg = Vec::with_capacity(g.len());
        let mut du = Vec::with_capacity(g.len());
        for ((&g, &u), &d) in g.iter().zip(u).zip(grad) {
            let s = sigmoid(g);
            dg.push(d * u * s * (T::one() + g * (T::one() - s)));
            du.push(d * g * s);
        }
        (dg, du)
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
    fn apply<T: Float>(&self, x: &[T], _dims: &[usize]) -> Vec<T> {
        x.iter().map(|&v| v * sigmoid(v)).collect()
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
        fn d<T: Float>(x: &[T], g: &[T]) -> Vec<T> {
            x.iter()
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
    fn forward<T: Float>(&self, x: &[T], v: usize) -> f64 {
        let mut loss = 0f64;
        for ((row, &t), &w) in x
            .chunks(v)
            .zip(self.targets.iter())
            .zip(self.weights.iter())
        {
            if w == 0.0 {
                continue;
            }
            let max = row.iter().fold(T::neg_infinity(), |m, &a| m.max(a));
            let sum: f64 = row
                .iter()
                .map(|&a| (a - max).to_f64().unwrap_or(0.0).exp())
                .sum();
            let lse = max.to_f64().unwrap_or(0.0) + sum.ln();
            loss += w as f64 * (lse - row[t as usize].to_f64().unwrap_or(0.0));
        }
        loss / self.total
    }

    fn backward<T: Float>(&self, x: &[T], v: usize, g: f64) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        for (((row, dst), &t), &w) in x
            .chunks(v)
            .zip(out.chunks_mut(v))
            .zip(self.targets.iter())
            .zip(self.weights.iter())
        {
            if w == 0.0 {
                continue;
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
        }
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

impl FloatKernel for RopeOp {
    fn apply<T: Float>(&self, x: &[T], dims: &[usize]) -> Vec<T> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

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
