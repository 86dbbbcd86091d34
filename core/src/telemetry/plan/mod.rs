//! The planner: closed-form predictions of device memory, host memory and
//! host↔device bytes per optimizer step for any experiment on any model
//! shape, before a run starts and without weights.
//!
//! Categories are the trainer's ledger's ([`Category`]), and what a forward pass keeps for its backward pass comes from
//! [`super::activations`], which the trainer calls too, so a prediction and
//! a measurement of the same run can be shown line by line.
//!
//! Byte counts follow MEFT.md: 4 bytes per f32 element and per u32 id; the
//! row copy is counted in both directions (up for the forward pass, its
//! gradient down), which is twice what the paper's Eq. 8 counts.

mod report;

pub use report::{report, Observed, PAPER_UNION_FRACTION};

use super::activations::{adapter_kept, backward_working_set, base_kept, AdapterKept, MicroBatch};
use crate::config::{ConfigError, Experiment, HostOptimizer, MethodKind, Routing};
use crate::event::{Category, Kind, Ledger, Traffic};
use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};

const F32: u64 = 4;
const U32: u64 = 4;

/// Why a plan could not be made; messages start with the field at fault
/// where there is one.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{field}: {msg}")]
    Input { field: String, msg: String },
    #[error("the predicted byte counts do not fit in 64 bits; check the model shape and the method's sizes")]
    TooLarge,
}

fn input_error(field: &str, msg: impl Into<String>) -> PlanError {
    PlanError::Input {
        field: field.to_string(),
        msg: msg.into(),
    }
}

/// What a plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub exp: &'a Experiment,
    pub model: &'a ModelConfig,
    /// Bytes per base weight: 4 for f32, 2 for f16/bf16.
    pub base_dtype_bytes: u64,
    /// N, tokens per micro-batch: micro_batch × cutoff_len unless measured.
    pub tokens_per_micro_batch: u64,
    /// The padded sequence length: cutoff_len unless measured.
    pub seq_len: u64,
    /// Measured |U| per adapter layer; None means the worst case min(M, N·K).
    pub union_sizes: Option<&'a [u64]>,
    /// Rows per layer the lazy host optimizer holds moments for (measured or
    /// probed); None means all M, the most it can come to.
    pub moment_rows: Option<u64>,
    /// Device memory to check the plan against.
    pub gpu_mem: Option<u64>,
    /// The row cache's measured hit rate (hits over union rows looked up);
    /// None means the estimate from M, |U| and the micro-batches per step.
    pub cache_hit_rate: Option<f64>,
}

impl<'a> PlanInput<'a> {
    /// An f32 base, full-length sequences, worst-case unions, no size check.
    pub fn new(exp: &'a Experiment, model: &'a ModelConfig) -> Self {
        let tokens = (exp.train.micro_batch as u64).saturating_mul(exp.train.cutoff_len as u64);
        Self {
            exp,
            model,
            base_dtype_bytes: 4,
            tokens_per_micro_batch: tokens,
            seq_len: exp.train.cutoff_len as u64,
            union_sizes: None,
            moment_rows: None,
            gpu_mem: None,
            cache_hit_rate: None,
        }
    }
}

/// Predicted bytes for one experiment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Plan {
    pub device: Ledger,
    pub host: Ledger,
    /// Host↔device bytes per optimizer step.
    pub traffic: Traffic,
    /// Bytes per step a ZeRO-style offload of the same trainable parameters
    /// moves: all of them up, all their gradients down.
    pub dense_offload: u64,
    pub device_total: u64,
    pub host_total: u64,
    pub gpu_mem: Option<u64>,
    /// device_total ≤ gpu_mem, when gpu_mem is given.
    pub fits: Option<bool>,
    /// The assumptions behind the figures, one line each.
    pub notes: Vec<String>,
}

impl Plan {
    /// Bytes this method moves per step as a fraction of a dense offload of
    /// the same parameters; None when there is nothing to offload.
    pub fn offload_ratio(&self) -> Option<f64> {
        let moved = self.traffic.h2d().saturating_add(self.traffic.d2h());
        (self.dense_offload > 0).then(|| moved as f64 / self.dense_offload as f64)
    }
}

