//! A run's ledgers: device memory by category (base and trainable
//! parameters measured from the tensors that exist, the rest the planner's
//! formulas at the run's measured batch shape and unions), the planner's
//! prediction for the run as measured, and the memory check before an
//! adapter is allocated.

use crate::config::{Experiment, HostOptimizer, MethodKind};
use crate::event::{Category, Ledger};
use crate::model::Model;
use crate::telemetry::{plan, Plan, PlanInput};
use anyhow::Result;
use candle_core::Var;
use std::collections::BTreeMap;

/// The plan of `exp` on `model` at the given unions, micro-batch shape
/// (tokens, sequence length), rows with host moments and row-cache hit
/// rate; the config's worst case (or estimate) for each that is None.
pub fn plan_at(
    exp: &Experiment,
    model: &Model,
    unions: Option<&[u64]>,
    shape: Option<(u64, u64)>,
    moment_rows: Option<u64>,
    cache_hit_rate: Option<f64>,
) -> Option<Plan> {
    let mut input = PlanInput::new(exp, &model.config);
    input.base_dtype_bytes = model.dtype.size_in_bytes() as u64;
    if let Some((n, seq)) = shape {
        input.tokens_per_micro_batch = n;
        input.seq_len = seq;
    }
    input.union_sizes = unions;
    input.moment_rows = moment_rows;
    input.cache_hit_rate = cache_hit_rate;
    plan(&input).ok()
}

/// Bytes on the compute device by category: the base and the trainable
/// variables measured from their tensors, the rest from `planned` (the
/// plan at this step's shape and unions).
pub fn device_ledger(planned: Option<Plan>, model: &Model, vars: &[(String, Var)]) -> Ledger {
    let mut l = planned.map(|p| p.device).unwrap_or_default();
    let base: u64 = model
        .named_tensors()
        .iter()
        .map(|(_, t)| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        .sum();
    let trainable: u64 = vars.iter().map(|(_, v)| (v.elem_count() * 4) as u64).sum();
    // Full fine-tuning trains the base itself: count it once.
    let trains_base = vars.iter().any(|(n, _)| n.starts_with("model."));
    let base = if trains_base {
        base.saturating_sub(trainable)
    } else {
        base
    };
    l.insert(Category::Base, base);
    l.insert(Category::Trainable, trainable);
    l.insert(Category::Grads, trainable);
    l.insert(Category::Optimizer, 2 * trainable);
    l
}

/// The planner's figures for what a run measured, by the summary's keys.
pub fn predicted(p: &Plan, cpu: bool) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    out.insert("h2d_per_step".into(), p.traffic.h2d() as f64);
    out.insert("d2h_per_step".into(), p.traffic.d2h() as f64);
    out.insert("device_ledger".into(), p.device_total as f64);
    out.insert("host_ledger".into(), p.host_total as f64);
    // On the CPU the device is host memory too: the process holds both.
    if cpu {
        out.insert(
            "process_peak".into(),
            (p.host_total + p.device_total) as f64,
        );
    }
    out
}

/// Before anything of the adapter is allocated: refuse a configuration whose
/// certain host memory (the MEFT store, and the moments of every row when
/// the host optimizer is dense) exceeds what the machine has free, naming
/// the knob; warn when the plan's worst case (moments for every row,
/// worst-case unions, activations) does. The base is already loaded, so it
/// is not counted again.
pub fn check_memory(exp: &Experiment, model: &Model) -> Result<Option<String>> {
    let mut input = PlanInput::new(exp, &model.config);
    input.base_dtype_bytes = model.dtype.size_in_bytes() as u64;
    let p = plan(&input)?;
    let Some(free) = crate::telemetry::available_memory() else {
        return Ok(None);
    };
    let h = |k: Category| p.host.get(&k).copied().unwrap_or(0);
    let dv = |k: Category| p.device.get(&k).copied().unwrap_or(0);
    let mut certain = h(Category::Store);
    if exp.method.meft.host_optimizer == HostOptimizer::Dense {
        certain += h(Category::Moments);
    }
    if model.device.is_cpu() {
        // Trainable parameters and their AdamW moments exist from the start.
        certain += dv(Category::Trainable) + dv(Category::Optimizer);
    }
    let gib = |b: u64| crate::units::bytes(b);
    if certain > free {
        let knob = match exp.method.kind {
            MethodKind::Meft => "method.meft.neurons",
            MethodKind::Parallel => "method.parallel.size",
            MethodKind::Lora => "method.lora.rank",
            _ => "method.kind",
        };
        anyhow::bail!(
            "{knob}: the adapter's parameters and their state need {} of memory before the first step; {} is free",
            gib(certain),
            gib(free)
        );
    }
    let base = p.device.get(&Category::Base).copied().unwrap_or(0);
    let worst = p.host_total
        + if model.device.is_cpu() {
            p.device_total.saturating_sub(base)
        } else {
            0
        };
    Ok((worst > free).then(|| {
        format!(
            "warning: at worst (moments for every row, worst-case unions) this run needs {} beyond the base; {} is free: it may run out of memory (method.meft.moments = \"q8\" or a smaller batch needs less)",
            gib(worst),
            gib(free)
        )
    }))
}
