//! MEFT for real: per-layer key/value rows live in a host store; for each
//! micro-batch the device routes tokens to experts, the host scores only the
//! probed experts' keys, keeps each token's top-K, and ships the union of kept
//! rows to the device; after backward only those rows' gradients come back.

pub mod cache;
mod kernel;
pub mod lanes;
mod overlap;
pub mod rows;
mod select;
mod state;
mod store;

pub use cache::{CacheCounts, RowCache};
pub use kernel::{device_output, device_output_grads, device_output_traced, fused_output};
pub use rows::HostRows;
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
    /// With the row cache: where the union's rows came from, and the cached
    /// positions' slots on the device.
    cached: Option<(cache::Placement, Tensor)>,
}

/// Row gradients that a layer's backward pass hands on as it computes
/// them, by adapter layer slot, so they never sit in candle's gradient
/// store until the whole backward pass is done: on the host already (the
/// fused kernel's, or the composed path's once they crossed), or on the
/// device for the row cache to sum.
#[derive(Clone, Default)]
pub struct RowGradSink(Arc<std::sync::Mutex<Vec<SlotGrads>>>);

/// An adapter layer slot and its rows' gradients (|U| × 2d).
type SlotGrads = (usize, RowGrad);

/// A layer's row gradients where a backward pass left them.
enum RowGrad {
    /// On the device, f32 or the rows' dtype.
    Device(Tensor),
    /// On the host in f32, counted as they crossed.
    Host(Vec<f32>),
}

impl RowGradSink {
    fn push(&self, slot: usize, g: RowGrad) {
        let mut v = match self.0.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        v.push((slot, g));
    }

    fn take(&self, slot: usize) -> Option<RowGrad> {
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

/// Where a layer's backward pass sends its rows' gradients, counting what
/// crosses to the host in the rows' dtype on the device.
#[derive(Clone)]
struct GradRoute {
    sink: RowGradSink,
    slot: usize,
    layer: usize,
    link: Arc<Link>,
    row_dtype: DType,
    /// The gradients cross to the host at once; false with a row cache,
    /// whose rows' gradients sum on the device until the step's
    /// micro-batches end.
    to_host: bool,
}

impl GradRoute {
    /// Gradients the fused kernel computed straight into host memory (f32),
    /// as they would cross in the rows' dtype (counted when they cross now).
    fn arrived(&self, mut g: Vec<f32>) {
        match self.row_dtype {
            DType::BF16 => g
                .par_iter_mut()
                .for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
            DType::F16 => g
                .par_iter_mut()
                .for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
            _ => {}
        }
        if self.to_host {
            let bytes = (g.len() * self.row_dtype.size_in_bytes()) as u64;
            self.link.count(self.layer, Kind::Grads, bytes);
        }
        self.sink.push(self.slot, RowGrad::Host(g));
    }

    /// Device gradients copied to the host now, in their own dtype.
    fn crossed(&self, g: &Tensor) -> Result<()> {
        let g = grads_to_host(&self.link, self.layer, g)?;
        self.sink.push(self.slot, RowGrad::Host(g));
        Ok(())
    }

    /// Device gradients left on the device (for the row cache).
    fn keep(&self, g: Tensor) {
        self.sink.push(self.slot, RowGrad::Device(g));
    }
}

/// Half-precision values as f32, in parallel.
fn widen<T: num_traits::ToPrimitive + Sync>(v: &[T]) -> Vec<f32> {
    v.par_iter().map(|x| x.to_f32().unwrap_or(0.0)).collect()
}

/// A device tensor of row gradients brought to the host in its own dtype
/// (counted by the Link at that size) and widened to f32 there.
fn grads_to_host(link: &Link, layer: usize, g: &Tensor) -> Result<Vec<f32>> {
    Ok(match g.dtype() {
        DType::BF16 => widen(&link.to_host::<half::bf16>(layer, Kind::Grads, g)?),
        DType::F16 => widen(&link.to_host::<half::f16>(layer, Kind::Grads, g)?),
        _ => link.to_host::<f32>(layer, Kind::Grads, g)?,
    })
}

/// Host rows (f32) copied to the device in `dtype`: narrowed on the host
/// first, so what crosses, and what the Link counts, is the smaller size.
fn rows_to_device(
    link: &Link,
    layer: usize,
    kv: Vec<f32>,
    shape: (usize, usize),
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    match dtype {
        DType::BF16 => {
            let h: Vec<half::bf16> = kv.par_iter().map(|&x| half::bf16::from_f32(x)).collect();
            link.to_device(layer, Kind::Rows, h, shape, dev)
        }
        DType::F16 => {
            let h: Vec<half::f16> = kv.par_iter().map(|&x| half::f16::from_f32(x)).collect();
            link.to_device(layer, Kind::Rows, h, shape, dev)
        }
        _ => link.to_device::<f32, _>(layer, Kind::Rows, kv, shape, dev),
    }
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
    /// (adapter layer slot, |U|, N·K) of each layer's forward pass since
    /// taken, in the order the passes reached the layers.
    pub union_log: Vec<(usize, u64, u64)>,
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
    /// The composed kernel computes the device half (else the fused CPU one).
    composed: bool,
    /// The gathered rows' dtype on the device: F32 (the compute then runs
    /// in the FFN input's dtype), BF16 or F16.
    row_dtype: DType,
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
        let rows = |l: usize| {
            let mut rng =
                crate::rng::seeded(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(l as u64 + 1)));
            let keys = crate::rng::normal_vec(&mut rng, m * d, 0.02);
            Ok((keys.into(), vec![0f32; m * d].into()))
        };
        let mut a = Self::build(
            shape,
            layers,
            num_model_layers,
            host_optimizer,
            moments,
            device,
            rows,
        )?;
        a.seed_routers()?;
        Ok(a)
    }