/// Product of byte factors, or [`PlanError::TooLarge`].
fn bytes(factors: &[u64]) -> Result<u64, PlanError> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .ok_or(PlanError::TooLarge)
}

fn sum<I: IntoIterator<Item = u64>>(items: I) -> Result<u64, PlanError> {
    items
        .into_iter()
        .try_fold(0u64, |acc, x| acc.checked_add(x))
        .ok_or(PlanError::TooLarge)
}

/// Predict device memory, host memory and traffic for `input`.
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    let exp = input.exp;
    exp.validate()?;
    if !(1..=8).contains(&input.base_dtype_bytes) {
        return Err(input_error(
            "base_dtype_bytes",
            format!(
                "expected 4 (f32) or 2 (f16/bf16), got {}",
                input.base_dtype_bytes
            ),
        ));
    }
    let n = input.tokens_per_micro_batch;
    if n == 0 {
        return Err(input_error("tokens_per_micro_batch", "must be at least 1"));
    }
    let model = input.model;
    let d = model.hidden_size as u64;
    let base_params = model.param_count() as u64;
    let mb = MicroBatch {
        tokens: n,
        seq: input.seq_len.max(1),
        base_bytes: input.base_dtype_bytes,
        cpu: !composed_path(input),
    };
    let activations = base_kept(model, &mb);
    if activations == u64::MAX {
        return Err(PlanError::TooLarge);
    }
    // validate() guarantees micro_batch ≥ 1 and divides batch.
    let accumulation = (exp.train.batch / exp.train.micro_batch.max(1)) as u64;

    let mut p = Plan {
        device: Ledger::new(),
        host: Ledger::new(),
        traffic: Traffic::default(),
        dense_offload: 0,
        device_total: 0,
        host_total: 0,
        gpu_mem: input.gpu_mem,
        fits: None,
        notes: Vec::new(),
    };
    let base = bytes(&[base_params, input.base_dtype_bytes])?;
    let adapter = match exp.method.kind {
        MethodKind::Meft => plan_meft(input, accumulation, base, &mut p)?,
        MethodKind::Parallel => {
            let layers = exp.method.meft.layers.resolve(model.num_layers)?.len() as u64;
            let size = exp.method.parallel.size as u64;
            let params = bytes(&[layers, 2, size, d])?;
            device_params(&mut p, base, params)?;
            p.notes.push(format!(
                "Parallel Adapter of {size} neurons in {layers} layers (placed like MEFT, method.meft.layers), all on the device"
            ));
            adapter_kept(model, &mb, &AdapterKept::Parallel { size, layers })
        }
        MethodKind::Lora => {
            let lora = &exp.method.lora;
            let mut per_layer = 0u64;
            let mut shapes = Vec::new();
            for target in &lora.targets {
                let (inp, out) = model.projection_shape(*target);
                shapes.push((inp, out));
                per_layer = sum([per_layer, bytes(&[lora.rank as u64, sum([inp, out])?])?])?;
            }
            let params = bytes(&[model.num_layers as u64, per_layer])?;
            device_params(&mut p, base, params)?;
            p.notes.push(format!(
                "LoRA rank {} on {} in all {} layers",
                lora.rank,
                lora.targets
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                model.num_layers
            ));
            let kept = AdapterKept::Lora {
                rank: lora.rank as u64,
                dropout: lora.dropout > 0.0,
                targets: &shapes,
            };
            adapter_kept(model, &mb, &kept)
        }
        MethodKind::Full => {
            // The trained weights are the base itself, kept in f32; counting
            // them under base as well would count them twice.
            device_params(&mut p, 0, base_params)?;
            p.notes.push(
                "full fine-tuning: every base weight is trained in f32, so it is counted under trainable and base is 0"
                    .into(),
            );
            adapter_kept(model, &mb, &AdapterKept::Full)
        }
        MethodKind::None => {
            p.device.insert(Category::Base, base);
            p.notes
                .push("frozen base: nothing is trained or offloaded".into());
            0
        }
    };
    p.device.insert(Category::Activations, activations);
    if exp.method.kind != MethodKind::None {
        p.device.insert(Category::AdapterActivations, adapter);
        // The backward pass's working set peaks early (the loss gradient,
        // then each layer's); by its end the gradients (device parameters',
        // and each gathered row's) have taken its place.
        let hooked = match exp.method.kind {
            MethodKind::Meft | MethodKind::Parallel => {
                exp.method.meft.layers.resolve(model.num_layers)?.len()
            }
            _ => model.num_layers,
        } as u64;
        let working = backward_working_set(model, &mb, adapter / hooked.max(1));
        let grads = p.device.get(&Category::Grads).copied().unwrap_or(0);
        let row_grads = match composed_path(input) {
            true => p.device.get(&Category::Rows).copied().unwrap_or(0) / 2,
            // On the CPU the row gradients land in the host accumulators,
            // which are the same memory.
            false => p.host.get(&Category::Accumulators).copied().unwrap_or(0),
        };
        let beyond = working.saturating_sub(sum([grads, row_grads])?);
        if beyond > 0 {
            p.device.insert(Category::Backward, beyond);
        }
    }
    p.notes.push(format!(
        "activations: what the forward pass keeps for the backward pass, counted op by op for N = {n} tokens per micro-batch in sequences of {} at {} bytes per base value",
        mb.seq,
        input.base_dtype_bytes,
    ));
    p.device_total = sum(p.device.values().copied())?;
    p.host_total = sum(p.host.values().copied())?;
    p.fits = input.gpu_mem.map(|gpu| p.device_total <= gpu);
    if exp.method.kind == MethodKind::Meft && p.fits == Some(false) {
        largest_union_note(input, &mut p)?;
    }
    Ok(p)
}

