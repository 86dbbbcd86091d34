//! MEFT for real: per-layer key/value rows live in a host store; for each
//! micro-batch the device routes tokens to experts, the host scores only the
//! probed experts' keys, keeps each token's top-K, and ships the union of kept
//! rows to the device; after backward only those rows' gradients come back.

use super::link::{Kind, Link};
use crate::model::Hooks;
use crate::optim::moments::{MomentDtype, MomentRows};
use crate::optim::{adamw_row, AdamWConfig};
use candle_core::{DType, Device, Result, Tensor, Var, D};
use rayon::prelude::*;
use std::sync::Arc;

pub use crate::config::{HostOptimizer, Routing};

#[derive(Debug, Clone, PartialEq)]
pub struct MeftShape {
    pub d: usize,
    pub neurons: usize,
    pub top_k: usize,
    pub experts: usize,
    pub probe: usize,
    pub routing: Routing,
}

impl MeftShape {
    pub fn keys_per_expert(&self) -> usize {
        self.neurons / self.experts.max(1)
    }
}

const NO_SLOT: u32 = u32::MAX;

/// One layer's rows in host memory, their gradient accumulators and their
/// AdamW moments (allocated per row on first update when lazy).
pub struct HostStore {
    pub m: usize,
    pub d: usize,
    /// M × d, row j is neuron j's key.
    pub keys: Vec<f32>,
    /// M × d, row j is neuron j's value.
    pub values: Vec<f32>,
    acc_slot: Vec<u32>,
    acc_rows: Vec<u32>,
    /// Per accumulator slot: the key row's gradient then the value row's (2·d).
    acc: Vec<f32>,
    mom_slot: Vec<u32>,
    /// Row of each moment slot, in slot order.
    mom_rows: Vec<u32>,
    /// Per moment slot: m and v of the key row, then of the value row.
    moments: MomentRows,
    /// Per-row update count for bias correction.
    pub row_steps: Vec<u32>,
}

impl HostStore {
    pub fn new(m: usize, d: usize, keys: Vec<f32>, values: Vec<f32>) -> Self {
        Self::with_moments(m, d, keys, values, MomentDtype::F32)
    }

    pub fn with_moments(
        m: usize,
        d: usize,
        keys: Vec<f32>,
        values: Vec<f32>,
        moments: MomentDtype,
    ) -> Self {
        Self {
            m,
            d,
            keys,
            values,
            acc_slot: vec![NO_SLOT; m],
            acc_rows: Vec::new(),
            acc: Vec::new(),
            mom_slot: vec![NO_SLOT; m],
            mom_rows: Vec::new(),
            moments: MomentRows::new(moments, d, m),
            row_steps: vec![0; m],
        }
    }

    pub fn key_row(&self, j: usize) -> &[f32] {
        &self.keys[j * self.d..(j + 1) * self.d]
    }

    /// Rows with an accumulated gradient since the last optimizer step.
    pub fn touched(&self) -> &[u32] {
        &self.acc_rows
    }

    /// Rows that have AdamW moments.
    pub fn rows_with_moments(&self) -> usize {
        self.mom_rows.len()
    }

    pub fn moment_dtype(&self) -> MomentDtype {
        self.moments.dtype()
    }

