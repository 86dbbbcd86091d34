//! MEFT for real: per-layer key/value rows live in a host store; for each
//! micro-batch the device routes tokens to experts, the host scores only the
//! probed experts' keys, keeps each token's top-K, and ships the union of kept
//! rows to the device; after backward only those rows' gradients come back.

pub mod cache;
mod kernel;
pub mod lanes;
mod overlap;
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
    /// Where the store is while a host worker has it.
    away: Option<overlap::Away>,
    /// Rows a worker picked for this layer's next forward pass, from an
    /// earlier layer's input.
    preselected: Option<Selection>,
    /// A worker failed on the store: the layer cannot go on.
    failed: bool,
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
    /// Select layer i's rows from layer i − p's input (0: off).
    pre_retrieval: usize,
    /// Run the host optimizer's step on a worker, behind the next forward.
    async_host: bool,
    /// The host workers, when either overlap knob is on.
    workers: Option<overlap::Workers>,
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
                away: None,
                preselected: None,
                failed: false,
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
            pre_retrieval: 0,
            async_host: false,
            workers: None,
        })
    }

    /// The paper's overlap: select each layer's rows from the FFN input
    /// `pre_retrieval` layers earlier (0: off) while the device computes,
    /// and run the host optimizer behind the next forward pass
    /// (`async_host`). See [`overlap`](self::overlap).
    pub fn with_overlap(mut self, pre_retrieval: usize, async_host: bool) -> Self {
        self.pre_retrieval = pre_retrieval;
        self.async_host = async_host;
        self.workers = (pre_retrieval > 0 || async_host).then(overlap::Workers::start);
        self
    }

    /// Wait until every layer's store is back from the host workers (the
    /// optimizer's step done), so that it can be read as a whole.
    pub fn settle(&mut self) -> Result<()> {
        for l in &mut self.layers {
            l.settle()?;
        }
        Ok(())
    }

    /// Forget rows picked early for a forward pass that did not reach
    /// their layer.
    fn drop_preselections(&mut self) -> Result<()> {
        for l in &mut self.layers {
            if l.selecting() || l.failed {
                l.settle()?;
            }
            l.preselected = None;
        }
        Ok(())
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

    /// Adapter layer `slot`'s router logits for `q` (N × E; None with full
    /// routing), as part of the graph when `grad`.
    fn logits(&self, slot: usize, q: &Tensor, grad: bool) -> Result<Option<Tensor>> {
        let Some(router) = &self.layers[slot].router else {
            return Ok(None);
        };
        let router = if grad {
            router.as_tensor().clone()
        } else {
            router.as_tensor().detach()
        };
        Ok(Some(q.matmul(&router.t()?)?))
    }

    /// The router's logits for `q` at adapter layer `slot` and, per token,
    /// its `probe` best experts and their gates, brought to the host (empty
    /// with full routing).
    #[allow(clippy::type_complexity)]
    fn route(
        &self,
        slot: usize,
        q: &Tensor,
        grad: bool,
    ) -> Result<(Option<Tensor>, Vec<u32>, Vec<f32>)> {
        let Some(logits) = self.logits(slot, q, grad)? else {
            return Ok((None, Vec::new(), Vec::new()));
        };
        let li = self.layers[slot].layer;
        let top = logits
            .detach()
            .arg_sort_last_dim(false)?
            .narrow(D::Minus1, 0, self.shape.probe)?
            .contiguous()?;
        let gate_vals = logits.detach().gather(&top, D::Minus1)?;
        let experts = self.link.to_host::<u32>(li, Kind::Routing, &top)?;
        let gates = self.link.to_host::<f32>(li, Kind::Routing, &gate_vals)?;
        Ok((Some(logits), experts, gates))
    }

    /// Start selecting adapter layer `slot`'s rows for the current forward
    /// pass from an earlier layer's queries `q` (N × d, already on the host
    /// as `queries`), on the selection worker.
    fn preselect(&mut self, slot: usize, q: &Tensor, queries: Vec<f32>) -> Result<()> {
        let (_, experts, gates) = self.route(slot, &q.detach(), false)?;
        let shape = self.shape.clone();
        let Some(workers) = &self.workers else {
            return Ok(());
        };
        // The selection follows the optimizer's update of the layer if that
        // is still running: nothing here waits for it.
        let layer = &mut self.layers[slot];
        if layer.failed {
            // Says why: a worker failed on these rows before.
            layer.settle()?;
        }
        layer.preselected = None;
        layer.send_away(&workers.select, true, move |store| {
            Some(select(store, &shape, &queries, &experts, &gates))
        });
        Ok(())
    }

    /// Adapter layer `slot` over the FFN input `u`; `host_q` is `u` already
    /// on the host, when it crossed for an early selection.
    fn forward_layer(
        &mut self,
        slot: usize,
        u: &Tensor,
        host_q: Option<Vec<f32>>,
    ) -> Result<Tensor> {
        let (b, s, d) = u.dims3()?;
        let n = b * s;
        let shape = self.shape.clone();
        let k = shape.top_k;
        self.layers[slot].settle()?;
        // Rows picked early are for this forward pass when their count fits.
        let early = self.layers[slot]
            .preselected
            .take()
            .filter(|p| p.map.len() == n * k);
        let li = self.layers[slot].layer;
        let q = u.reshape((n, d))?;
        let link = self.link.clone();
        let training = self.training;
        let picked_early = early.is_some();
        let (logits, sel) = match early {
            // Picked by an earlier layer's input: the gates are this one's.
            Some(sel) => (self.logits(slot, &q, training)?, sel),
            None => {
                let queries = match host_q {
                    Some(v) => v,
                    None => link.to_host::<f32>(li, Kind::Queries, &q.detach())?,
                };
                let (logits, experts, gates) = self.route(slot, &q, training)?;
                let sel = select(&self.layers[slot].store, &shape, &queries, &experts, &gates);
                (logits, sel)
            }
        };
        let layer = &self.layers[slot];
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
                    // Rows picked early were scored with an earlier
                    // layer's input: those scores are not this layer's
                    // activations, so only the picks are counted.
                    if !picked_early && st.act_values.len() < 1 << 16 {
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
            layer.settle()?;
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
                layer.settle()?;
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
    /// rows picked early, and whatever the row caches hold.
    pub fn discard_pending(&mut self) -> Result<()> {
        self.pending.clear();
        self.sink.clear();
        for c in &mut self.caches {
            c.clear();
        }
        self.drop_preselections()
    }

    /// Σ g² of the accumulated row gradients, layer by layer.
    pub fn host_grad_sq_norm(&mut self) -> Result<f64> {
        self.settle()?;
        Ok(self.layers.iter().map(|l| l.store.grad_sq_norm()).sum())
    }

    /// Host AdamW on every layer's store; returns rows updated. With
    /// `async_host_optim` the updates run on the optimizer worker, layer by
    /// layer, and each layer's next forward pass waits for its own.
    pub fn host_step(&mut self, lr: f64, scale: f64, cfg: &AdamWConfig) -> Result<usize> {
        let mode = self.host_optimizer;
        self.settle()?;
        let Some(workers) = self.workers.as_ref().filter(|_| self.async_host) else {
            return Ok(self
                .layers
                .par_iter_mut()
                .map(|l| l.store.step(mode, lr, scale as f32, cfg))
                .sum());
        };
        // In the order the next forward pass reaches the layers.
        let mut order: Vec<usize> = (0..self.layers.len()).collect();
        order.sort_by_key(|&i| self.layers[i].layer);
        let mut rows = 0;
        for i in order {
            let l = &mut self.layers[i];
            rows += l.store.prepare_step(mode);
            let cfg = *cfg;
            l.send_away(&workers.optim, false, move |store| {
                store.step(mode, lr, scale as f32, &cfg);
                None
            });
        }
        Ok(rows)
    }

    pub fn store_bytes(&self) -> u64 {
        (self.layers.len() * 2 * self.shape.neurons * self.shape.d) as u64 * 4
    }

    pub fn accumulator_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.store.accumulator_bytes())
            .sum()
    }

    pub fn moment_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.moment_bytes()).sum()
    }

    /// Forward passes kept for a backward that has not run yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

impl Hooks for MeftAdapter {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        let slot_at = |l: usize| self.slot_of_layer.get(l).copied().flatten();
        let own = slot_at(layer);
        let ahead = match self.pre_retrieval {
            0 => None,
            p => slot_at(layer + p),
        };
        let mut host_q = None;
        if self.pre_retrieval > 0 {
            if layer == 0 {
                // A new forward pass: rows picked early for an earlier one
                // that stopped short are not this one's.
                self.drop_preselections()?;
            }
            if let Some(target) = ahead {
                // This layer's input crosses once, for its own selection
                // and the early one.
                let (b, s, d) = u.dims3()?;
                let q = u.reshape((b * s, d))?;
                let li = self.layers[own.unwrap_or(target)].layer;
                let queries = self.link.to_host::<f32>(li, Kind::Queries, &q.detach())?;
                self.preselect(target, &q, queries.clone())?;
                host_q = Some(queries);
            }
        }
        match own {
            Some(slot) => Ok(Some(self.forward_layer(slot, u, host_q)?)),
            None => Ok(None),
        }
    }
}