/// Device-side trainable parameters (given as a count), their gradients and
/// AdamW moments, all f32; a dense offload would move them up and their
/// gradients down every step.
fn device_params(p: &mut Plan, base: u64, params: u64) -> Result<(), PlanError> {
    let trainable = bytes(&[params, F32])?;
    p.device.insert(Category::Base, base);
    p.device.insert(Category::Trainable, trainable);
    p.device.insert(Category::Grads, trainable);
    p.device
        .insert(Category::Optimizer, bytes(&[2, trainable])?);
    p.dense_offload = bytes(&[2, trainable])?;
    Ok(())
}

/// MEFT's device, host and traffic figures; returns what the adapter keeps
/// for the backward pass.
fn plan_meft(
    input: &PlanInput,
    accumulation: u64,
    base: u64,
    p: &mut Plan,
) -> Result<u64, PlanError> {
    let cfg = &input.exp.method.meft;
    let model = input.model;
    let d = model.hidden_size as u64;
    let n = input.tokens_per_micro_batch;
    let layers = cfg.resolve_layers(model.num_layers)?;
    let la = layers.len() as u64;
    let m = cfg.neurons as u64;
    let k = cfg.top_k as u64;
    let probe = cfg.probe as u64;
    let full_routing = cfg.routing == Routing::Full;
    let experts = if full_routing {
        0
    } else {
        cfg.resolved_experts() as u64
    };
    let picks = bytes(&[n, k])?;
    let worst = m.min(picks);
    let unions: Vec<u64> = match input.union_sizes {
        None => vec![worst; layers.len()],
        Some(u) => {
            if u.len() != layers.len() {
                return Err(input_error(
                    "union_sizes",
                    format!(
                        "expected one size per adapter layer ({}), got {}",
                        layers.len(),
                        u.len()
                    ),
                ));
            }
            // An estimate (say a fraction of M) can exceed what a micro-batch
            // can pick; no union is larger than min(M, N·K).
            u.iter().map(|&x| x.min(worst)).collect()
        }
    };

    // The fused CPU kernel hands each layer's row gradients to the host as
    // the backward pass computes them; the composed path leaves them in the
    // gradient store, so rows and their gradients are both resident until
    // the backward pass is done.
    let row_copies = if composed_path(input) { 2 } else { 1 };
    // The router is the only MEFT parameter on the device; it trains there.
    let router_params = bytes(&[la, experts, d])?;
    let row = bytes(&[2, d, F32])?;
    let cache = (cfg.row_cache as u64).min(m);
    let mut rows = 0u64;
    let mut accumulators = 0u64;
    let mut t = Traffic::default();
    // A layer's input crosses for its own selection, or (pre-retrieval p)
    // for the selection of layer l + p; a layer whose rows were picked
    // early needs none of its own.
    let adapter = |l: usize| layers.contains(&l);
    let pre = cfg.pre_retrieval;
    let query_layers = (0..model.num_layers)
        .filter(|&l| match pre {
            0 => adapter(l),
            p => (adapter(l) && l < p) || adapter(l + p),
        })
        .count() as u64;
    t[Kind::Queries] = bytes(&[query_layers, n, d, F32, accumulation])?;
    for &u in &unions {
        rows = sum([rows, bytes(&[u, row, row_copies])?])?;
        // Rows touched by any of the step's micro-batches keep an accumulator.
        let touched = m.min(u.saturating_mul(accumulation));
        accumulators = sum([accumulators, bytes(&[touched, row])?])?;
        let mut per_micro = Traffic::default();
        per_micro[Kind::Ids] = bytes(&[u, U32])?;
        per_micro[Kind::Map] = bytes(&[picks, U32])?;
        // Expert ids (u32) and their gate values (f32).
        per_micro[Kind::Routing] = bytes(&[n, probe, U32 + F32])?;
        add_scaled(&mut t, &per_micro, accumulation)?;
        // Each row looked up crosses unless the cache holds it; a row the
        // cache holds sends its gradient back once, at the step's end.
        let c = cache_traffic(m, u, accumulation, cache, input.cache_hit_rate);
        t[Kind::Rows] = sum([t[Kind::Rows], bytes(&[c.misses, row])?])?;
        t[Kind::Grads] = sum([t[Kind::Grads], bytes(&[c.misses, row])?])?;
        // With the cache: the cached rows' slots and every row's place
        // going up, and the positions that pick gradients apart.
        let cache_ids = if cache > 0 {
            sum([bytes(&[2, u, accumulation])?, c.cached_touches])?
        } else {
            0
        };
        t[Kind::Ids] = sum([t[Kind::Ids], bytes(&[cache_ids, U32])?])?;
        if cache > 0 {
            // The cache's rows and their summed gradients.
            rows = sum([rows, bytes(&[cache, row, 2])?])?;
        }
    }
    if full_routing {
        // No router: the host scores every key, so only queries go down.
        t[Kind::Routing] = 0;
    }
    // Later readers add the kinds up; make sure they can.
    sum([t.h2d(), t.d2h()])?;
    device_params(p, base, router_params)?;
    p.device.insert(Category::Rows, rows);
    p.traffic = t;
    p.dense_offload = bytes(&[2, la, 2, m, d, F32])?;

    let store = bytes(&[la, m, row])?;
    let moments = cfg.moments;
    p.host.insert(Category::Store, store);
    let lazy = cfg.host_optimizer == HostOptimizer::Lazy;
    let moment_rows = match input.moment_rows {
        Some(r) if lazy => r.min(m),
        _ => m,
    };
    p.host.insert(
        Category::Moments,
        bytes(&[
            la,
            moments.paged_bytes(model.hidden_size, cfg.neurons, moment_rows),
        ])?,
    );
    // What the adapter itself keeps for the backward pass.
    let mb = MicroBatch {
        tokens: n,
        seq: input.seq_len.max(1),
        base_bytes: input.base_dtype_bytes,
        cpu: !composed_path(input),
    };
    let adapter = adapter_kept(
        model,
        &mb,
        &AdapterKept::Meft {
            top_k: k,
            experts,
            unions: &unions,
            composed: composed_path(input),
        },
    );
    p.host.insert(Category::Accumulators, accumulators);

    let kept = 100.0 * k as f64 / m as f64;
    p.notes.push(if full_routing {
        format!("MEFT M {m} K {k} ({kept:.2} % of M), full routing (every key scored on the host, no router), {la} adapter layers")
    } else {
        format!(
            "MEFT M {m} K {k} ({kept:.2} % of M), E {experts} × {} keys, P {probe}, {la} adapter layers",
            m / experts.max(1)
        )
    });
    p.notes.push(match input.union_sizes {
        None => format!(
            "|U| not measured: worst case min(M, N·K) = {worst} rows per layer and micro-batch; a run's measured unions replace it"
        ),
        Some(u) => {
            let mean = u.iter().sum::<u64>() as f64 / u.len().max(1) as f64;
            format!(
                "|U| given: {mean:.0} rows per layer on average ({:.1} % of M)",
                100.0 * mean / m as f64
            )
        }
    });
    let over = if accumulation == 1 {
        "the step's micro-batch".to_string()
    } else {
        format!("the step's {accumulation} micro-batches")
    };
    let sized = match (lazy, input.moment_rows) {
        (false, _) => "all M rows: the dense optimizer updates every row".to_string(),
        (true, None) => {
            "all M rows, the most they can come to: the lazy optimizer adds a row's moments when it is first touched".to_string()
        }
        (true, Some(_)) => format!(
            "the {moment_rows} rows per layer ({:.1} % of M) touched by the end",
            100.0 * moment_rows as f64 / m.max(1) as f64
        ),
    };
    p.notes.push(format!(
        "host moments ({}) are sized for {sized}; accumulators hold the rows touched over {over}",
        moments.name()
    ));
    p.notes.push(
        "traffic counts the row copy both ways (rows up, their gradients down); the paper's Eq. 8 counts it once"
            .into(),
    );
    if cache > 0 {
        let how = match input.cache_hit_rate {
            Some(h) => format!("the run's measured hit rate {:.1} %", 100.0 * h),
            None => format!(
                "an estimate that takes each of the {accumulation} micro-batches' unions as drawn at random from M (an upper bound: real unions share more rows); a run's measured hit rate replaces it"
            ),
        };
        p.notes.push(format!(
            "row cache of {cache} rows per layer on the device ({} with their gradients): a cached row crosses once per step and its gradient once; traffic from {how}",
            crate::units::bytes(bytes(&[cache, row, 2, la])?)
        ));
    } else if accumulation > 1 {
        p.notes.push(format!(
            "rows cross once per micro-batch ({accumulation} per step); the dense offload moves the adapter once per step; method.meft.row_cache keeps them on the device across micro-batches"
        ));
    }
    if pre > 0 {
        p.notes.push(format!(
            "pre-retrieval {pre}: layer i's rows are picked by layer i−{pre}'s input; inputs cross at {query_layers} of {} layers",
            model.num_layers
        ));
    }
    if cfg.async_host_optim {
        p.notes.push(
            "the host optimizer runs behind the next forward pass (async_host_optim); the bytes are the same".into(),
        );
    }
    Ok(adapter)
}