    /// The adapter for decoding only, its rows mapped from `path` (a
    /// checkpoint or a `meft` export) as `meft.<layer>.keys` and `.values`
    /// (each M × d f32), its routers zero until restored from the same file.
    pub fn mapped(
        shape: MeftShape,
        layers: &[usize],
        num_model_layers: usize,
        device: &Device,
        file: &crate::checkpoint::CheckpointReader,
    ) -> anyhow::Result<Self> {
        let (m, d) = (shape.neurons, shape.d);
        let one = |name: String| -> anyhow::Result<HostRows> {
            let info = file.check::<f32>(&name, &[Some(m), Some(d)])?;
            let offset = file.data_start() + info.start;
            HostRows::map(file.path(), offset, m * d)
                .map_err(|e| anyhow::anyhow!("{}: tensor {name}: {e}", file.path().display()))
        };
        let rows = |l: usize| {
            let key = one(format!("meft.{l}.keys"));
            key.and_then(|k| Ok((k, one(format!("meft.{l}.values"))?)))
                .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
        };
        let mut a = Self::build(
            shape,
            layers,
            num_model_layers,
            HostOptimizer::Lazy,
            MomentDtype::F32,
            device,
            rows,
        )?;
        a.training = false;
        Ok(a)
    }

    /// Router row e = 50 × the mean of expert e's keys.
    fn seed_routers(&mut self) -> Result<()> {
        if self.shape.routing != Routing::KeyExperts {
            return Ok(());
        }
        let (d, experts) = (self.shape.d, self.shape.experts);
        let kpe = self.shape.keys_per_expert();
        for l in &mut self.layers {
            let keys = &l.store.keys;
            let mut g = vec![0f32; experts * d];
            for e in 0..experts {
                for j in e * kpe..(e + 1) * kpe {
                    for c in 0..d {
                        g[e * d + c] += keys[j * d + c];
                    }
                }
                for c in 0..d {
                    g[e * d + c] *= 50.0 / kpe as f32;
                }
            }
            if let Some(r) = &l.router {
                r.set(&Tensor::from_vec(g, (experts, d), &self.device)?)?;
            }
        }
        Ok(())
    }

    fn build(
        shape: MeftShape,
        layers: &[usize],
        num_model_layers: usize,
        host_optimizer: HostOptimizer,
        moments: MomentDtype,
        device: &Device,
        mut rows: impl FnMut(usize) -> Result<(HostRows, HostRows)>,
    ) -> Result<Self> {
        let (m, d) = (shape.neurons, shape.d);
        if shape.experts == 0 || m % shape.experts != 0 {
            candle_core::bail!("{} experts do not divide {m} neurons", shape.experts);
        }
        let mut slot_of_layer = vec![None; num_model_layers];
        let mut out = Vec::with_capacity(layers.len());
        for (slot, &l) in layers.iter().enumerate() {
            let (keys, values) = rows(l)?;
            let router = match shape.routing {
                Routing::KeyExperts => Some(Var::zeros((shape.experts, d), DType::F32, device)?),
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
            composed: !device.is_cpu(),
            row_dtype: DType::F32,
        })
    }

    /// The device path: the composed kernel (any device) or the fused one
    /// (the CPU only), and the dtype the gathered rows cross and live in on
    /// the device (F32, BF16 or F16; the host store stays f32).
    pub fn with_device_path(mut self, composed: bool, row_dtype: DType) -> Result<Self> {
        if !composed && !self.device.is_cpu() {
            candle_core::bail!("method.meft.kernel: the fused kernel runs on the CPU only");
        }
        if !matches!(row_dtype, DType::F32 | DType::BF16 | DType::F16) {
            candle_core::bail!("method.meft.row_dtype: f32, bf16 or f16, not {row_dtype:?}");
        }
        self.composed = composed;
        self.row_dtype = row_dtype;
        Ok(self)
    }

    /// Whether the composed kernel computes the device half.
    pub fn composed(&self) -> bool {
        self.composed
    }