    /// Add gradients for `rows`: `kv` holds, per row, the key row's gradient
    /// then the value row's (rows.len() × 2d). When nothing is accumulated
    /// yet and the rows are distinct, the buffer itself becomes the
    /// accumulator, so one micro-batch per step costs no second copy.
    pub fn accumulate(&mut self, rows: &[u32], kv: Vec<f32>) {
        let w = 2 * self.d;
        debug_assert_eq!(kv.len(), rows.len() * w);
        if self.acc_rows.is_empty() && rows.windows(2).all(|p| p[0] < p[1]) {
            for (i, &r) in rows.iter().enumerate() {
                self.acc_slot[r as usize] = i as u32;
            }
            self.acc_rows = rows.to_vec();
            self.acc = kv;
            return;
        }
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            let mut slot = self.acc_slot[r];
            if slot == NO_SLOT {
                slot = self.acc_rows.len() as u32;
                self.acc_slot[r] = slot;
                self.acc_rows.push(r as u32);
                self.acc.resize(self.acc.len() + w, 0.0);
            }
            let s = slot as usize * w;
            for (a, g) in self.acc[s..s + w].iter_mut().zip(&kv[i * w..(i + 1) * w]) {
                *a += g;
            }
        }
    }

    pub fn accumulator_bytes(&self) -> u64 {
        4 * self.acc.len() as u64
    }

    pub fn moment_bytes(&self) -> u64 {
        self.moments.bytes()
    }

    /// Σ g² over the accumulated gradients (for global-norm clipping).
    pub fn grad_sq_norm(&self) -> f64 {
        self.acc.iter().map(|&g| g as f64 * g as f64).sum()
    }

    /// The accumulated gradient of row `r` (keys, values), if any.
    pub fn accumulated(&self, r: usize) -> Option<(&[f32], &[f32])> {
        let slot = self.acc_slot[r];
        (slot != NO_SLOT).then(|| {
            let s = slot as usize * 2 * self.d;
            self.acc[s..s + 2 * self.d].split_at(self.d)
        })
    }

    fn moment_slot(&mut self, r: usize) -> usize {
        if self.mom_slot[r] == NO_SLOT {
            self.mom_slot[r] = self.mom_rows.len() as u32;
            self.mom_rows.push(r as u32);
            self.moments.push_zero_row();
        }
        self.mom_slot[r] as usize
    }

    /// One AdamW step; returns how many rows were updated. Accumulators are
    /// cleared afterwards.
    pub fn step(&mut self, mode: HostOptimizer, lr: f64, scale: f32, cfg: &AdamWConfig) -> usize {
        let d = self.d;
        let zeros = vec![0f32; 2 * d];
        let rows: Vec<usize> = match mode {
            HostOptimizer::Lazy => self.acc_rows.iter().map(|&r| r as usize).collect(),
            HostOptimizer::Dense => (0..self.m).collect(),
        };
        let mut scratch = Vec::new();
        for &r in &rows {
            let slot = self.moment_slot(r);
            self.row_steps[r] += 1;
            let step = self.row_steps[r];
            let acc = self.acc_slot[r];
            let g = if acc == NO_SLOT {
                &zeros[..]
            } else {
                let s = acc as usize * 2 * d;
                &self.acc[s..s + 2 * d]
            };
            let (gk, gv) = g.split_at(d);
            let key = &mut self.keys[r * d..(r + 1) * d];
            let value = &mut self.values[r * d..(r + 1) * d];
            self.moments.update(slot, &mut scratch, |mom| {
                let (mk, rest) = mom.split_at_mut(d);
                let (vk, rest) = rest.split_at_mut(d);
                let (mv, vv) = rest.split_at_mut(d);
                adamw_row(key, gk, mk, vk, step, lr, scale, cfg);
                adamw_row(value, gv, mv, vv, step, lr, scale, cfg);
            });
        }
        self.clear_grads();
        rows.len()
    }

    pub fn clear_grads(&mut self) {
        for &r in &self.acc_rows {
            self.acc_slot[r as usize] = NO_SLOT;
        }
        self.acc_rows.clear();
        self.acc = Vec::new();
    }

    /// Which row each moment slot belongs to, and the slots' state as stored.
    pub fn moments(&self) -> (&[u32], &MomentRows) {
        (&self.mom_rows, &self.moments)
    }

    /// Replace the moments with `rows` (slot order) and their state.
    pub fn set_moments(&mut self, rows: Vec<u32>, moments: MomentRows) -> Result<()> {
        if moments.rows() != rows.len() {
            candle_core::bail!("{} moment rows for {} row ids", moments.rows(), rows.len());
        }
        let mut slot = vec![NO_SLOT; self.m];
        for (i, &r) in rows.iter().enumerate() {
            match slot.get_mut(r as usize) {
                Some(s) if *s == NO_SLOT => *s = i as u32,
                _ => candle_core::bail!("moment row id {r} is out of range or repeated"),
            }
        }
        self.mom_slot = slot;
        self.mom_rows = rows;
        self.moments = moments;
        Ok(())
    }
}

