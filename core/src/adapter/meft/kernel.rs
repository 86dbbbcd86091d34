//! The device's half: the adapter output from the gathered rows, as one
//! fused CPU op with a hand-written backward, or composed from stock tensor
//! ops elsewhere; both work over the union, never N × K × d.

use super::lanes::Lanes;
use super::GradRoute;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// The adapter output from gathered rows, composed from stock tensor ops
/// (for devices without the fused kernel), differentiable in the rows, the
/// gates and the queries: a_tj = ReLU(gate_tj · q_t·k_j) over each token's K
/// slots, out_t = Σ a_tj v_j. `gates` is N × K (ones for full routing), `map`
/// N × K indices into the union (`|U|` for an empty slot).
///
/// It works over the union, never per slot: scores are q·K_Uᵀ (N × |U|),
/// each slot's score is gathered from them as a scalar, and the activations
/// are scattered back into an N × |U| matrix that multiplies V_U. The rows
/// are read where they lie (no copy), and the largest intermediate is
/// N × |U|, not N × K × d.
pub fn device_output(
    q: &Tensor,
    rows_k: &Tensor,
    rows_v: &Tensor,
    map: &Tensor,
    gates: &Tensor,
    k: usize,
) -> Result<Tensor> {
    device_output_traced(q, rows_k, rows_v, map, gates, k, &mut |_| {})
}

/// [`device_output`], reporting the shape of every tensor it builds.
pub fn device_output_traced(
    q: &Tensor,
    rows_k: &Tensor,
    rows_v: &Tensor,
    map: &Tensor,
    gates: &Tensor,
    k: usize,
    built: &mut dyn FnMut(&[usize]),
) -> Result<Tensor> {
    let mut keep = |t: Tensor| -> Result<Tensor> {
        built(t.dims());
        Ok(t)
    };
    let (n, _) = q.dims2()?;
    let u = rows_k.dim(0)?;
    if u == 0 {
        return keep(q.zeros_like()?);
    }
    let (valid, flat) = slot_index(map, n, k, u, q.dtype())?;
    let (valid, flat) = (keep(valid)?, keep(flat)?);
    let scores = keep(q.matmul(&rows_k.t()?)?)?;
    let s = keep(
        scores
            .flatten_all()?
            .index_select(&flat, 0)?
            .reshape((n, k))?,
    )?;
    let a = keep(((gates * s)?.relu()? * &valid)?)?;
    // index_add rather than scatter_add: candle's scatter_add backward
    // mis-shapes the gradient of its destination.
    let spread = keep(
        Tensor::zeros(n * u, a.dtype(), q.device())?
            .index_add(&flat, &a.flatten_all()?, 0)?
            .reshape((n, u))?,
    )?;
    keep(spread.matmul(rows_v)?)
}

/// Each of the N × K slots' validity (1 where it holds a row, 0 for an
/// empty one, in `dtype`) and its flat index t·|U| + map[t, i] into an
/// N × |U| matrix; empty slots (map = |U|) point at row 0 and are masked
/// out, so the rows are used where they lie, never copied.
fn slot_index(
    map: &Tensor,
    n: usize,
    k: usize,
    u: usize,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let dev = map.device();
    let valid = map.lt(u as u32)?.to_dtype(dtype)?.reshape((n, k))?;
    let base =
        (Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F64)? * u as f64)?.reshape((n, 1))?;
    let flat = (map.to_dtype(DType::F64)?.reshape((n, k))? * valid.to_dtype(DType::F64)?)?
        .broadcast_add(&base)?
        .flatten_all()?
        .to_dtype(DType::U32)?;
    Ok((valid, flat))
}