/// One layer's row cache over a step, per [`cache_traffic`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheTraffic {
    /// Union rows that cross (each also sends a gradient back).
    pub misses: u64,
    /// Union rows served by cached rows (including the crossing that put
    /// them there).
    pub cached_touches: u64,
}

/// A step's row traffic for one layer with a cache of `cache` rows:
/// `accumulation` micro-batches each looking up `u` of `m` rows. With a
/// measured hit rate h the misses are (1 − h) of the lookups. Otherwise
/// each union is taken as drawn at random, so the step touches
/// S = M·(1 − (1 − u/M)^A) distinct rows; the cache holds min(C, S) of them
/// (the first touched), which serve that fraction of the lookups and cross
/// once; the other lookups cross every time.
pub fn cache_traffic(
    m: u64,
    u: u64,
    accumulation: u64,
    cache: u64,
    hit_rate: Option<f64>,
) -> CacheTraffic {
    let touches = u.saturating_mul(accumulation);
    if cache == 0 || touches == 0 {
        return CacheTraffic {
            misses: touches,
            cached_touches: 0,
        };
    }
    if let Some(h) = hit_rate {
        let misses = ((1.0 - h.clamp(0.0, 1.0)) * touches as f64).round() as u64;
        // The hits, and at most a cache's worth of admitted rows.
        return CacheTraffic {
            misses,
            cached_touches: touches - misses + misses.min(cache),
        };
    }
    let (mf, uf) = (m.max(1) as f64, u.min(m) as f64);
    let distinct = mf * (1.0 - (1.0 - uf / mf).powf(accumulation as f64));
    let distinct = distinct.clamp(uf, touches as f64);
    let held = (cache as f64).min(distinct);
    let share = held / distinct;
    let cached_touches = share * touches as f64;
    CacheTraffic {
        misses: (held + (touches as f64 - cached_touches)).round() as u64,
        cached_touches: cached_touches.round() as u64,
    }
}