/// What the host selected for one micro-batch at one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Sorted distinct row ids kept by any token (the union U).
    pub union: Vec<u32>,
    /// N × K indices into `union`; `union.len()` marks an empty slot (fewer
    /// than K candidates), which the device maps to a zero row.
    pub map: Vec<u32>,
    /// The kept scores o_tj, N × K, aligned with `map` (0 for empty slots).
    pub scores: Vec<f32>,
}

/// Per token, the top-K rows by score among the candidates, on the host.
/// `gates` (N × P) and `experts` (N × P) describe Key-Experts routing; with
/// `Routing::Full` both are empty and every key is a candidate.
pub fn select(
    store: &HostStore,
    shape: &MeftShape,
    queries: &[f32],
    experts: &[u32],
    gates: &[f32],
) -> Selection {
    let d = shape.d;
    let n = queries.len() / d.max(1);
    let (k, p, kpe) = (shape.top_k, shape.probe, shape.keys_per_expert());
    let per_token: Vec<Vec<(u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|t| {
            let q = &queries[t * d..(t + 1) * d];
            let mut cand: Vec<(u32, f32)> = Vec::new();
            let score_rows = |lo: usize, hi: usize, gate: f32, cand: &mut Vec<(u32, f32)>| {
                for j in lo..hi {
                    let key = store.key_row(j);
                    let dot: f32 = q.iter().zip(key).map(|(a, b)| a * b).sum();
                    cand.push((j as u32, gate * dot));
                }
            };
            match shape.routing {
                Routing::KeyExperts => {
                    cand.reserve(p * kpe);
                    for i in 0..p {
                        let e = experts[t * p + i] as usize;
                        score_rows(e * kpe, (e + 1) * kpe, gates[t * p + i], &mut cand);
                    }
                }
                Routing::Full => {
                    cand.reserve(store.m);
                    score_rows(0, store.m, 1.0, &mut cand);
                }
            }
            if cand.len() > k {
                cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                cand.truncate(k);
            }
            cand
        })
        .collect();
    let mut union: Vec<u32> = per_token.iter().flatten().map(|c| c.0).collect();
    union.sort_unstable();
    union.dedup();
    let empty = union.len() as u32;
    let mut map = Vec::with_capacity(n * k);
    let mut scores = Vec::with_capacity(n * k);
    for kept in &per_token {
        for slot in 0..k {
            match kept.get(slot) {
                Some(&(j, o)) => {
                    map.push(union.binary_search(&j).unwrap_or(0) as u32);
                    scores.push(o);
                }
                None => {
                    map.push(empty);
                    scores.push(0.0);
                }
            }
        }
    }
    Selection { union, map, scores }
}

/// Rows `ids` of the store as one |U| × 2d buffer, each row's key then its
/// value, copied in parallel.
pub fn gather_kv(store: &HostStore, ids: &[u32]) -> Vec<f32> {
    let d = store.d.max(1);
    let mut out = vec![0f32; ids.len() * 2 * d];
    out.par_chunks_mut(2 * d)
        .zip(ids.par_iter())
        .for_each(|(dst, &j)| {
            let j = j as usize;
            dst[..d].copy_from_slice(&store.keys[j * d..(j + 1) * d]);
            dst[d..].copy_from_slice(&store.values[j * d..(j + 1) * d]);
        });
    out
}

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
    let dev = q.device();
    // Empty slots (map = |U|) point at row 0 and are masked out, so the rows
    // are used where they lie, never copied.
    let valid = keep(map.lt(u as u32)?.to_dtype(q.dtype())?.reshape((n, k))?)?;
    let base = keep(
        (Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F64)? * u as f64)?.reshape((n, 1))?,
    )?;
    // Slot (t, i) as a flat index t·|U| + map[t, i] into N × |U|.
    let flat = keep(
        (map.to_dtype(DType::F64)?.reshape((n, k))? * valid.to_dtype(DType::F64)?)?
            .broadcast_add(&base)?
            .flatten_all()?
            .to_dtype(DType::U32)?,
    )?;
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
        Tensor::zeros(n * u, a.dtype(), dev)?
            .index_add(&flat, &a.flatten_all()?, 0)?
            .reshape((n, u))?,
    )?;
    keep(spread.matmul(rows_v)?)
}

