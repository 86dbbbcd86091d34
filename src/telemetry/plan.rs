//! The planner: closed-form predictions of device memory, host memory and
//! host↔device bytes per optimizer step for any experiment on any model
//! shape, before a run starts and without weights.
//!
//! Categories use the same names as the trainer's ledger ([`DEVICE_BASE`]
//! …), and what a forward pass keeps for its backward pass comes from
//! [`super::activations`], which the trainer calls too, so a prediction and
//! a measurement of the same run can be shown line by line.
//!
//! Byte counts follow MEFT.md: 4 bytes per f32 element and per u32 id; the
//! row copy is counted in both directions (up for the forward pass, its
//! gradient down), which is twice what the paper's Eq. 8 counts.

use super::activations::{adapter_kept, backward_working_set, base_kept, AdapterKept, MicroBatch};
use crate::config::{ConfigError, Experiment};
use crate::model::ops::RopeLayout;
use crate::model::{Arch, ModelConfig};
use crate::optim::moments::MomentDtype;
use crate::train::event::{Ledger, Traffic};
use serde::{Deserialize, Serialize};

/// Device: base-model weights at the base dtype.
pub const DEVICE_BASE: &str = "base";
/// Device: trainable parameters that live on the device (f32).
pub const DEVICE_TRAINABLE: &str = "trainable";
/// Device: their gradients.
pub const DEVICE_GRADS: &str = "grads";
/// Device: their AdamW moments.
pub const DEVICE_OPTIMIZER: &str = "optimizer";
/// Device: MEFT rows gathered from the host, and their gradients.
pub const DEVICE_ROWS: &str = "rows";
/// Device: what the base's forward pass keeps for the backward pass.
pub const DEVICE_ACTIVATIONS: &str = "activations";
/// Device: what the adapter keeps for its backward pass besides rows.
pub const ADAPTER_ACTIVATIONS: &str = "adapter act";
/// Device: the backward pass's working set at its fullest, beyond what the
/// gradients take by its end (so the categories add up to the peak).
pub const DEVICE_BACKWARD: &str = "backward";
/// Host: the MEFT key and value rows.
pub const HOST_STORE: &str = "store";
/// Host: AdamW moments of the store.
pub const HOST_MOMENTS: &str = "moments";
/// Host: per-row gradient accumulators between optimizer steps.
pub const HOST_ACCUMULATORS: &str = "accumulators";

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
    #[error("--gpu-mem: cannot read {0:?}: expected a size like 24GiB or 512MiB")]
    Size(String),
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

    /// The plan as a plain-text table under `title`.
    pub fn table(&self, title: &str) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: u64, detail: String| {
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!("   {detail}")
            };
            out.push_str(&format!("{label:<18}{:>10}{detail}\n", human_bytes(value)));
        };
        let title_line = format!("{title}\n{}\n", "─".repeat(title.chars().count().max(40)));
        line("device memory", self.device_total, String::new());
        for (k, v) in in_order(&self.device, &DEVICE_ORDER) {
            line(&format!("  {k}"), v, String::new());
        }
        let host_detail = if self.host.is_empty() {
            "nothing is kept in host memory".to_string()
        } else {
            String::new()
        };
        line("host memory", self.host_total, host_detail);
        for (k, v) in in_order(&self.host, &HOST_ORDER) {
            line(&format!("  {k}"), v, String::new());
        }
        let t = &self.traffic;
        let kinds = |parts: &[(&str, u64)]| {
            parts
                .iter()
                .map(|(k, v)| format!("{k} {}", human_bytes(*v)))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        let moved = t.h2d().saturating_add(t.d2h());
        line(
            "H→D per step",
            t.h2d(),
            if moved == 0 {
                String::new()
            } else {
                kinds(&[("rows", t.rows), ("ids", t.ids), ("map", t.map)])
            },
        );
        line(
            "D→H per step",
            t.d2h(),
            if moved == 0 {
                String::new()
            } else {
                kinds(&[
                    ("queries", t.queries),
                    ("routing", t.routing),
                    ("grads", t.grads),
                ])
            },
        );
        if let Some(ratio) = self.offload_ratio() {
            let verdict = if moved == 0 {
                "this method moves nothing: its parameters stay on the device".to_string()
            } else {
                format!("MEFT moves {} of a dense offload", ratio_text(ratio))
            };
            line("dense offload", self.dense_offload, verdict);
        }
        let fit = match (self.gpu_mem, self.fits) {
            (Some(gpu), Some(true)) => format!(
                "fits in {} ✓  (device {} ≤ {})",
                human_bytes(gpu),
                human_bytes(self.device_total),
                human_bytes(gpu)
            ),
            (Some(gpu), _) => format!(
                "does not fit in {} ✗  (device {} > {})",
                human_bytes(gpu),
                human_bytes(self.device_total),
                human_bytes(gpu)
            ),
            (None, _) => format!(
                "no device size given; the plan needs {}",
                human_bytes(self.device_total)
            ),
        };
        let mut text = title_line;
        text.push_str(&out);
        text.push_str(&fit);
        text.push('\n');
        for n in &self.notes {
            text.push_str(&format!("· {n}\n"));
        }
        text
    }
}

/// Device categories from the weights that are always there to the ones
/// that come and go, as the table lists them.
const DEVICE_ORDER: [&str; 8] = [
    DEVICE_BASE,
    DEVICE_TRAINABLE,
    DEVICE_GRADS,
    DEVICE_OPTIMIZER,
    DEVICE_ROWS,
    ADAPTER_ACTIVATIONS,
    DEVICE_ACTIVATIONS,
    DEVICE_BACKWARD,
];
const HOST_ORDER: [&str; 3] = [HOST_STORE, HOST_MOMENTS, HOST_ACCUMULATORS];