/// `t += times × o`, field by field, refusing to wrap.
fn add_scaled(t: &mut Traffic, o: &Traffic, times: u64) -> Result<(), PlanError> {
    let add = |acc: u64, x: u64| sum([acc, bytes(&[x, times])?]);
    for k in Kind::ALL {
        t[k] = add(t[k], o[k])?;
    }
    Ok(())
}

/// When MEFT does not fit, say how large a union per layer would.
fn largest_union_note(input: &PlanInput, p: &mut Plan) -> Result<(), PlanError> {
    let Some(gpu) = input.gpu_mem else {
        return Ok(());
    };
    let cfg = &input.exp.method.meft;
    let la = cfg.layers.resolve(input.model.num_layers)?.len() as u64;
    let (n, d) = (input.tokens_per_micro_batch, input.model.hidden_size as u64);
    let composed = composed_path(input);
    // What grows with |U|: the rows and their gradients, and on the
    // composed path the N × |U| scores, the zeros and their scatter. The
    // backward surge shrinks as row gradients grow; leaving it in errs on
    // the safe side.
    let rows = p.device.get(&Category::Rows).copied().unwrap_or(0);
    let adapter = p
        .device
        .get(&Category::AdapterActivations)
        .copied()
        .unwrap_or(0);
    let per_row_layer = sum([
        bytes(&[2, d, F32, if composed { 2 } else { 1 }])?,
        if composed { bytes(&[3, n, F32])? } else { 0 },
    ])?;
    let unions_now = if composed {
        sum(p_unions(input)
            .iter()
            .map(|&u| u.saturating_mul(3 * n * F32)))?
    } else {
        0
    };
    let fixed = p.device_total - rows - unions_now.min(adapter);
    let per_row = bytes(&[la, per_row_layer])?;
    let room = gpu.saturating_sub(fixed) / per_row.max(1);
    if room == 0 {
        p.notes.push(format!(
            "does not fit even with no rows in flight: everything but rows needs {}",
            crate::units::bytes(fixed)
        ));
    } else {
        p.notes.push(format!(
            "fits while |U| ≤ {room} rows per layer ({:.0} % of M)",
            100.0 * room as f64 / cfg.neurons.max(1) as f64
        ));
    }
    Ok(())
}

/// Off the CPU, attention and the MEFT layer are composed from stock tensor
/// ops; on the CPU fused kernels compute them.
fn composed_path(input: &PlanInput) -> bool {
    input.exp.model.device != "cpu"
}

/// The unions a plan assumed: the given ones clamped, or the worst case.
fn p_unions(input: &PlanInput) -> Vec<u64> {
    let cfg = &input.exp.method.meft;
    let worst = (cfg.neurons as u64).min(
        input
            .tokens_per_micro_batch
            .saturating_mul(cfg.top_k as u64),
    );
    let layers = cfg
        .layers
        .resolve(input.model.num_layers)
        .map(|l| l.len())
        .unwrap_or(0);
    match input.union_sizes {
        Some(u) => u.iter().map(|&x| x.min(worst)).collect(),
        None => vec![worst; layers],
    }
}

#[cfg(test)]
mod tests;