/// Everything kept from a forward pass for the matching backward.
struct Pending {
    layer_slot: usize,
    union: Vec<u32>,
    /// |U| × 2d, each row's key then its value, as a variable when the
    /// composed path's gradient lands in candle's gradient store; None when
    /// the fused kernel sends it to the [`RowGradSink`].
    rows: Option<Var>,
}

/// Row gradients that the fused kernel's backward pass hands to the host as
/// it computes them, by adapter layer slot, so they never sit in candle's
/// gradient store until the whole backward pass is done.
#[derive(Clone, Default)]
pub struct RowGradSink(Arc<std::sync::Mutex<Vec<SlotGrads>>>);

/// An adapter layer slot and its rows' gradients (|U| × 2d).
type SlotGrads = (usize, Vec<f32>);

impl RowGradSink {
    fn push(&self, slot: usize, g: Vec<f32>) {
        let mut v = match self.0.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        v.push((slot, g));
    }

    fn take(&self, slot: usize) -> Option<Vec<f32>> {
        let mut v = match self.0.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        let i = v.iter().position(|(s, _)| *s == slot)?;
        Some(v.swap_remove(i).1)
    }

    fn clear(&self) {
        match self.0.lock() {
            Ok(mut v) => v.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }
}

/// Where the fused kernel's backward sends a layer's row gradients.
#[derive(Clone)]
struct GradRoute {
    sink: RowGradSink,
    slot: usize,
    layer: usize,
    link: Arc<Link>,
}

/// Pick statistics over a window, for the activation histograms.
#[derive(Debug, Clone, Default)]
pub struct PickStats {
    pub counts: Vec<u32>,
    pub act_values: Vec<f32>,
    pub steps: u32,
}

pub struct MeftLayer {
    pub layer: usize,
    pub store: HostStore,
    /// E × d, on the device (absent for full routing).
    pub router: Option<Var>,
    pub stats: PickStats,
    last_union: usize,
}

impl MeftLayer {
    /// |U| of the last forward pass.
    pub fn last_union(&self) -> usize {
        self.last_union
    }
}

/// The MEFT adapter over a set of layers.
pub struct MeftAdapter {
    pub shape: MeftShape,
    pub layers: Vec<MeftLayer>,
    pub link: Arc<Link>,
    pub device: Device,
    pub host_optimizer: HostOptimizer,
    pending: Vec<Pending>,
    sink: RowGradSink,
    slot_of_layer: Vec<Option<usize>>,
    /// |U| and N·K per adapter layer for the last forward pass(es) since taken.
    pub union_log: Vec<(u64, u64)>,
    pub collect_stats: bool,
    /// Off for evaluation and generation: rows are gathered read-only and
    /// nothing is kept per forward pass, so decoding does not grow memory.
    pub training: bool,
}

impl MeftAdapter {
    /// Keys ~ N(0, 0.02²), values 0, router row e = 50 × mean of expert e's keys.
    pub fn new(
        shape: MeftShape,
        layers: &[usize],
        num_model_layers: usize,
        seed: u64,
        host_optimizer: HostOptimizer,
        moments: MomentDtype,
        device: &Device,
    ) -> Result<Self> {
        let (m, d) = (shape.neurons, shape.d);
        if shape.experts == 0 || m % shape.experts != 0 {
            candle_core::bail!("{} experts do not divide {m} neurons", shape.experts);
        }
        let mut slot_of_layer = vec![None; num_model_layers];
        let mut out = Vec::with_capacity(layers.len());
        for (slot, &l) in layers.iter().enumerate() {
            let mut rng =
                crate::rng::seeded(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(l as u64 + 1)));
            let keys = crate::rng::normal_vec(&mut rng, m * d, 0.02);
            let values = vec![0f32; m * d];
            let router = match shape.routing {
                Routing::KeyExperts => {
                    let kpe = shape.keys_per_expert();
                    let mut g = vec![0f32; shape.experts * d];
                    for e in 0..shape.experts {
                        for j in e * kpe..(e + 1) * kpe {
                            for c in 0..d {
                                g[e * d + c] += keys[j * d + c];
                            }
                        }
                        for c in 0..d {
                            g[e * d + c] *= 50.0 / kpe as f32;
                        }
                    }
                    Some(Var::from_tensor(&Tensor::from_vec(
                        g,
                        (shape.experts, d),
                        device,
                    )?)?)
                }
                Routing::Full => None,
            };
            if let Some(s) = slot_of_layer.get_mut(l) {
                *s = Some(slot);
            }
            out.push(MeftLayer {
                layer: l,
                store: HostStore::with_moments(m, d, keys, values, moments),
                router,
                stats: PickStats::default(),
                last_union: 0,
            });
        }
        Ok(Self {
            shape,
            layers: out,
            link: Arc::new(Link::new()),
            device: device.clone(),
            host_optimizer,
            pending: Vec::new(),
            sink: RowGradSink::default(),
            slot_of_layer,
            union_log: Vec::new(),
            collect_stats: false,
            training: true,
        })
    }