/// The ledger's entries in `order`, then any others alphabetically (a
/// measured ledger may carry categories the planner does not predict).
fn in_order<'l>(ledger: &'l Ledger, order: &[&str]) -> Vec<(&'l str, u64)> {
    let known = order
        .iter()
        .filter_map(|k| ledger.get_key_value(*k))
        .map(|(k, v)| (k.as_str(), *v));
    let rest = ledger
        .iter()
        .filter(|(k, _)| !order.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), *v));
    known.chain(rest).collect()
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
    let adapter = match exp.method.kind.as_str() {
        "meft" => plan_meft(input, accumulation, base, &mut p)?,
        "parallel" => {
            let layers = exp.method.meft.layers.resolve(model.num_layers)?.len() as u64;
            let size = exp.method.parallel.size as u64;
            let params = bytes(&[layers, 2, size, d])?;
            device_params(&mut p, base, params)?;
            p.notes.push(format!(
                "Parallel Adapter of {size} neurons in {layers} layers (placed like MEFT, method.meft.layers), all on the device"
            ));
            adapter_kept(model, &mb, &AdapterKept::Parallel { size, layers })
        }
        "lora" => {
            let lora = &exp.method.lora;
            let mut per_layer = 0u64;
            let mut shapes = Vec::new();
            for target in &lora.targets {
                let (inp, out) = projection_shape(model, target)?;
                shapes.push((inp, out));
                per_layer = sum([per_layer, bytes(&[lora.rank as u64, sum([inp, out])?])?])?;
            }
            let params = bytes(&[model.num_layers as u64, per_layer])?;
            device_params(&mut p, base, params)?;
            p.notes.push(format!(
                "LoRA rank {} on {} in all {} layers",
                lora.rank,
                lora.targets.join(", "),
                model.num_layers
            ));
            let kept = AdapterKept::Lora {
                rank: lora.rank as u64,
                dropout: lora.dropout > 0.0,
                targets: &shapes,
            };
            adapter_kept(model, &mb, &kept)
        }
        "full" => {
            // The trained weights are the base itself, kept in f32; counting
            // them under base as well would count them twice.
            device_params(&mut p, 0, base_params)?;
            p.notes.push(
                "full fine-tuning: every base weight is trained in f32, so it is counted under trainable and base is 0"
                    .into(),
            );
            adapter_kept(model, &mb, &AdapterKept::Full)
        }
        "none" => {
            p.device.insert(DEVICE_BASE.into(), base);
            p.notes
                .push("frozen base: nothing is trained or offloaded".into());
            0
        }
        other => {
            return Err(input_error(
                "method.kind",
                format!("{other:?} is not one of meft, parallel, lora, full, none"),
            ))
        }
    };
    p.device.insert(DEVICE_ACTIVATIONS.into(), activations);
    if exp.method.kind != "none" {
        p.device.insert(ADAPTER_ACTIVATIONS.into(), adapter);
        // The backward pass's working set peaks early (the loss gradient,
        // then each layer's); by its end the gradients (device parameters',
        // and each gathered row's) have taken its place.
        let hooked = match exp.method.kind.as_str() {
            "meft" | "parallel" => exp.method.meft.layers.resolve(model.num_layers)?.len(),
            _ => model.num_layers,
        } as u64;
        let working = backward_working_set(model, &mb, adapter / hooked.max(1));
        let grads = p.device.get(DEVICE_GRADS).copied().unwrap_or(0);
        let row_grads = match composed_path(input) {
            true => p.device.get(DEVICE_ROWS).copied().unwrap_or(0) / 2,
            // On the CPU the row gradients land in the host accumulators,
            // which are the same memory.
            false => p.host.get(HOST_ACCUMULATORS).copied().unwrap_or(0),
        };
        let beyond = working.saturating_sub(sum([grads, row_grads])?);
        if beyond > 0 {
            p.device.insert(DEVICE_BACKWARD.into(), beyond);
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
    if exp.method.kind == "meft" && p.fits == Some(false) {
        largest_union_note(input, &mut p)?;
    }
    Ok(p)
}

/// Device-side trainable parameters (given as a count), their gradients and
/// AdamW moments, all f32; a dense offload would move them up and their
/// gradients down every step.
fn device_params(p: &mut Plan, base: u64, params: u64) -> Result<(), PlanError> {
    let trainable = bytes(&[params, F32])?;
    p.device.insert(DEVICE_BASE.into(), base);
    p.device.insert(DEVICE_TRAINABLE.into(), trainable);
    p.device.insert(DEVICE_GRADS.into(), trainable);
    p.device
        .insert(DEVICE_OPTIMIZER.into(), bytes(&[2, trainable])?);
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
    let layers = cfg.layers.resolve(model.num_layers)?;
    let la = layers.len() as u64;
    let m = cfg.neurons as u64;
    let k = cfg.top_k as u64;
    let probe = cfg.probe as u64;
    let full_routing = cfg.routing == "full";
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
    let mut rows = 0u64;
    let mut accumulators = 0u64;
    let mut t = Traffic::default();
    for &u in &unions {
        rows = sum([rows, bytes(&[u, row, row_copies])?])?;
        // Rows touched by any of the step's micro-batches keep an accumulator.
        let touched = m.min(u.saturating_mul(accumulation));
        accumulators = sum([accumulators, bytes(&[touched, row])?])?;
        let per_micro = Traffic {
            rows: bytes(&[u, row])?,
            ids: bytes(&[u, U32])?,
            map: bytes(&[picks, U32])?,
            queries: bytes(&[n, d, F32])?,
            // Expert ids (u32) and their gate values (f32).
            routing: bytes(&[n, probe, U32 + F32])?,
            grads: bytes(&[u, row])?,
        };
        add_scaled(&mut t, &per_micro, accumulation)?;
    }
    if full_routing {
        // No router: the host scores every key, so only queries go down.
        t.routing = 0;
    }
    // Later readers add the kinds up; make sure they can.
    sum([t.h2d(), t.d2h()])?;
    device_params(p, base, router_params)?;
    p.device.insert(DEVICE_ROWS.into(), rows);
    p.traffic = t;
    p.dense_offload = bytes(&[2, la, 2, m, d, F32])?;

    let store = bytes(&[la, m, row])?;
    let moments = MomentDtype::parse(&cfg.moments).unwrap_or(MomentDtype::F32);
    p.host.insert(HOST_STORE.into(), store);
    let lazy = cfg.host_optimizer == "lazy";
    let moment_rows = match input.moment_rows {
        Some(r) if lazy => r.min(m),
        _ => m,
    };
    p.host.insert(
        HOST_MOMENTS.into(),
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
    p.host.insert(HOST_ACCUMULATORS.into(), accumulators);

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
    if accumulation > 1 {
        p.notes.push(format!(
            "rows cross once per micro-batch ({accumulation} per step); the dense offload moves the adapter once per step"
        ));
    }
    Ok(adapter)
}

/// `t += times × o`, field by field, refusing to wrap.
fn add_scaled(t: &mut Traffic, o: &Traffic, times: u64) -> Result<(), PlanError> {
    let add = |acc: u64, x: u64| sum([acc, bytes(&[x, times])?]);
    t.rows = add(t.rows, o.rows)?;
    t.ids = add(t.ids, o.ids)?;
    t.map = add(t.map, o.map)?;
    t.queries = add(t.queries, o.queries)?;
    t.routing = add(t.routing, o.routing)?;
    t.grads = add(t.grads, o.grads)?;
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
    let rows = p.device.get(DEVICE_ROWS).copied().unwrap_or(0);
    let adapter = p.device.get(ADAPTER_ACTIVATIONS).copied().unwrap_or(0);
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
            human_bytes(fixed)
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

/// (in, out) of a projection a LoRA target names.
fn projection_shape(model: &ModelConfig, target: &str) -> Result<(u64, u64), PlanError> {
    let d = model.hidden_size as u64;
    let q = (model.num_heads * model.head_dim) as u64;
    let kv = (model.num_kv_heads * model.head_dim) as u64;
    let ffn = model.intermediate_size as u64;
    Ok(match target {
        "q_proj" => (d, q),
        "k_proj" | "v_proj" => (d, kv),
        "o_proj" => (q, d),
        "gate_proj" | "up_proj" => (d, ffn),
        "down_proj" => (ffn, d),
        other => {
            return Err(input_error(
                "method.lora.targets",
                format!("{other:?} is not a projection"),
            ))
        }
    })
}

/// The shape of a model the planner knows by name, so `meft plan` works on
/// the paper's settings without weights.
pub fn builtin_shape(name: &str) -> Option<ModelConfig> {
    let llama = |vocab, d, layers, heads, kv, ffn, tied, theta, max_pos| ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: d,
        intermediate_size: ffn,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: d / heads,
        rms_norm_eps: 1e-5,
        rope_theta: theta,
        rope_layout: RopeLayout::HalfSplit,
        sliding_window: None,
        tie_embeddings: tied,
        max_position_embeddings: max_pos,
    };
    match name.strip_prefix("embedded:").unwrap_or(name) {
        "tiny" | "tiny-random" => Some(llama(259, 128, 4, 4, 2, 352, true, 10_000.0, 1024)),
        "smollm2-135m" => Some(llama(49152, 576, 30, 9, 3, 1536, true, 100_000.0, 8192)),
        "llama-7b" => Some(ModelConfig {
            rms_norm_eps: 1e-6,
            ..llama(32000, 4096, 32, 32, 32, 11008, false, 10_000.0, 2048)
        }),
        "mistral-7b" => Some(ModelConfig {
            arch: Arch::Mistral,
            sliding_window: Some(4096),
            ..llama(32000, 4096, 32, 32, 8, 14336, false, 10_000.0, 32768)
        }),
        _ => None,
    }
}

/// Names [`builtin_shape`] knows.
pub const BUILTIN_SHAPES: [&str; 4] = ["tiny", "smollm2-135m", "llama-7b", "mistral-7b"];

/// Read a memory size such as `24GiB`, `24 GB`, `512MiB`, `1.5GiB` or `80G`.
/// Units are binary whatever their spelling: a "24 GB" card has 24 GiB.
pub fn parse_bytes(s: &str) -> Result<u64, PlanError> {
    let bad = || PlanError::Size(s.to_string());
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let total = (value * (1u64 << shift) as f64).round();
    // 2^64 is exactly representable; anything at or above it does not fit.
    if !total.is_finite() || total >= 18_446_744_073_709_551_616.0 {
        return Err(bad());
    }
    Ok(total as u64)
}

/// A byte count for people: "12 B", "3.1 KiB", "412 MiB", "1.9 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 99.95 {
        format!("{v:.1} {}", UNITS[unit])
    } else if v.round() < 1024.0 || unit + 1 == UNITS.len() {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("1.0 {}", UNITS[unit + 1])
    }
}

