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

pub use report::{paper_counted_ratio, report, Observed, PAPER_UNION_FRACTION};

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
    /// gpu_mem − device_total (negative when it does not fit), when gpu_mem
    /// is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<i64>,
    /// The largest |U| per adapter layer (every layer alike) that still fits
    /// gpu_mem (MEFT, when gpu_mem is given; None when none does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_union: Option<u64>,
    /// The longest train.cutoff_len that still fits gpu_mem at this
    /// micro-batch, the unions scaled with it (when gpu_mem is given; None
    /// when even the shortest does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_cutoff: Option<u64>,
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

/// Predict device memory, host memory and traffic for `input`, and with a
/// device size, the margin: headroom, the largest union and the longest
/// cutoff that fit.
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    let mut p = plan_at(input)?;
    if let Some(gpu) = input.gpu_mem {
        margin(input, gpu, &mut p)?;
    }
    Ok(p)
}

/// The plan's figures, without the margin.
fn plan_at(input: &PlanInput) -> Result<Plan, PlanError> {
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
        cpu: !composed_base(input),
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
        headroom: None,
        largest_union: None,
        longest_cutoff: None,
        notes: Vec::new(),
    };
    let base = bytes(&[base_params, input.base_dtype_bytes])?;
    if matches!(exp.method.kind, MethodKind::Meft | MethodKind::Parallel) {
        p.notes.push(format!(
            "base family {}: the adapter sits {}",
            model.arch.model_type(),
            model.arch.ffn_attach()
        ));
    }
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
        // The composed MEFT layer's backward computes its gradients over
        // one layer's union at a time, first in its layer's backward (the
        // adapter's output joins the layer's last), so before the layer's
        // own gradients pile up: whichever is larger.
        let surge = match exp.method.kind {
            MethodKind::Meft if meft_composed(input) => {
                let u = p_unions(input)?.into_iter().max().unwrap_or(0);
                // candle's CPU matmuls widen half-precision operands to f32.
                let rb = match exp.model.device.as_str() {
                    "cpu" => F32,
                    _ => row_dtype(input).bytes(),
                };
                meft_backward_surge(n, model.hidden_size as u64, u, rb)?
            }
            _ => 0,
        };
        let working = backward_working_set(model, &mb, adapter / hooked.max(1)).max(surge);
        let grads = p.device.get(&Category::Grads).copied().unwrap_or(0);
        let row_grads = if input.exp.model.device == "cpu" {
            // On the CPU the row gradients land in the host accumulators,
            // which are the same memory.
            p.host.get(&Category::Accumulators).copied().unwrap_or(0)
        } else {
            // Off the CPU they leave the device as each layer makes them,
            // except the row cache's, which sum on the device.
            row_cache_grads(input)?
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
    Ok(p)
}

/// The largest value in `lo..=hi` for which `fits` holds, when `fits` is
/// monotone (true up to some value, false beyond); None when not even `lo`.
fn largest_fitting(
    lo: u64,
    hi: u64,
    mut fits: impl FnMut(u64) -> Result<bool, PlanError>,
) -> Result<Option<u64>, PlanError> {
    if !fits(lo)? {
        return Ok(None);
    }
    if fits(hi)? {
        return Ok(Some(hi));
    }
    // fits(good) holds, fits(bad) does not.
    let (mut good, mut bad) = (lo, hi);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(Some(good))
}

/// The longest cutoff searched for.
const MAX_CUTOFF: u64 = 1 << 20;

