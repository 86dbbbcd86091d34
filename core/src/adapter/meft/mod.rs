//! MEFT for real: per-layer key/value rows live in a host store; for each
//! micro-batch the device routes tokens to experts, the host scores only the
//! probed experts' keys, keeps each token's top-K, and ships the union of kept
//! rows to the device; after backward only those rows' gradients come back.

pub mod cache;
mod kernel;
pub mod lanes;
mod select;
mod state;
mod store;

pub use cache::{CacheCounts, RowCache};
pub use kernel::{device_output, device_output_traced, fused_output};
pub use select::{gather_kv, select, Selection};
pub use state::{StepStats, HISTOGRAM_WINDOW};
pub use store::HostStore;

use super::link::Link;
use crate::event::Kind;
use crate::model::Hooks;
use crate::optim::moments::MomentDtype;
use crate::optim::AdamWConfig;
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

/// Everything kept from a forward pass for the matching backward.
struct Pending {
    layer_slot: usize,
    union: Vec<u32>,
    /// |U| × 2d, each row's key then its value, as a variable when the
    /// composed path's gradient lands in candle's gradient store; None when
    /// the fused kernel sends it to the [`RowGradSink`].
    rows: Option<Var>,
    /// With the row cache: where the union's rows came from, and the cached
    /// positions' slots on the device.
    cached: Option<(cache::Placement, Tensor)>,
}

/// Row gradients that the fused kernel's backward pass hands to the host as
/// it computes them, by adapter layer slot, so they never sit in candle's
/// gradient store until the whole backward pass is done.
#[derive(Clone, Default)]
pub struct RowGradSink(Arc<std::sync::Mutex<Vec<SlotGrads>>>);

/// An adapter layer slot and its rows' gradients (|U| × 2d).
type SlotGrads = (usize, Vec<f32>);

/// A layer's row gradients where a backward pass left them.
enum RowGrad {
    Device(Tensor),
    Host(Vec<f32>),
}

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