/// "0.28×", "0.016×", "1.02×": enough digits to tell small ratios apart.
fn ratio_text(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}

/// The shape of the model an experiment names: `builtin:NAME` (or a bare
/// built-in name) from the table, anything else from its files' metadata,
/// without loading weights.
pub fn shape_of(reference: &str) -> anyhow::Result<ModelConfig> {
    let name = reference.strip_prefix("builtin:").unwrap_or(reference);
    if let Some(shape) = builtin_shape(name) {
        return Ok(shape);
    }
    if reference.starts_with("builtin:") {
        anyhow::bail!(
            "model.reference: unknown built-in shape {name:?} (one of {})",
            BUILTIN_SHAPES.join(", ")
        );
    }
    let r = crate::model::ModelRef::parse(reference)
        .map_err(|e| anyhow::anyhow!("model.reference: {e}"))?;
    Ok(crate::model::load::model_shape(&r)?)
}

/// |U| / M implied by the paper's traffic figure: MEFT moved ≈0.56× the
/// adapter's parameters per iteration (LLaMA-7B, M 6144, batch 2 × 256,
/// rows counted once), i.e. |U|·2d ≈ 0.56 · 2·M·d.
pub const PAPER_UNION_FRACTION: f64 = 0.56;

pub fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "f16" | "bf16" => 2,
        _ => 4,
    }
}