    /// Device-side trainable parameters (the routers).
    pub fn device_vars(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .filter_map(|l| {
                l.router
                    .as_ref()
                    .map(|r| (format!("meft.{}.router", l.layer), r.clone()))
            })
            .collect()
    }

    fn forward_layer(&mut self, slot: usize, u: &Tensor) -> Result<Tensor> {
        let (b, s, d) = u.dims3()?;
        let n = b * s;
        let shape = self.shape.clone();
        let k = shape.top_k;
        let layer = &self.layers[slot];
        let li = layer.layer;
        let q = u.reshape((n, d))?;
        let link = self.link.clone();
        let queries = link.to_host::<f32>(li, Kind::Queries, &q.detach())?;
        let training = self.training;
        let (logits, experts, gates) = match &layer.router {
            Some(router) => {
                let router = if training {
                    router.as_tensor().clone()
                } else {
                    router.as_tensor().detach()
                };
                let logits = q.matmul(&router.t()?)?;
                let top = logits
                    .detach()
                    .arg_sort_last_dim(false)?
                    .narrow(D::Minus1, 0, shape.probe)?
                    .contiguous()?;
                let gate_vals = logits.detach().gather(&top, D::Minus1)?;
                let experts = link.to_host::<u32>(li, Kind::Routing, &top)?;
                let gates = link.to_host::<f32>(li, Kind::Routing, &gate_vals)?;
                (Some(logits), experts, gates)
            }
            None => (None, Vec::new(), Vec::new()),
        };
        let sel = select(&layer.store, &shape, &queries, &experts, &gates);
        let u_len = sel.union.len();
        let kv = gather_kv(&layer.store, &sel.union);
        let dev = &self.device;
        let rows = link
            .to_device::<f32, _>(li, Kind::Rows, kv, (u_len, 2 * d), dev)?
            .to_dtype(u.dtype())?;
        let ids = link.to_device::<u32, _>(li, Kind::Ids, sel.union.clone(), u_len, dev)?;
        let map = link.to_device::<u32, _>(li, Kind::Map, sel.map.clone(), n * k, dev)?;
        // Only a training pass keeps the rows for a backward pass. The fused
        // kernel sends their gradient to the host itself; the composed path
        // needs them as a variable to find it in the gradient store.
        let fused = dev.is_cpu();
        let var = (training && !fused)
            .then(|| Var::from_tensor(&rows))
            .transpose()?;
        let rows = var.as_ref().map_or(rows, |v| v.as_tensor().clone());
        let gates = match &logits {
            Some(logits) => {
                // Expert of each union row (and 0 for the empty slot), then the
                // flat index t·E + e of each slot's gate in the logits.
                let kpe = shape.keys_per_expert() as f64;
                let e_of_row = (ids.to_dtype(DType::F64)? / kpe)?.floor()?;
                let e_of_row = Tensor::cat(&[&e_of_row, &Tensor::zeros(1, DType::F64, dev)?], 0)?;
                let e_slot = e_of_row.index_select(&map, 0)?.reshape((n, k))?;
                let t_base = (Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F64)?
                    * shape.experts as f64)?
                    .reshape((n, 1))?;
                let idx = e_slot
                    .broadcast_add(&t_base)?
                    .flatten_all()?
                    .to_dtype(DType::U32)?;
                logits
                    .flatten_all()?
                    .index_select(&idx, 0)?
                    .reshape((n, k))?
            }
            None => Tensor::ones((n, k), u.dtype(), dev)?,
        };
        let out = if fused {
            let route = training.then(|| GradRoute {
                sink: self.sink.clone(),
                slot,
                layer: li,
                link: link.clone(),
            });
            fused_rows(&q, &rows, &gates, Arc::new(sel.map.clone()), k, route)?
        } else {
            let rk = rows.narrow(1, 0, d)?;
            let rv = rows.narrow(1, d, d)?;
            device_output(&q, &rk, &rv, &map, &gates, k)?
        };
        let layer = &mut self.layers[slot];
        layer.last_union = u_len;
        if self.collect_stats {
            let st = &mut layer.stats;
            if st.counts.len() != shape.neurons {
                st.counts = vec![0; shape.neurons];
            }
            for (&m, &o) in sel.map.iter().zip(&sel.scores) {
                if (m as usize) < u_len {
                    st.counts[sel.union[m as usize] as usize] += 1;
                    if st.act_values.len() < 1 << 16 {
                        st.act_values.push(o.max(0.0));
                    }
                }
            }
        }
        if training {
            self.union_log.push((u_len as u64, (n * k) as u64));
            self.pending.push(Pending {
                layer_slot: slot,
                union: sel.union,
                rows: var,
            });
        }
        out.reshape((b, s, d))
    }

    /// After `loss.backward()`: bring the gathered rows' gradients back to
    /// the host (the fused kernel already did) and add them to the
    /// accumulators.
    pub fn collect_grads(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        for p in std::mem::take(&mut self.pending) {
            let layer = &mut self.layers[p.layer_slot];
            let li = layer.layer;
            let w = 2 * layer.store.d;
            let g = match &p.rows {
                Some(rows) => match grads.get(rows.as_tensor()) {
                    Some(g) => self.link.to_host::<f32>(li, Kind::Grads, g)?,
                    None => self
                        .link
                        .arrived(li, Kind::Grads, vec![0f32; p.union.len() * w]),
                },
                None => match self.sink.take(p.layer_slot) {
                    Some(g) => g,
                    // No gradient reached the layer (nothing depended on it).
                    None => self
                        .link
                        .arrived(li, Kind::Grads, vec![0f32; p.union.len() * w]),
                },
            };
            layer.store.accumulate(&p.union, g);
        }
        self.sink.clear();
        Ok(())
    }

    /// Drop what a forward pass kept (e.g. after an evaluation forward).
    pub fn discard_pending(&mut self) {
        self.pending.clear();
        self.sink.clear();
    }

    pub fn host_grad_sq_norm(&self) -> f64 {
        self.layers.iter().map(|l| l.store.grad_sq_norm()).sum()
    }

    /// Host AdamW on every layer's store; returns rows updated.
    pub fn host_step(&mut self, lr: f64, scale: f64, cfg: &AdamWConfig) -> usize {
        let mode = self.host_optimizer;
        self.layers
            .par_iter_mut()
            .map(|l| l.store.step(mode, lr, scale as f32, cfg))
            .sum()
    }

    pub fn store_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| (l.store.keys.len() + l.store.values.len()) as u64 * 4)
            .sum()
    }

    pub fn accumulator_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.store.accumulator_bytes())
            .sum()
    }

    pub fn moment_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.store.moment_bytes()).sum()
    }

    /// Forward passes kept for a backward that has not run yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