/// How much room the plan leaves on a `gpu`-byte card: the headroom, and
/// the largest union (MEFT) and the longest cutoff that still fit.
fn margin(input: &PlanInput, gpu: u64, p: &mut Plan) -> Result<(), PlanError> {
    let exp = input.exp;
    let need = p.device_total;
    p.headroom = Some(gpu as i64 - need.min(i64::MAX as u64) as i64);
    let fits = |i: &PlanInput| -> Result<bool, PlanError> {
        match plan_at(i) {
            Ok(q) => Ok(q.device_total <= gpu),
            Err(PlanError::TooLarge) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if exp.method.kind == MethodKind::Meft {
        let cfg = &exp.method.meft;
        let la = cfg.resolve_layers(input.model.num_layers)?.len();
        let worst = (cfg.neurons as u64).min(
            input
                .tokens_per_micro_batch
                .saturating_mul(cfg.top_k as u64),
        );
        p.largest_union = largest_fitting(0, worst, |u| {
            let unions = vec![u; la];
            fits(&PlanInput {
                union_sizes: Some(&unions),
                ..*input
            })
        })?;
        p.notes.push(match p.largest_union {
            None => "does not fit even with no rows in flight".to_string(),
            Some(u) if u >= worst => format!(
                "fits at any union: the largest a micro-batch can pick, min(M, N·K) = {worst} rows per layer"
            ),
            Some(u) => format!(
                "fits while |U| ≤ {u} rows per layer ({:.0} % of M)",
                100.0 * u as f64 / cfg.neurons.max(1) as f64
            ),
        });
    }
    // Longer sequences at the same micro-batch; given unions keep their
    // share of what a micro-batch can pick.
    let micro = exp.train.micro_batch.max(1) as u64;
    let seq_now = input.seq_len.max(1);
    p.longest_cutoff = largest_fitting(4, MAX_CUTOFF, |c| {
        let unions: Option<Vec<u64>> = input.union_sizes.map(|u| {
            u.iter()
                .map(|&x| ((x as f64) * c as f64 / seq_now as f64).round() as u64)
                .collect()
        });
        fits(&PlanInput {
            tokens_per_micro_batch: micro.saturating_mul(c),
            seq_len: c,
            union_sizes: unions.as_deref(),
            ..*input
        })
    })?;
    p.notes.push(match p.longest_cutoff {
        None => "does not fit even at train.cutoff_len 4".to_string(),
        Some(c) if c >= MAX_CUTOFF => {
            format!("fits at every train.cutoff_len up to {MAX_CUTOFF} (micro-batch {micro})")
        }
        Some(c) => format!(
            "fits while train.cutoff_len ≤ {c} at micro-batch {micro}{}",
            if input.union_sizes.is_some() {
                " (the given unions scaled with the sequence)"
            } else {
                " (worst-case unions)"
            }
        ),
    });
    Ok(())
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

    // Both kernels hand each layer's row gradients on as the backward pass
    // makes them, and the composed one frees the layer's rows then too; the
    // rows of every layer are resident at the forward pass's end. With the
    // row cache a layer's gradients stay on the device for the cache to sum
    // until the backward pass is done.
    let composed = meft_composed(input);
    let rb = row_dtype(input).bytes();
    // What crosses per row either way, and what a row takes on the device:
    // the fused kernel computes in f32 over rows that crossed in `rb`.
    let row = bytes(&[2, d, rb])?;
    let resident = bytes(&[2, d, if composed { rb } else { F32 }])?;
    let row_copies = if composed && cfg.row_cache > 0 { 2 } else { 1 };
    // The router is the only MEFT parameter on the device; it trains there.
    let router_params = bytes(&[la, experts, d])?;
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
    let host_row = bytes(&[2, d, F32])?;
    for &u in &unions {
        rows = sum([rows, bytes(&[u, resident, row_copies])?])?;
        // Rows touched by any of the step's micro-batches keep an accumulator.
        let touched = m.min(u.saturating_mul(accumulation));
        accumulators = sum([accumulators, bytes(&[touched, host_row])?])?;
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
            // The cache's rows (in their dtype) and their summed gradients (f32).
            rows = sum([rows, bytes(&[cache, row])?, bytes(&[cache, host_row])?])?;
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

    let store = bytes(&[la, m, host_row])?;
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
        cpu: !composed_base(input),
    };
    let adapter = adapter_kept(
        model,
        &mb,
        &AdapterKept::Meft {
            top_k: k,
            experts,
            unions: &unions,
            composed,
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
    p.notes.push(format!(
        "traffic counts the row copy both ways (rows up, their gradients down) at {rb} bytes per value ({}); the paper's Eq. 8 counts it once",
        row_dtype(input).name()
    ));
    p.notes.push(format!(
        "device kernel: {}; each layer's row gradients leave the device as its backward pass makes them{}",
        if composed {
            "composed from stock tensor ops (the GPU path)"
        } else {
            "the fused CPU op"
        },
        if composed && cache > 0 {
            " (the row cache's stay on the device until the backward pass ends)"
        } else if composed {
            ", and its rows are freed then"
        } else {
            ""
        }
    ));
    if cache > 0 {
        let how = match input.cache_hit_rate {
            Some(h) => format!("the run's measured hit rate {:.1} %", 100.0 * h),
            None => format!(
                "an estimate that takes each of the {accumulation} micro-batches' unions as drawn at random from M (an upper bound: real unions share more rows); a run's measured hit rate replaces it"
            ),
        };
        p.notes.push(format!(
            "row cache of {cache} rows per layer on the device ({} with their summed gradients in f32): a cached row crosses once per step and its gradient once; traffic from {how}",
            crate::units::bytes(bytes(&[cache, sum([row, host_row])?, la])?)
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

/// Off the CPU, attention and the loss are composed from stock tensor ops;
/// on the CPU fused kernels compute them.
fn composed_base(input: &PlanInput) -> bool {
    input.exp.model.device != "cpu"
}

/// Whether the composed MEFT kernel computes the device half
/// (`method.meft.kernel`).
fn meft_composed(input: &PlanInput) -> bool {
    input.exp.method.meft.composed_on(&input.exp.model.device)
}

/// The gathered rows' dtype on the device and across the link.
fn row_dtype(input: &PlanInput) -> crate::config::BaseDtype {
    let cfg = &input.exp.method.meft;
    cfg.resolved_row_dtype(input.exp.model.dtype)
}

/// The row cache's gradients that stay on the device through the backward
/// pass on the composed path: every layer's union, in the rows' dtype.
fn row_cache_grads(input: &PlanInput) -> Result<u64, PlanError> {
    let cfg = &input.exp.method.meft;
    if input.exp.method.kind != MethodKind::Meft || cfg.row_cache == 0 || !meft_composed(input) {
        return Ok(0);
    }
    let d = input.model.hidden_size as u64;
    sum(p_unions(input)?
        .into_iter()
        .map(|u| u.saturating_mul(2 * d * row_dtype(input).bytes())))
}

/// What the composed MEFT layer's backward pass holds at once for a union
/// of `u` rows, in `rb` bytes per value: two N × |U| matrices (an
/// activation spread and its sum), the rows' key and value gradients and
/// their concatenation (2 × |U| × 2d), and the input, its gradient and the
/// output gradient in the compute's dtype (3 × N × d).
pub fn meft_backward_surge(n: u64, d: u64, u: u64, rb: u64) -> Result<u64, PlanError> {
    sum([
        bytes(&[2, n, u, rb])?,
        bytes(&[2, u, 2 * d, rb])?,
        bytes(&[3, n, d, rb])?,
    ])
}

/// The unions a plan assumed: the given ones clamped, or the worst case.
fn p_unions(input: &PlanInput) -> Result<Vec<u64>, PlanError> {
    let cfg = &input.exp.method.meft;
    let worst = (cfg.neurons as u64).min(
        input
            .tokens_per_micro_batch
            .saturating_mul(cfg.top_k as u64),
    );
    Ok(match input.union_sizes {
        Some(u) => u.iter().map(|&x| x.min(worst)).collect(),
        None => vec![worst; cfg.layers.resolve(input.model.num_layers)?.len()],
    })
}

#[cfg(test)]
mod tests;