/// Where the fused kernel's backward sends a layer's row gradients (they
/// are counted as they are collected).
#[derive(Clone)]
struct GradRoute {
    sink: RowGradSink,
    slot: usize,
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
    /// One device row cache per adapter layer while training (empty: off).
    caches: Vec<RowCache>,
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
            caches: Vec::new(),
        })
    }

    /// A device row cache of `rows` rows per adapter layer (at most M; 0
    /// turns it off) across the micro-batches of each optimizer step.
    pub fn with_row_cache(mut self, rows: usize) -> Self {
        let rows = rows.min(self.shape.neurons);
        self.caches = match rows {
            0 => Vec::new(),
            _ => (0..self.layers.len())
                .map(|_| RowCache::new(rows, self.shape.d))
                .collect(),
        };
        self
    }

    /// Rows per layer the row cache holds (0: off).
    pub fn row_cache_rows(&self) -> usize {
        self.caches.first().map_or(0, |c| c.capacity())
    }

    /// Bytes the row caches hold on the device.
    pub fn row_cache_bytes(&self) -> u64 {
        self.caches.iter().map(|c| c.device_bytes()).sum()
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
        let dev = &self.device;
        let (rows, cached) = match self.caches.get_mut(slot).filter(|_| training) {
            Some(cache) => {
                // Only rows the cache does not hold cross; the device puts
                // the union together from the cache and what crossed.
                let p = cache.place(&sel.union);
                let miss: Vec<u32> = p.miss_pos.iter().map(|&i| sel.union[i as usize]).collect();
                let kv = gather_kv(&layer.store, &miss);
                let crossed =
                    link.to_device::<f32, _>(li, Kind::Rows, kv, (miss.len(), 2 * d), dev)?;
                let (slots, order) = cache::index_vectors(&p, u_len);
                let n_slots = slots.len();
                let slots = link.to_device::<u32, _>(li, Kind::Ids, slots, n_slots, dev)?;
                let order = link.to_device::<u32, _>(li, Kind::Ids, order, u_len, dev)?;
                let rows = cache.assemble(&p, &crossed, &slots, &order)?;
                (rows, Some((p, slots)))
            }
            None => {
                let kv = gather_kv(&layer.store, &sel.union);
                let rows = link.to_device::<f32, _>(li, Kind::Rows, kv, (u_len, 2 * d), dev)?;
                (rows, None)
            }
        };
        let rows = rows.to_dtype(u.dtype())?;
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
            // On the CPU the device is the host: each slot's flat index
            // t·E + e into the logits comes straight from the map.
            Some(logits) if fused => {
                let kpe = shape.keys_per_expert() as u32;
                let e = shape.experts as u32;
                let idx: Vec<u32> = sel
                    .map
                    .iter()
                    .enumerate()
                    .map(|(i, &m)| {
                        let row = sel.union.get(m as usize).copied().unwrap_or(0);
                        (i / k) as u32 * e + row / kpe
                    })
                    .collect();
                let idx = Tensor::from_vec(idx, n * k, dev)?;
                logits
                    .flatten_all()?
                    .index_select(&idx, 0)?
                    .reshape((n, k))?
            }
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
            });
            kernel::fused_rows(&q, &rows, &gates, Arc::new(sel.map.clone()), k, route)?
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
                cached,
            });
        }
        out.reshape((b, s, d))
    }

    /// After `loss.backward()`: bring the gathered rows' gradients back to
    /// the host and add them to the accumulators; with the row cache, the
    /// cached rows' gradients add up on the device until
    /// [`MeftAdapter::end_micro_batches`].
    pub fn collect_grads(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        for p in std::mem::take(&mut self.pending) {
            let layer = &mut self.layers[p.layer_slot];
            let li = layer.layer;
            let w = 2 * layer.store.d;
            // The rows' gradient where the backward pass left it: in the
            // gradient store (composed path) or handed to the host by the
            // fused kernel; zero when nothing depended on the rows.
            let g = match &p.rows {
                Some(rows) => grads.get(rows.as_tensor()).cloned().map(RowGrad::Device),
                None => self.sink.take(p.layer_slot).map(RowGrad::Host),
            };
            let Some((placement, slots)) = p.cached else {
                let g = match g {
                    Some(RowGrad::Device(t)) => self.link.to_host::<f32>(li, Kind::Grads, &t)?,
                    Some(RowGrad::Host(v)) => self.link.arrived(li, Kind::Grads, v),
                    None => self
                        .link
                        .arrived(li, Kind::Grads, vec![0f32; p.union.len() * w]),
                };
                layer.store.accumulate(&p.union, g);
                continue;
            };
            let dev = &self.device;
            let g = match g {
                Some(RowGrad::Device(t)) => t.to_dtype(DType::F32)?,
                Some(RowGrad::Host(v)) => Tensor::from_vec(v, (p.union.len(), w), dev)?,
                None => Tensor::zeros((p.union.len(), w), DType::F32, dev)?,
            };
            let pick = |kind: Kind, pos: &[u32]| -> Result<Tensor> {
                let idx = self
                    .link
                    .to_device::<u32, _>(li, kind, pos.to_vec(), pos.len(), dev)?;
                g.index_select(&idx, 0)
            };
            if !placement.cached_pos.is_empty() {
                let gc = pick(Kind::Ids, &placement.cached_pos)?;
                self.caches[p.layer_slot].add_grads(&slots, &gc)?;
            }
            let direct = placement.direct_pos();
            if !direct.is_empty() {
                let gd = pick(Kind::Ids, direct)?;
                let gd = self.link.to_host::<f32>(li, Kind::Grads, &gd)?;
                let rows: Vec<u32> = direct.iter().map(|&i| p.union[i as usize]).collect();
                layer.store.accumulate(&rows, gd);
            }
        }
        self.sink.clear();
        Ok(())
    }

    /// After a step's last micro-batch: the row caches' summed gradients
    /// cross to the host once and join the accumulators, and the caches
    /// empty (the host optimizer is about to change the rows).
    pub fn end_micro_batches(&mut self) -> Result<()> {
        for (slot, cache) in self.caches.iter_mut().enumerate() {
            if let Some((ids, g)) = cache.drain()? {
                let layer = &mut self.layers[slot];
                let g = self.link.to_host::<f32>(layer.layer, Kind::Grads, &g)?;
                layer.store.accumulate(&ids, g);
            }
        }
        Ok(())
    }

    /// The row caches' hits and misses since the last call (None when off).
    pub fn take_cache_counts(&mut self) -> Option<CacheCounts> {
        if self.caches.is_empty() {
            return None;
        }
        let mut c = CacheCounts::default();
        for cache in &mut self.caches {
            c.add(std::mem::take(&mut cache.counts));
        }
        Some(c)
    }

    /// Drop what a forward pass kept (e.g. after an evaluation forward),
    /// and whatever the row caches hold.
    pub fn discard_pending(&mut self) {
        self.pending.clear();
        self.sink.clear();
        for c in &mut self.caches {
            c.clear();
        }
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
