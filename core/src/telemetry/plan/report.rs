//! The planner's figures as people read them: a plan's table, and the whole
//! `meft plan` report (the plan, the paper's union, the dense adapter of
//! the same size, the verdict on a card).

use super::{plan, Plan, PlanInput};
use crate::config::{Experiment, MethodKind};
use crate::model::shapes::shape_of;
use crate::units::{bytes, ratio};

impl Plan {
    /// The plan as a plain-text table under `title`.
    pub fn table(&self, title: &str) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: u64, detail: String| {
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!("   {detail}")
            };
            out.push_str(&format!("{label:<18}{:>10}{detail}\n", bytes(value)));
        };
        let title_line = format!("{title}\n{}\n", "─".repeat(title.chars().count().max(40)));
        line("device memory", self.device_total, String::new());
        for (k, v) in &self.device {
            line(&format!("  {}", k.name()), *v, String::new());
        }
        let host_detail = if self.host.is_empty() {
            "nothing is kept in host memory".to_string()
        } else {
            String::new()
        };
        line("host memory", self.host_total, host_detail);
        for (k, v) in &self.host {
            line(&format!("  {}", k.name()), *v, String::new());
        }
        let t = &self.traffic;
        let kinds = |to_device: bool| {
            t.by_kind(to_device)
                .iter()
                .map(|(k, v)| format!("{} {}", k.name(), bytes(*v)))
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
                kinds(true)
            },
        );
        line(
            "D→H per step",
            t.d2h(),
            if moved == 0 {
                String::new()
            } else {
                kinds(false)
            },
        );
        if let Some(r) = self.offload_ratio() {
            let verdict = if moved == 0 {
                "this method moves nothing: its parameters stay on the device".to_string()
            } else {
                format!("MEFT moves {} of a dense offload", ratio(r))
            };
            line("dense offload", self.dense_offload, verdict);
        }
        // The headroom, or how far over: the same distance either way.
        let room = |gpu: u64| bytes(gpu.abs_diff(self.device_total));
        let fit = match (self.gpu_mem, self.fits) {
            (Some(gpu), Some(true)) => format!(
                "fits in {} ✓  (device {} ≤ {}, headroom {})",
                bytes(gpu),
                bytes(self.device_total),
                bytes(gpu),
                room(gpu)
            ),
            (Some(gpu), _) => format!(
                "does not fit in {} ✗  (device {} > {}, {} over)",
                bytes(gpu),
                bytes(self.device_total),
                bytes(gpu),
                room(gpu)
            ),
            (None, _) => format!(
                "no device size given; the plan needs {}",
                bytes(self.device_total)
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

/// |U| / M implied by the paper's traffic figure: MEFT moved ≈0.56× the
/// adapter's parameters per iteration (LLaMA-7B, M 6144, batch 2 × 256,
/// rows counted once), i.e. |U|·2d ≈ 0.56 · 2·M·d.
pub const PAPER_UNION_FRACTION: f64 = 0.56;

/// Parameters a step's row copies carry (rows up, counted once) over the
/// parameters a dense offload moves (all of them up and their gradients
/// down), whatever the dtypes: the paper's way of counting.
pub fn paper_counted_ratio(p: &Plan, row_bytes: u64) -> Option<f64> {
    let rows = p.traffic[crate::event::Kind::Rows] as f64 / row_bytes.max(1) as f64;
    let dense = p.dense_offload as f64 / 4.0;
    (dense > 0.0).then(|| rows / dense)
}

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

/// `meft plan`: the experiment's plan next to a dense Parallel Adapter of
/// the same size (what the same adapter costs without MEFT), as text or JSON.
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
        base_dtype_bytes: exp.model.dtype.bytes(),
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
    if exp.method.kind == MethodKind::Meft {
        dense_exp.method.kind = MethodKind::Parallel;
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
    let paper_case = match (assumed, exp.method.kind) {
        (true, MethodKind::Meft) => {
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
        let rd = exp.method.meft.resolved_row_dtype(exp.model.dtype);
        out.push_str(&format!(
            "\nAt the paper's measured union (|U| ≈ {PAPER_UNION_FRACTION} × M): device {} ({}), \
             H→D {} · D→H {} per step = {:.2}× a dense offload of {} (f32, both ways; rows in {rd}).\n",
            bytes(pc.device_total),
            verdict(pc),
            bytes(t.h2d()),
            bytes(t.d2h()),
            pc.offload_ratio().unwrap_or(0.0),
            bytes(pc.dense_offload),
        ));
        if let Some(r) = paper_counted_ratio(pc, rd.bytes()) {
            out.push_str(&format!(
                "Counted in parameters as the paper's Eq. 8 does (rows once, the offload both ways): {r:.2}× (the paper: {PAPER_UNION_FRACTION}/2 = {:.2}×).\n",
                PAPER_UNION_FRACTION / 2.0
            ));
        }
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
                    bytes(main.device_total),
                    verdict(&main),
                    bytes(pc.device_total),
                    verdict(pc)
                ),
                None => format!("{} ({})", bytes(main.device_total), verdict(&main)),
            };
            out.push_str(&format!(
                "\nOn {}: MEFT needs {meft_line}; the dense adapter needs {} ({}).\n",
                bytes(g),
                bytes(c.device_total),
                verdict(&c),
            ));
        }
    }
    Ok(out)
}