/// `meft plan`: the experiment's plan next to a dense Parallel Adapter of
/// the same size (what the same adapter costs without MEFT), as text or JSON.
/// Plan inputs measured rather than assumed: by a probe of the run's first
/// micro-batches, or by a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Padded tokens per micro-batch and padded sequence length.
    pub tokens: u64,
    pub seq: u64,
    /// |U| per adapter layer.
    pub unions: Vec<u64>,
    /// Rows per layer with host moments at the end of the run.
    pub moment_rows: Option<u64>,
    /// Where the figures come from, for the plan's title.
    pub source: String,
}

pub fn report(
    exp: &Experiment,
    gpu_mem: Option<u64>,
    union_fraction: Option<f64>,
    observed: Option<&Observed>,
    json: bool,
) -> anyhow::Result<String> {
    exp.validate()?;
    let model = shape_of(&exp.model.reference)?;
    let layers = exp.method.meft.layers.resolve(model.num_layers)?.len();
    let unions: Option<Vec<u64>> = match (union_fraction, observed) {
        (Some(f), _) if !(0.0..=1.0).contains(&f) => {
            anyhow::bail!("--union: must be a fraction of M in [0, 1], got {f}")
        }
        (Some(f), _) => Some(vec![
            (f * exp.method.meft.neurons as f64).round() as u64;
            layers
        ]),
        (None, Some(o)) => Some(o.unions.clone()),
        (None, None) => None,
    };
    let mut input = PlanInput {
        base_dtype_bytes: dtype_bytes(&exp.model.dtype),
        gpu_mem,
        union_sizes: unions.as_deref(),
        ..PlanInput::new(exp, &model)
    };
    if let Some(o) = observed {
        input.tokens_per_micro_batch = o.tokens.max(1);
        input.seq_len = o.seq.max(1);
        input.moment_rows = o.moment_rows;
    }
    let input = input;
    let main = plan(&input)?;
    let mut dense_exp = exp.clone();
    let mut compare = None;
    if exp.method.kind == "meft" {
        dense_exp.method.kind = "parallel".into();
        dense_exp.method.parallel.size = exp.method.meft.neurons;
        compare = Some(plan(&PlanInput {
            exp: &dense_exp,
            ..input
        })?);
    }
    if json {
        return Ok(serde_json::to_string_pretty(&serde_json::json!({
            "plan": main,
            "dense_parallel_adapter": compare,
        }))?);
    }
    let unions_note = match (union_fraction, observed) {
        (Some(f), _) => format!("|U| = {f} × M per layer"),
        (None, Some(o)) => o.source.clone(),
        (None, None) => "worst-case |U| = min(M, N·K)".to_string(),
    };
    let mut out = main.table(&format!(
        "{} · {} · {} base · {}",
        exp.name, exp.method.kind, exp.model.dtype, unions_note
    ));
    // Without a given or measured union, also show the union the paper
    // measured.
    let assumed = union_fraction.is_none() && observed.is_none();
    let paper_case = match (assumed, exp.method.kind.as_str()) {
        (true, "meft") => {
            let u = vec![
                (PAPER_UNION_FRACTION * exp.method.meft.neurons as f64).round() as u64;
                layers
            ];
            Some(plan(&PlanInput {
                union_sizes: Some(&u),
                ..input
            })?)
        }
        _ => None,
    };
    let verdict = |p: &Plan| match p.fits {
        Some(true) => "fits",
        Some(false) => "does not fit",
        None => "no limit given",
    };
    if let Some(pc) = &paper_case {
        let t = &pc.traffic;
        out.push_str(&format!(
            "\nAt the paper's measured union (|U| ≈ {PAPER_UNION_FRACTION} × M): device {} ({}), \
             H→D {} · D→H {} per step = {:.2}× a dense offload of {}.\n",
            human_bytes(pc.device_total),
            verdict(pc),
            human_bytes(t.h2d()),
            human_bytes(t.d2h()),
            pc.offload_ratio().unwrap_or(0.0),
            human_bytes(pc.dense_offload),
        ));
    }
    if let Some(c) = compare {
        out.push('\n');
        out.push_str(&c.table(&format!(
            "without MEFT: dense Parallel Adapter of the same M ({})",
            exp.method.meft.neurons
        )));
        if let Some(g) = gpu_mem {
            let meft_line = match &paper_case {
                Some(pc) => format!(
                    "{} at worst-case unions ({}), {} at the paper's union ({})",
                    human_bytes(main.device_total),
                    verdict(&main),
                    human_bytes(pc.device_total),
                    verdict(pc)
                ),
                None => format!("{} ({})", human_bytes(main.device_total), verdict(&main)),
            };
            out.push_str(&format!(
                "\nOn {}: MEFT needs {meft_line}; the dense adapter needs {} ({}).\n",
                human_bytes(g),
                human_bytes(c.device_total),
                verdict(&c),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn shape(name: &str) -> ModelConfig {
        match builtin_shape(name) {
            Some(m) => m,
            None => panic!("{name} is a builtin shape"),
        }
    }

    fn must(input: &PlanInput) -> Plan {
        match plan(input) {
            Ok(p) => p,
            Err(e) => panic!("plan failed: {e}"),
        }
    }

    /// The paper's LLaMA-7B NQ setting: M 8464 = 368 experts × 23 keys, K 64,
    /// P 8, micro-batch 1 of 256 tokens, 64 examples per step.
    /// The shipped preset of the paper's NQ setting (LLaMA-7B on cuda:0,
    /// f16 base, M 8464 in 368 experts, K 64, P 8, batch 64 of micro-batch
    /// 1 × 256 tokens, dense host optimizer).
    fn paper_nq() -> Experiment {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets/paper/nq.toml");
        match Experiment::load(&path) {
            Ok(exp) => exp,
            Err(e) => panic!("{e}"),
        }
    }

    fn with_gpu<'a>(exp: &'a Experiment, model: &'a ModelConfig, gpu: u64) -> PlanInput<'a> {
        PlanInput {
            base_dtype_bytes: 2,
            gpu_mem: Some(gpu),
            ..PlanInput::new(exp, model)
        }
    }

    // LLaMA-7B figures used below, by hand: base params 6 738 415 616
    // (f16: 13 476 831 232 B). Activations at N 256, sequences of 256, f16:
    // per layer and token 6·4096 + 5·4096 + 5·4096 + 4·11008 + 4·32·256
    // = 142 336 values, × 256 × 2 B × 32 layers = 2 332 033 024; the final
    // norm 256·4096·2, the logits 256·32000·2 and widened 256·32000·4, the
    // loss's log-softmax 3·256·32000·4: 2 481 586 176 B in all.
    const LLAMA_BASE_F16: u64 = 13_476_831_232;
    const LLAMA_ACT_256: u64 = 2_481_586_176;

    #[test]
    fn paper_meft_7b_on_24_gib_needs_unions_under_46_percent_of_m() {
        let model = shape("llama-7b");
        let exp = paper_nq();
        let input = with_gpu(&exp, &model, 24 * GIB);

        // Router 32 × 368 × 4096 f32, plus its gradient and two moments.
        let router = 32 * 368 * 4096 * 4;
        let worst = must(&input);
        println!(
            "{}",
            worst.table("LLaMA-7B · MEFT M 8464 · worst-case unions")
        );
        assert_eq!(worst.device["base"], LLAMA_BASE_F16);
        assert_eq!(worst.device["activations"], LLAMA_ACT_256);
        assert_eq!(worst.device["trainable"], router);
        assert_eq!(worst.device["optimizer"], 2 * router);
        // Worst case on a GPU (the composed path): every one of the M rows
        // in flight in every layer, with its gradient: 32 · 8464 · 2·4096·4 · 2.
        assert_eq!(worst.device["rows"], 17_750_294_528);
        // The adapter keeps per layer and token router logits (368), gate
        // indices and gates (2·64), six slot-sized values (6·64) and its
        // output (4096), all 4 B, plus the f16 sum into the layer, u widened
        // for it and the output narrowed (4096·(2 + 4 + 2)); and the
        // N × |U| scores, zeros and scatter (3·256·8464·4) per layer.
        let per_token = (368 + 2 * 64 + 6 * 64 + 4096) * 4 + 4096 * 8;
        let adapter = 32 * (256 * per_token + 3 * 256 * 8464 * 4);
        assert_eq!(worst.device[ADAPTER_ACTIVATIONS], adapter);
        assert!(!worst.device.contains_key(DEVICE_BACKWARD));
        assert_eq!(
            worst.device_total,
            LLAMA_BASE_F16 + 4 * router + 17_750_294_528 + adapter + LLAMA_ACT_256
        );
        assert_eq!(worst.fits, Some(false));
        assert!(worst
            .notes
            .iter()
            .any(|n| n == "fits while |U| ≤ 3920 rows per layer (46 % of M)"));

        // The paper's traffic figure (0.56× the adapter's parameters per
        // iteration, rows counted once, N 512, M 6144) implies |U| ≈ 0.52·M;
        // at half of M this implementation needs 24.7 GiB.
        let half = vec![8464 / 2; 32];
        let measured = must(&PlanInput {
            union_sizes: Some(&half),
            ..input
        });
        println!("{}", measured.table("LLaMA-7B · MEFT M 8464 · |U| = M/2"));
        assert_eq!(measured.device["rows"], 32 * 4232 * 8192 * 4 * 2);
        assert_eq!(measured.device_total, 26_452_828_160);
        assert_eq!(measured.fits, Some(false));
        let at_limit = vec![3920; 32];
        let fits = must(&PlanInput {
            union_sizes: Some(&at_limit),
            ..input
        });
        assert_eq!(fits.fits, Some(true));
        // The store and the accumulators stay on the host; the dense host
        // optimizer keeps moments for every row, in 4 MiB pages of 64 rows
        // (16 values of 4 B per row element): 133 pages per layer.
        assert_eq!(measured.host["store"], 32 * 8464 * 8192 * 4);
        assert_eq!(measured.host["moments"], 32 * 133 * 64 * 4096 * 16);
    }

    #[test]
    fn paper_dense_parallel_adapter_7b_needs_the_48_gib_card() {
        let model = shape("llama-7b");
        let mut exp = paper_nq();
        exp.method.kind = "parallel".into();
        exp.method.parallel.size = 8464;
        let p = must(&with_gpu(&exp, &model, 24 * GIB));
        println!("{}", p.table("LLaMA-7B · dense Parallel Adapter 8464"));
        // 32 layers × 2 × 8464 × 4096 f32 = 8.9 GB; with gradients and two
        // Adam moments 35.5 GB before the base is even loaded.
        let adapter = 32 * 2 * 8464 * 4096 * 4;
        assert_eq!(adapter, 8_875_147_264);
        assert_eq!(p.device["trainable"], adapter);
        assert_eq!(p.device["grads"], adapter);
        assert_eq!(p.device["optimizer"], 2 * adapter);
        assert!(!p.device.contains_key("rows"));
        assert!(p.host.is_empty());
        assert_eq!(p.traffic, Traffic::default());
        // It keeps u·Kᵀ and its SiLU (2·8464), its output (4096), f32, and
        // the f16 sum with u widened and the output narrowed (4096·8 B).
        let kept = 32 * 256 * ((2 * 8464 + 4096) * 4 + 4096 * 8);
        assert_eq!(p.device[ADAPTER_ACTIVATIONS], kept);
        assert_eq!(
            p.device_total,
            LLAMA_BASE_F16 + 4 * adapter + kept + LLAMA_ACT_256
        );
        assert_eq!(p.device_total, 52_416_356_352); // 48.8 GiB
        assert_eq!(p.fits, Some(false));
        let on_48 = must(&with_gpu(&exp, &model, 48 * GIB));
        assert_eq!(on_48.fits, Some(false));
        let on_80 = must(&with_gpu(&exp, &model, 80 * GIB));
        assert_eq!(on_80.fits, Some(true));
    }

    /// The paper's traffic setting: LLaMA-7B, M 6144, batch 2 × 256 tokens.
    fn paper_traffic() -> Experiment {
        let mut exp = paper_nq();
        exp.method.meft.neurons = 6144;
        exp.method.meft.experts = 0;
        exp.train.batch = 2;
        exp.train.micro_batch = 2;
        exp
    }

    #[test]
    fn automatic_experts_take_the_nearest_divisor_of_m() {
        // round(√6144 / 0.25) = 314 does not divide 6144; 256 (58 below) is
        // nearer than 384 (70 above).
        let exp = paper_traffic();
        assert_eq!(exp.method.meft.resolved_experts(), 256);
        assert!(plan(&PlanInput::new(&exp, &shape("llama-7b"))).is_ok());
        // 32,768: the rule gives 724; 512 is the nearest power of two.
        let mut m = exp.method.meft.clone();
        m.neurons = 32_768;
        assert_eq!(m.resolved_experts(), 512);
        // A prime M has no divisor near the rule: refused with a nearby M.
        m.neurons = 4_099;
        assert_eq!(m.resolved_experts(), 256);
        let mut prime = exp.clone();
        prime.method.meft.neurons = 4_099;
        let msg = error_of(&PlanInput::new(&prime, &shape("llama-7b")));
        assert!(
            msg.starts_with("method.meft.neurons: 256 experts do not divide 4099 neurons"),
            "{msg}"
        );
    }

    #[test]
    fn paper_traffic_setting_moves_half_of_a_dense_offload() {
        let model = shape("llama-7b");
        let mut exp = paper_traffic();
        exp.method.meft.experts = 384; // 384 × 16 keys
        let half = vec![6144 / 2; 32];
        let input = PlanInput {
            base_dtype_bytes: 2,
            union_sizes: Some(&half),
            ..PlanInput::new(&exp, &model)
        };
        assert_eq!(input.tokens_per_micro_batch, 512);
        let p = must(&input);
        println!(
            "{}",
            p.table("LLaMA-7B · MEFT M 6144 · batch 2 × 256 · |U| = M/2")
        );
        // Per layer: rows 3072·8192·4 both ways, ids 3072·4, map 512·64·4,
        // queries 512·4096·4, routing 512·8·(4+4); dense 2·2·6144·4096·4.
        let layer = 2 * 100_663_296 + 12_288 + 131_072 + 8_388_608 + 32_768;
        assert_eq!(p.traffic.h2d() + p.traffic.d2h(), 32 * layer);
        assert_eq!(p.dense_offload, 32 * 402_653_184);
        let ratio = p.offload_ratio().unwrap_or(f64::NAN);
        println!("MEFT moves {ratio:.4}× of a dense offload");
        assert!((ratio - 209_891_328.0 / 402_653_184.0).abs() < 1e-12);
        assert!(ratio < 1.0);
        assert!(p.table("t").contains("MEFT moves 0.52× of a dense offload"));

        // Unmeasured, the worst case (|U| = M) moves slightly more than the
        // dense offload: the saving is entirely the union being small.
        let worst = must(&PlanInput::new(&exp, &model));
        let worst_ratio = worst.offload_ratio().unwrap_or(f64::NAN);
        assert!(worst_ratio > 1.0 && worst_ratio < 1.03, "{worst_ratio}");
    }

    /// d 128, 2 adapter layers, M 64 in 8 experts, K 4, P 2, N 8.
    fn small() -> (Experiment, ModelConfig) {
        let mut model = shape("tiny");
        model.num_layers = 2;
        let mut exp = Experiment::default();
        exp.method.meft.neurons = 64;
        exp.method.meft.experts = 8;
        exp.method.meft.top_k = 4;
        exp.method.meft.probe = 2;
        exp.train.batch = 1;
        exp.train.micro_batch = 1;
        exp.train.cutoff_len = 8;
        (exp, model)
    }

    #[test]
    fn small_meft_traffic_by_kind_is_exact() {
        let (exp, model) = small();
        let unions = [10, 12];
        let input = PlanInput {
            tokens_per_micro_batch: 8,
            union_sizes: Some(&unions),
            ..PlanInput::new(&exp, &model)
        };
        let p = must(&input);
        let want = Traffic {
            rows: (10 + 12) * 2 * 128 * 4,
            ids: (10 + 12) * 4,
            map: 2 * 8 * 4 * 4,
            queries: 2 * 8 * 128 * 4,
            routing: 2 * 8 * 2 * (4 + 4),
            grads: (10 + 12) * 2 * 128 * 4,
        };
        assert_eq!(want.rows, 22_528);
        assert_eq!(p.traffic, want);
        assert_eq!(p.dense_offload, 2 * 2 * 2 * 64 * 128 * 4);
        assert_eq!(p.device["trainable"], 2 * 8 * 128 * 4);
        // On the CPU the fused kernel sends row gradients to the host as it
        // makes them: only the rows themselves sit on the device.
        assert_eq!(p.device["rows"], (10 + 12) * 2 * 128 * 4);
        assert_eq!(p.host["store"], 2 * 64 * 2 * 128 * 4);
        assert_eq!(p.host["moments"], 2 * p.host["store"]);
        assert_eq!(p.host["accumulators"], (10 + 12) * 2 * 128 * 4);

        // Two micro-batches per step: every kind crosses twice, and the
        // accumulators may hold twice the rows (still at most M per layer).
        let mut twice = exp.clone();
        twice.train.batch = 2;
        let p2 = must(&PlanInput {
            exp: &twice,
            ..input
        });
        let mut want2 = want.clone();
        want2.add(&want);
        assert_eq!(p2.traffic, want2);
        assert_eq!(p2.host["accumulators"], (20 + 24) * 2 * 128 * 4);
        assert_eq!(p2.device["rows"], p.device["rows"]);

        // Off the CPU the composed path keeps the rows' gradients on the
        // device until the backward pass ends.
        let mut gpu = exp.clone();
        gpu.model.device = "cuda:0".into();
        let pg = must(&PlanInput { exp: &gpu, ..input });
        assert_eq!(pg.device["rows"], 2 * p.device["rows"]);
    }

    #[test]
    fn unmeasured_unions_are_the_worst_case() {
        let (exp, model) = small();
        // N·K = 8·4 = 32 < M = 64, so the worst union is 32 rows.
        let p = must(&PlanInput {
            tokens_per_micro_batch: 8,
            ..PlanInput::new(&exp, &model)
        });
        assert_eq!(p.traffic.ids, 2 * 32 * 4);
        assert!(p
            .notes
            .iter()
            .any(|n| n.contains("worst case min(M, N·K) = 32")));
    }

    #[test]
    fn full_routing_has_no_router_and_sends_no_routing() {
        let (mut exp, model) = small();
        exp.method.meft.routing = "full".into();
        let p = must(&PlanInput {
            tokens_per_micro_batch: 8,
            ..PlanInput::new(&exp, &model)
        });
        assert_eq!(p.traffic.routing, 0);
        assert_eq!(p.traffic.queries, 2 * 8 * 128 * 4);
        assert_eq!(p.device["trainable"], 0);
    }

    #[test]
    fn lora_full_and_none_count_their_own_parameters() {
        let model = shape("tiny");
        let mut exp = Experiment::default();
        exp.method.kind = "lora".into();
        // q_proj 8·(128 + 128) + v_proj 8·(128 + 64), in 4 layers, f32.
        let lora = must(&PlanInput::new(&exp, &model));
        assert_eq!(lora.device["trainable"], 4 * (2048 + 1536) * 4);
        assert_eq!(lora.dense_offload, 2 * 4 * (2048 + 1536) * 4);
        assert_eq!(lora.traffic, Traffic::default());
        assert_eq!(lora.device["base"], 771_584 * 4);

        exp.method.kind = "full".into();
        let full = must(&PlanInput::new(&exp, &model));
        assert_eq!(full.device["base"], 0);
        assert_eq!(full.device["trainable"], 771_584 * 4);
        assert_eq!(full.device["optimizer"], 2 * 771_584 * 4);

        exp.method.kind = "none".into();
        let none = must(&PlanInput::new(&exp, &model));
        let keys: Vec<&str> = none.device.keys().map(String::as_str).collect();
        assert_eq!(keys, ["activations", "base"]);
        assert_eq!(none.dense_offload, 0);
        assert_eq!(none.offload_ratio(), None);
        assert_eq!(none.fits, None);
    }

    fn error_of(input: &PlanInput) -> String {
        match plan(input) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let (mut exp, model) = small();
        exp.method.meft.top_k = 65;
        let msg = error_of(&PlanInput::new(&exp, &model));
        assert_eq!(
            msg,
            "method.meft.top_k: must be in 1..=64 (method.meft.neurons), got 65"
        );

        let (mut exp, model) = small();
        exp.method.meft.layers = crate::config::Layers::List(vec![0, 5]);
        let msg = error_of(&PlanInput::new(&exp, &model));
        assert!(msg.starts_with("method.meft.layers: layer 5"), "{msg}");

        let (exp, model) = small();
        let one = [3];
        let msg = error_of(&PlanInput {
            union_sizes: Some(&one),
            ..PlanInput::new(&exp, &model)
        });
        assert_eq!(
            msg,
            "union_sizes: expected one size per adapter layer (2), got 1"
        );
        // A union estimate past min(M, N·K) = 32 is clamped, not refused.
        let too_big = [3, 33];
        let exact = [3, 32];
        let clamped = plan(&PlanInput {
            tokens_per_micro_batch: 8,
            union_sizes: Some(&too_big),
            ..PlanInput::new(&exp, &model)
        })
        .unwrap();
        let at_most = plan(&PlanInput {
            tokens_per_micro_batch: 8,
            union_sizes: Some(&exact),
            ..PlanInput::new(&exp, &model)
        })
        .unwrap();
        assert_eq!(clamped.traffic, at_most.traffic);
        let msg = error_of(&PlanInput {
            base_dtype_bytes: 0,
            ..PlanInput::new(&exp, &model)
        });
        assert!(msg.starts_with("base_dtype_bytes: "), "{msg}");
        let msg = error_of(&PlanInput {
            tokens_per_micro_batch: 0,
            ..PlanInput::new(&exp, &model)
        });
        assert_eq!(msg, "tokens_per_micro_batch: must be at least 1");
    }

    #[test]
    fn absurd_sizes_are_an_error_not_a_wrap() {
        let (mut exp, model) = small();
        exp.method.meft.neurons = 1 << 40;
        exp.method.meft.experts = 1 << 20;
        exp.method.meft.top_k = 1 << 30;
        let msg = error_of(&PlanInput {
            tokens_per_micro_batch: 1 << 40,
            ..PlanInput::new(&exp, &model)
        });
        assert!(msg.contains("do not fit in 64 bits"), "{msg}");
    }

    #[test]
    fn parse_bytes_reads_the_usual_spellings() {
        let cases = [
            ("24GiB", 24 * GIB),
            ("24 GB", 24 * GIB),
            ("24gb", 24 * GIB),
            ("80G", 80 * GIB),
            ("512MiB", 512 << 20),
            ("1.5GiB", 3 * GIB / 2),
            ("  64 KiB ", 64 << 10),
            ("2T", 2 << 40),
            ("1000", 1000),
            ("12 B", 12),
        ];
        for (text, want) in cases {
            match parse_bytes(text) {
                Ok(got) => assert_eq!(got, want, "{text}"),
                Err(e) => panic!("{text}: {e}"),
            }
        }
    }

    #[test]
    fn parse_bytes_rejects_what_it_cannot_read() {
        let msg = parse_bytes("24 parsecs").map_err(|e| e.to_string());
        assert_eq!(
            msg,
            Err(
                r#"--gpu-mem: cannot read "24 parsecs": expected a size like 24GiB or 512MiB"#
                    .into()
            )
        );
        for bad in [
            "",
            "GiB",
            "-1GiB",
            "1.2.3G",
            "1e3",
            "24 GiB GiB",
            "99999999999TiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn human_bytes_reads_like_the_dashboard() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(3174), "3.1 KiB");
        assert_eq!(human_bytes(412 << 20), "412 MiB");
        assert_eq!(human_bytes(2_040_109_466), "1.9 GiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn builtin_shapes_have_their_published_sizes() {
        let count = |n: &str| shape(n).param_count();
        assert_eq!(count("llama-7b"), 6_738_415_616);
        assert_eq!(count("mistral-7b"), 7_241_732_096);
        assert_eq!(count("smollm2-135m"), 134_515_008);
        assert_eq!(count("tiny"), 771_584);
        assert_eq!(builtin_shape("embedded:tiny"), builtin_shape("tiny"));
        assert_eq!(shape("mistral-7b").sliding_window, Some(4096));
        assert_eq!(builtin_shape("gpt-2"), None);
        assert!(BUILTIN_SHAPES.iter().all(|n| builtin_shape(n).is_some()));
    }

    #[test]
    fn table_lists_categories_in_order_with_the_verdict() {
        let (exp, model) = small();
        let unions = [10, 12];
        let p = must(&PlanInput {
            tokens_per_micro_batch: 8,
            union_sizes: Some(&unions),
            gpu_mem: Some(1 << 20),
            ..PlanInput::new(&exp, &model)
        });
        let table = p.table("small");
        let pos = |needle: &str| match table.find(needle) {
            Some(i) => i,
            None => panic!("{needle:?} missing from\n{table}"),
        };
        assert!(pos("  base") < pos("  rows") && pos("  rows") < pos("  activations"));
        assert!(pos("  store") < pos("  moments") && pos("  moments") < pos("  accumulators"));
        assert!(
            table.contains("rows 22.0 KiB · ids 88 B · map 256 B"),
            "{table}"
        );
        // 54 080 bytes moved against a 262 144-byte dense offload.
        assert!(
            table.contains("MEFT moves 0.21× of a dense offload"),
            "{table}"
        );
        assert!(table.contains("does not fit in 1.0 MiB ✗"), "{table}");
    }

    #[test]
    fn plan_round_trips_through_json() {
        let (exp, model) = small();
        let p = must(&PlanInput::new(&exp, &model));
        let json = serde_json::to_value(&p).map_err(|e| e.to_string());
        let back = json.and_then(|v| serde_json::from_value::<Plan>(v).map_err(|e| e.to_string()));
        assert_eq!(back, Ok(p));
    }
}