/// [`device_output`]'s gradients, written out: for the output gradient
/// `go` (N × d), the gradients of q (N × d), of the gates (N × K) and of
/// the rows (|U| × 2d, each row's key then its value). A slot counts only
/// where its gated score is positive, as ReLU's gradient has it. Stock
/// tensor ops only, so every device runs it; the largest intermediate is
/// N × |U|.
pub fn device_output_grads(
    q: &Tensor,
    rows: &Tensor,
    map: &Tensor,
    gates: &Tensor,
    go: &Tensor,
    k: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, d) = q.dims2()?;
    let u = rows.dim(0)?;
    let dev = q.device();
    if u == 0 {
        return Ok((q.zeros_like()?, gates.zeros_like()?, rows.zeros_like()?));
    }
    let (rk, rv) = (rows.narrow(1, 0, d)?, rows.narrow(1, d, d)?);
    let (valid, flat) = slot_index(map, n, k, u, q.dtype())?;
    let gather =
        |m: &Tensor| -> Result<Tensor> { m.flatten_all()?.index_select(&flat, 0)?.reshape((n, k)) };
    let spread = |slots: &Tensor| -> Result<Tensor> {
        Tensor::zeros(n * u, slots.dtype(), dev)?
            .index_add(&flat, &slots.flatten_all()?, 0)?
            .reshape((n, u))
    };
    let s = gather(&q.matmul(&rk.t()?)?)?;
    let z = (gates * &s)?;
    let live = (z.gt(0f64)?.to_dtype(q.dtype())? * &valid)?;
    let a = (z.relu()? * &valid)?;
    // Values: Σ_t a_tj δ_t; the slots' activation gradients from δ·v_j.
    let dv = spread(&a)?.t()?.matmul(go)?;
    let dz = (gather(&go.matmul(&rv.t()?)?)? * live)?;
    let dgates = (&dz * &s)?;
    let ds = spread(&(dz * gates)?)?;
    let dq = ds.matmul(&rk)?;
    let dk = ds.t()?.matmul(q)?;
    Ok((dq, dgates, Tensor::cat(&[&dk, &dv], 1)?))
}

/// The composed adapter output over (q, gates), its value computed by
/// [`device_output`] in the rows' dtype, in a graph node whose backward
/// computes [`device_output_grads`] and hands the rows' gradient to
/// `route` at once. The rows are held by the node, not the graph, and
/// dropped as their gradient leaves: at most one layer's row gradients are
/// on the device at a time, and each layer's rows are freed as the
/// backward pass passes it. q and gates are widened or narrowed to the
/// rows' dtype for the compute and the result comes back in q's.
pub(super) fn streamed_rows(
    q: &Tensor,
    rows: Tensor,
    map: Tensor,
    gates: &Tensor,
    k: usize,
    route: GradRoute,
) -> Result<Tensor> {
    let (_, d) = q.dims2()?;
    let rd = rows.dtype();
    let value = device_output(
        &q.detach().to_dtype(rd)?,
        &rows.narrow(1, 0, d)?,
        &rows.narrow(1, d, d)?,
        &map,
        &gates.detach().to_dtype(rd)?,
        k,
    )?
    .to_dtype(q.dtype())?
    .contiguous()?;
    let op = Streamed {
        value: std::sync::Mutex::new(Some(value)),
        rows: std::sync::Mutex::new(Some(rows)),
        map,
        k,
        route,
    };
    q.apply_op2(gates, op)
}

struct Streamed {
    /// The forward's output, handed to the graph node once.
    value: std::sync::Mutex<Option<Tensor>>,
    /// |U| × 2d in the rows' dtype, until the backward pass takes them.
    rows: std::sync::Mutex<Option<Tensor>>,
    map: Tensor,
    k: usize,
    route: GradRoute,
}

fn take<T>(m: &std::sync::Mutex<Option<T>>) -> Option<T> {
    match m.lock() {
        Ok(mut g) => g.take(),
        Err(p) => p.into_inner().take(),
    }
}

impl Streamed {
    fn value(&self) -> Result<Tensor> {
        match take(&self.value) {
            Some(v) => Ok(v),
            None => candle_core::bail!("streamed MEFT op: its forward ran twice"),
        }
    }
}