impl Hooks for MeftAdapter {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        match self.slot_of_layer.get(layer).copied().flatten() {
            Some(slot) => Ok(Some(self.forward_layer(slot, u)?)),
            None => Ok(None),
        }
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
fn fused_rows(
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

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use num_traits::Float;

fn slice<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    crate::model::ops::contiguous(v, l, "fused MEFT op")
}

impl FusedRows {
    /// Token t's slot: (row id, its key+value row, q·k, gate, activation)
    /// when the slot holds a row whose gated score is positive.
    fn slot<'a, T: Float>(
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
        let s = qt
            .iter()
            .zip(&row[..d])
            .fold(T::zero(), |a, (x, y)| a + *x * *y);
        let gate = g[t * self.k + slot];
        let a = gate * s;
        (a > T::zero()).then_some((j, row, s, gate, a))
    }

    fn forward<T: Float + Send + Sync>(&self, q: &[T], kv: &[T], g: &[T]) -> Vec<T> {
        let (d, k) = (self.d, self.k);
        let n = q.len() / d;
        let mut out = vec![T::zero(); n * d];
        out.par_chunks_mut(d).enumerate().for_each(|(t, o)| {
            let qt = &q[t * d..(t + 1) * d];
            for slot in 0..k {
                if let Some((_, row, _, _, a)) = self.slot(qt, kv, g, t, slot) {
                    for (oi, vi) in o.iter_mut().zip(&row[d..]) {
                        *oi = *oi + a * *vi;
                    }
                }
            }
        });
        out
    }