    /// The gathered rows' dtype on the device.
    pub fn row_dtype(&self) -> DType {
        self.row_dtype
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
        let rd = self.row_dtype;
        let (rows, cached) = match self.caches.get_mut(slot).filter(|_| training) {
            Some(cache) => {
                // Only rows the cache does not hold cross; the device puts
                // the union together from the cache and what crossed.
                let p = cache.place(&sel.union);
                let miss: Vec<u32> = p.miss_pos.iter().map(|&i| sel.union[i as usize]).collect();
                let kv = gather_kv(&layer.store, &miss);
                let crossed = rows_to_device(&link, li, kv, (miss.len(), 2 * d), rd, dev)?;
                let (slots, order) = cache::index_vectors(&p, u_len);
                let n_slots = slots.len();
                let slots = link.to_device::<u32, _>(li, Kind::Ids, slots, n_slots, dev)?;
                let order = link.to_device::<u32, _>(li, Kind::Ids, order, u_len, dev)?;
                let rows = cache.assemble(&p, &crossed, &slots, &order)?;
                (rows, Some((p, slots)))
            }
            None => {
                let kv = gather_kv(&layer.store, &sel.union);
                let rows = rows_to_device(&link, li, kv, (u_len, 2 * d), rd, dev)?;
                (rows, None)
            }
        };
        // Half-precision rows are the compute's dtype; f32 rows follow the
        // input's (f32, or f64 in tests). The fused kernel computes in the
        // input's dtype over rows that crossed in theirs.
        let fused = !self.composed;
        let compute = match rd {
            DType::F32 => u.dtype(),
            _ if fused => u.dtype(),
            half => half,
        };
        let rows = rows.to_dtype(compute)?;
        let ids = link.to_device::<u32, _>(li, Kind::Ids, sel.union.clone(), u_len, dev)?;
        let map = link.to_device::<u32, _>(li, Kind::Map, sel.map.clone(), n * k, dev)?;
        // Only a training pass sends the rows' gradient anywhere; either
        // kernel hands it on as its backward pass makes it.
        let route = training.then(|| GradRoute {
            sink: self.sink.clone(),
            slot,
            layer: li,
            link: link.clone(),
            row_dtype: rd,
            to_host: cached.is_none(),
        });
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
                        // m = |U| is an empty slot: its row is zero, so the
                        // gate it takes (expert 0's) scales nothing.
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
            // Full routing has no router: the gates are ones. While
            // training they are a variable, so the kernel's node is part of
            // the graph even where nothing before it is (the first adapter
            // layer's input depends on no trainable value): its backward
            // pass is what brings the rows' gradients.
            None if training => Var::ones((n, k), u.dtype(), dev)?.as_tensor().clone(),
            None => Tensor::ones((n, k), u.dtype(), dev)?,
        };
        let out = match route {
            _ if fused => {
                kernel::fused_rows(&q, &rows, &gates, Arc::new(sel.map.clone()), k, route)?
            }
            Some(route) => kernel::streamed_rows(&q, rows, map, &gates, k, route)?,
            None => {
                let (qc, gc) = (q.to_dtype(compute)?, gates.to_dtype(compute)?);
                let rk = rows.narrow(1, 0, d)?;
                let rv = rows.narrow(1, d, d)?;
                device_output(&qc, &rk, &rv, &map, &gc, k)?.to_dtype(q.dtype())?
            }
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
            self.union_log.push((slot, u_len as u64, (n * k) as u64));
            self.pending.push(Pending {
                layer_slot: slot,
                union: sel.union,
                cached,
            });
        }
        out.reshape((b, s, d))
    }

    /// After `loss.backward()`: bring the gathered rows' gradients back to
    /// the host and add them to the accumulators; with the row cache, the
    /// cached rows' gradients add up on the device until
    /// [`MeftAdapter::end_micro_batches`].
    pub fn collect_grads(&mut self) -> Result<()> {
        for p in std::mem::take(&mut self.pending) {
            let layer = &mut self.layers[p.layer_slot];
            layer.settle()?;
            let li = layer.layer;
            let w = 2 * layer.store.d;
            // The rows' gradient where the backward pass left it: on the
            // host already, or on the device for the row cache; zero when
            // nothing depended on the rows (it would have crossed as zeros).
            let g = self.sink.take(p.layer_slot);
            let Some((placement, slots)) = p.cached else {
                let g = match g {
                    Some(RowGrad::Device(t)) => grads_to_host(&self.link, li, &t)?,
                    Some(RowGrad::Host(v)) => v,
                    None => {
                        let bytes = p.union.len() * w * self.row_dtype.size_in_bytes();
                        self.link.count(li, Kind::Grads, bytes as u64);
                        vec![0f32; p.union.len() * w]
                    }
                };
                layer.store.accumulate(&p.union, g)?;
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
                let gd = pick(Kind::Ids, direct)?.to_dtype(self.row_dtype)?;
                let gd = grads_to_host(&self.link, li, &gd)?;
                let rows: Vec<u32> = direct.iter().map(|&i| p.union[i as usize]).collect();
                layer.store.accumulate(&rows, gd)?;
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
                let g = grads_to_host(&self.link, layer.layer, &g.to_dtype(self.row_dtype)?)?;
                layer.store.accumulate(&ids, g)?;
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