impl candle_core::CustomOp2 for Streamed {
    fn name(&self) -> &'static str {
        "meft-streamed-rows"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let v = self.value()?;
        let (st, l) = v.storage_and_layout();
        match &*st {
            candle_core::Storage::Cpu(c) if l.is_contiguous() && l.start_offset() == 0 => {
                Ok((c.try_clone(l)?, l.shape().clone()))
            }
            _ => candle_core::bail!("streamed MEFT op: a contiguous CPU value expected"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let v = self.value()?;
        let (st, l) = v.storage_and_layout();
        match &*st {
            candle_core::Storage::Cuda(c) if l.is_contiguous() && l.start_offset() == 0 => {
                Ok((c.try_clone(l)?, l.shape().clone()))
            }
            _ => candle_core::bail!("streamed MEFT op: a contiguous CUDA value expected"),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        gates: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(rows) = take(&self.rows) else {
            candle_core::bail!("streamed MEFT op: its backward ran twice");
        };
        let rd = rows.dtype();
        let (dq, dg, drows) = device_output_grads(
            &q.detach().to_dtype(rd)?,
            &rows,
            &self.map,
            &gates.detach().to_dtype(rd)?,
            &grad.to_dtype(rd)?,
            self.k,
        )?;
        drop(rows);
        let r = &self.route;
        if r.to_host {
            r.crossed(&drows)?;
        } else {
            r.keep(drows);
        }
        // Only what depends on a trainable value takes a gradient (the first
        // adapter layer's input does not).
        let dq = q.track_op().then(|| dq.to_dtype(q.dtype())).transpose()?;
        let dg = gates
            .track_op()
            .then(|| dg.to_dtype(gates.dtype()))
            .transpose()?;
        Ok((dq, dg))
    }
}

/// The device computation of [`device_output`] as one fused CPU op over
/// (q, kv, gates): no N×K×d intermediates, and a hand-written backward that
/// produces exactly the gradients of the composed version (a slot counts only
/// where its gated score is positive).
pub fn fused_output(
    q: &Tensor,
    kv: &Tensor,
    gates: &Tensor,
    map: Arc<Vec<u32>>,
    k: usize,
) -> Result<Tensor> {
    fused_rows(q, kv, gates, map, k, None)
}

/// [`fused_output`], sending the rows' gradient along `route` (and none to
/// candle's gradient store) when given.
pub(super) fn fused_rows(
    q: &Tensor,
    kv: &Tensor,
    gates: &Tensor,
    map: Arc<Vec<u32>>,
    k: usize,
    route: Option<GradRoute>,
) -> Result<Tensor> {
    let (_, d) = q.dims2()?;
    let (u, _) = kv.dims2()?;
    let op = FusedRows {
        map,
        k,
        d,
        empty: u as u32,
        route,
    };
    q.contiguous()?
        .apply_op3(&kv.contiguous()?, &gates.contiguous()?, op)
}

#[derive(Clone)]
struct FusedRows {
    map: Arc<Vec<u32>>,
    k: usize,
    d: usize,
    empty: u32,
    route: Option<GradRoute>,
}

fn slice<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    crate::model::ops::contiguous(v, l, "fused MEFT op")
}

impl FusedRows {
    /// Token t's slot: (row id, its key+value row, q·k, gate, activation)
    /// when the slot holds a row whose gated score is positive.
    fn slot<'a, T: Lanes>(
        &self,
        qt: &[T],
        kv: &'a [T],
        g: &[T],
        t: usize,
        slot: usize,
    ) -> Option<(u32, &'a [T], T, T, T)> {
        let d = self.d;
        let j = self.map[t * self.k + slot];
        if j >= self.empty {
            return None;
        }
        let row = &kv[j as usize * 2 * d..(j as usize + 1) * 2 * d];
        let s = T::dot(qt, &row[..d]);
        let gate = g[t * self.k + slot];
        let a = gate * s;
        (a > T::zero()).then_some((j, row, s, gate, a))
    }

    fn forward<T: Lanes>(&self, q: &[T], kv: &[T], g: &[T]) -> Vec<T> {
        let (d, k) = (self.d, self.k);
        let n = q.len() / d;
        let mut out = vec![T::zero(); n * d];
        out.par_chunks_mut(d).enumerate().for_each(|(t, o)| {
            let qt = &q[t * d..(t + 1) * d];
            for slot in 0..k {
                if let Some((_, row, _, _, a)) = self.slot(qt, kv, g, t, slot) {
                    T::axpy(a, &row[d..], o);
                }
            }
        });
        out
    }