    /// Gradients of q, kv and gates given the output gradient `go`.
    fn backward<T: Float + Send + Sync>(
        &self,
        q: &[T],
        kv: &[T],
        g: &[T],
        go: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (d, k) = (self.d, self.k);
        let n = q.len() / d;
        let mut dq = vec![T::zero(); n * d];
        let mut dg = vec![T::zero(); n * k];
        // Per-token work is independent; the row gradients are summed after.
        let per_token: Vec<Vec<(u32, T, T)>> = dq
            .par_chunks_mut(d)
            .zip(dg.par_chunks_mut(k))
            .enumerate()
            .map(|(t, (dqt, dgt))| {
                let qt = &q[t * d..(t + 1) * d];
                let gt = &go[t * d..(t + 1) * d];
                let mut contrib = Vec::new();
                for (slot, dg_slot) in dgt.iter_mut().enumerate() {
                    let Some((j, row, s, gate, a)) = self.slot(qt, kv, g, t, slot) else {
                        continue;
                    };
                    let da = gt
                        .iter()
                        .zip(&row[d..])
                        .fold(T::zero(), |acc, (x, y)| acc + *x * *y);
                    *dg_slot = da * s;
                    let ds = da * gate;
                    for (dqi, ki) in dqt.iter_mut().zip(&row[..d]) {
                        *dqi = *dqi + ds * *ki;
                    }
                    contrib.push((j, a, ds));
                }
                contrib
            })
            .collect();
        let mut dkv = vec![T::zero(); kv.len()];
        for (t, contrib) in per_token.iter().enumerate() {
            let qt = &q[t * d..(t + 1) * d];
            let gt = &go[t * d..(t + 1) * d];
            for &(j, a, ds) in contrib {
                let row = &mut dkv[j as usize * 2 * d..(j as usize + 1) * 2 * d];
                let (dk, dv) = row.split_at_mut(d);
                for (x, y) in dk.iter_mut().zip(qt) {
                    *x = *x + ds * *y;
                }
                for (x, y) in dv.iter_mut().zip(gt) {
                    *x = *x + a * *y;
                }
            }
        }
        (dq, dkv, dg)
    }
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl FusedRows {
    fn backward_tensors<T>(
        &self,
        q: &Tensor,
        kv: &Tensor,
        g: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3>
    where
        T: Float + Send + Sync + candle_core::WithDType,
    {
        let host =
            |t: &Tensor| -> Result<Vec<T>> { t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1() };
        let (a, b, c) = self.backward::<T>(&host(q)?, &host(kv)?, &host(g)?, &host(grad)?);
        let dev = q.device();
        let dkv = match &self.route {
            Some(r) => {
                let b: Vec<f32> = b.into_iter().map(|x| x.to_f32().unwrap_or(0.0)).collect();
                r.sink.push(r.slot, r.link.arrived(r.layer, Kind::Grads, b));
                None
            }
            None => Some(Tensor::from_vec(b, kv.shape(), dev)?.to_dtype(kv.dtype())?),
        };
        Ok((
            Some(Tensor::from_vec(a, q.shape(), dev)?.to_dtype(q.dtype())?),
            dkv,
            Some(Tensor::from_vec(c, g.shape(), dev)?.to_dtype(g.dtype())?),
        ))
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