    /// Gradients of q, kv and gates given the output gradient `go`.
    fn backward<T: Lanes>(&self, q: &[T], kv: &[T], g: &[T], go: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (d, k) = (self.d, self.k);
        let n = q.len() / d;
        let mut dq = vec![T::zero(); n * d];
        let mut dg = vec![T::zero(); n * k];
        // Per token (in parallel): its query and gate gradients, and each
        // live slot's (row, activation, score gradient) for the rows.
        let mut live = vec![(self.empty, T::zero(), T::zero()); n * k];
        dq.par_chunks_mut(d)
            .zip(dg.par_chunks_mut(k))
            .zip(live.par_chunks_mut(k))
            .enumerate()
            .for_each(|(t, ((dqt, dgt), lt))| {
                let qt = &q[t * d..(t + 1) * d];
                let gt = &go[t * d..(t + 1) * d];
                for (slot, (dg_slot, l)) in dgt.iter_mut().zip(lt.iter_mut()).enumerate() {
                    let Some((j, row, s, gate, a)) = self.slot(qt, kv, g, t, slot) else {
                        continue;
                    };
                    let da = T::dot(gt, &row[d..]);
                    *dg_slot = da * s;
                    let ds = da * gate;
                    T::axpy(ds, &row[..d], dqt);
                    *l = (j, a, ds);
                }
            });
        // Each row's gradient sums its slots in token order, so it is the
        // same whichever thread computes it; rows go in parallel.
        let rows = kv.len() / (2 * d).max(1);
        let mut start = vec![0usize; rows + 1];
        for &(j, _, _) in &live {
            if j < self.empty {
                start[j as usize + 1] += 1;
            }
        }
        for r in 0..rows {
            start[r + 1] += start[r];
        }
        let mut fill = start.clone();
        let mut by_row = vec![(0usize, T::zero(), T::zero()); start[rows]];
        for (i, &(j, a, ds)) in live.iter().enumerate() {
            if j < self.empty {
                by_row[fill[j as usize]] = (i / k, a, ds);
                fill[j as usize] += 1;
            }
        }
        let mut dkv = vec![T::zero(); kv.len()];
        dkv.par_chunks_mut(2 * d).enumerate().for_each(|(j, row)| {
            let (dk, dv) = row.split_at_mut(d);
            for &(t, a, ds) in &by_row[start[j]..start[j + 1]] {
                T::axpy(ds, &q[t * d..(t + 1) * d], dk);
                T::axpy(a, &go[t * d..(t + 1) * d], dv);
            }
        });
        (dq, dkv, dg)
    }
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// The values of a contiguous CPU tensor, borrowed (no copy).
fn values<'a, T: candle_core::WithDType>(
    s: &'a candle_core::Storage,
    l: &Layout,
) -> Option<&'a [T]> {
    match s {
        candle_core::Storage::Cpu(c) => c.as_slice::<T>().ok().and_then(|v| slice(v, l).ok()),
        _ => None,
    }
}

impl FusedRows {
    fn backward_tensors<T>(
        &self,
        q: &Tensor,
        kv: &Tensor,
        g: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3>
    where
        T: Lanes + candle_core::WithDType,
    {
        let grad = grad.contiguous()?;
        let ((qs, ql), (ks, kl)) = (q.storage_and_layout(), kv.storage_and_layout());
        let ((gs, gl), (os, ol)) = (g.storage_and_layout(), grad.storage_and_layout());
        let (Some(qv), Some(kvv), Some(gv), Some(ov)) = (
            values::<T>(&qs, ql),
            values::<T>(&ks, kl),
            values::<T>(&gs, gl),
            values::<T>(&os, ol),
        ) else {
            candle_core::bail!("fused MEFT op: contiguous CPU inputs of one dtype expected");
        };
        let (a, b, c) = self.backward::<T>(qv, kvv, gv, ov);
        let dev = q.device();
        let dkv = match &self.route {
            Some(r) => {
                let b: Vec<f32> = b.into_iter().map(|x| x.to_f32().unwrap_or(0.0)).collect();
                r.arrived(b);
                None
            }
            None => Some(Tensor::from_vec(b, kv.shape(), dev)?),
        };
        // Only what depends on a trainable value takes a gradient (the first
        // adapter layer's input does not).
        let tracked = |t: &Tensor, v: Vec<T>| {
            t.track_op()
                .then(|| Tensor::from_vec(v, t.shape(), dev))
                .transpose()
        };
        Ok((tracked(q, a)?, dkv, tracked(g, c)?))
    }
}

impl CustomOp3 for FusedRows {
    fn name(&self) -> &'static str {
        "meft-fused-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, d) = l1.shape().dims2()?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(kv), CpuStorage::F32(g)) => {
                CpuStorage::F32(self.forward(slice(q, l1)?, slice(kv, l2)?, slice(g, l3)?))
            }
            (CpuStorage::F64(q), CpuStorage::F64(kv), CpuStorage::F64(g)) => {
                CpuStorage::F64(self.forward(slice(q, l1)?, slice(kv, l2)?, slice(g, l3)?))
            }
            _ => candle_core::bail!("fused MEFT op: f32 or f64 inputs of one dtype"),
        };
        Ok((out, Shape::from((n, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        match q.dtype() {
            DType::F64 => self.backward_tensors::<f64>(q, kv, g, grad),
            _ => self.backward_tensors::<f32>(q, kv, g, grad),
        }
    }
}
