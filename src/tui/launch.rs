//! What the setup screen needs from the rest of the program: a launcher that
//! starts the real trainer in a new run directory, and a previewer that asks
//! the planner what a configuration will cost, next to the methods it is
//! compared with.

use super::{CostPreview, CostRow, Launcher, PlanKnobs, Previewer, UnionAssumption};
use crate::config::{Experiment, MethodKind};
use crate::event::Event;
use crate::telemetry::plan;
use crate::train::RunHandle;
use std::path::{Path, PathBuf};

/// Starts runs under `root` (one directory per run), each in a process of
/// its own that outlives the TUI, and follows it through its directory.
pub struct RunLauncher {
    pub root: PathBuf,
}

impl Launcher for RunLauncher {
    fn start(&mut self, exp: &Experiment) -> Result<RunHandle, String> {
        let flat = |e: anyhow::Error| crate::fsx::error_line(&e);
        exp.validate().map_err(|e| e.to_string())?;
        let dir = crate::train::new_run_dir(&self.root, &exp.name).map_err(flat)?;
        let started = exp
            .save(&dir.join("config.toml"))
            .map_err(anyhow::Error::from)
            .and_then(|()| crate::detach::spawn(&dir, false));
        if let Err(e) = started {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(flat(e));
        }
        crate::train::remote::attach(&dir).map_err(flat)
    }
}

/// The planner's prediction for the setup screen: MEFT next to the dense
/// Parallel Adapter of the same M and LoRA, at the unions the knobs assume
/// (a measured one from the newest run of the same shape under `runs`).
pub fn planner_preview(runs: PathBuf) -> Previewer {
    let measured = MeasuredUnions::scan(&runs);
    Box::new(move |exp: &Experiment, knobs: &PlanKnobs| {
        preview(exp, knobs, &measured).unwrap_or_else(|error| CostPreview {
            error: Some(error),
            gpu_mem: knobs.gpu_mem,
            ..Default::default()
        })
    })
}

fn preview(
    exp: &Experiment,
    knobs: &PlanKnobs,
    measured: &MeasuredUnions,
) -> Result<CostPreview, String> {
    let model =
        crate::model::shapes::shape_of(&exp.model.reference).map_err(crate::fsx::one_line)?;
    let layers = exp
        .method
        .meft
        .layers
        .resolve(model.num_layers)
        .map_err(|e| e.to_string())?
        .len();
    let m = exp.method.meft.neurons;
    let worst = (m as u64).min(
        (exp.train.micro_batch as u64)
            .saturating_mul(exp.train.cutoff_len as u64)
            .saturating_mul(exp.method.meft.top_k as u64),
    );
    let (unions, union_note): (Option<Vec<u64>>, String) = match knobs.union {
        UnionAssumption::WorstCase => (None, format!("worst case min(M, N·K) = {worst} rows")),
        UnionAssumption::Fraction(f) => {
            let rows = (f * m as f64).round() as u64;
            let whose = if (f - plan::PAPER_UNION_FRACTION).abs() < 1e-9 {
                " (the paper's)"
            } else {
                ""
            };
            (
                Some(vec![rows; layers]),
                format!("{f}·M = {} rows{whose}", rows.min(worst)),
            )
        }
        UnionAssumption::Measured => match measured.matching(exp) {
            Some((run, u)) if u.len() == layers => {
                let mean = u.iter().sum::<u64>() / u.len().max(1) as u64;
                let share = mean as f64 / m.max(1) as f64;
                (
                    Some(u.clone()),
                    format!("{mean} rows = {share:.2}·M, measured by {run}"),
                )
            }
            _ => (
                None,
                format!("no run of this shape yet; worst case {worst} rows"),
            ),
        },
    };
    let base = plan::PlanInput {
        base_dtype_bytes: exp.model.dtype.bytes(),
        gpu_mem: Some(knobs.gpu_mem),
        ..plan::PlanInput::new(exp, &model)
    };
    let as_method = |kind: MethodKind| {
        let mut e = exp.clone();
        e.method.kind = kind;
        // The dense adapter of the same size: M neurons in the same layers.
        e.method.parallel.size = m;
        e
    };
    let row = |label: &str, detail: String, e: &Experiment, u: Option<&[u64]>| {
        let p = plan::plan(&plan::PlanInput {
            exp: e,
            union_sizes: u,
            ..base
        })
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((
            CostRow {
                method: label.to_string(),
                abbrev: if label == "Parallel" { "PA" } else { label }.to_string(),
                detail,
                device: p.device_total,
                host: p.host_total,
                per_step: p.traffic.h2d().saturating_add(p.traffic.d2h()),
                fits: p.fits == Some(true),
                chosen: e.method.kind == exp.method.kind,
            },
            p,
        ))
    };
    let meft_exp = as_method(MethodKind::Meft);
    let (meft, meft_plan) = row("MEFT", String::new(), &meft_exp, unions.as_deref())?;
    // The chosen method's own plan, category by category.
    let chosen = match exp.method.kind {
        MethodKind::Meft => meft_plan.clone(),
        _ => row("", String::new(), exp, None)?.1,
    };
    let by_category = |l: &crate::event::Ledger| {
        l.iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.name().to_string(), *v))
            .collect::<Vec<_>>()
    };
    let breakdown = vec![
        ("device".to_string(), by_category(&chosen.device)),
        ("host".to_string(), by_category(&chosen.host)),
    ];
    let mut rows = vec![meft];
    if unions.is_some() {
        let (mut w, _) = row("MEFT", "worst".into(), &meft_exp, None)?;
        w.chosen = false;
        rows.push(w);
    }
    let parallel = as_method(MethodKind::Parallel);
    rows.push(row("Parallel", format!("M {m}"), &parallel, None)?.0);
    let lora = as_method(MethodKind::Lora);
    let rank = format!("r {}", exp.method.lora.rank);
    rows.push(row("LoRA", rank, &lora, None)?.0);
    Ok(CostPreview {
        rows,
        union_note,
        dense_offload: meft_plan
            .offload_ratio()
            .map(|r| (meft_plan.dense_offload, r)),
        gpu_mem: knobs.gpu_mem,
        breakdown,
        notes: chosen.notes,
        error: None,
    })
}

/// Per-layer |U| (per micro-batch, averaged over the run) measured by the
/// runs under a directory (finished or not), newest first.
#[derive(Default)]
struct MeasuredUnions {
    runs: Vec<(String, Experiment, Vec<u64>)>,
}

impl MeasuredUnions {
    /// Read the newest runs' configs and step events; a run that cannot be
    /// read is left out.
    fn scan(root: &Path) -> Self {
        let Ok(dirs) = std::fs::read_dir(root) else {
            return Self::default();
        };
        let mut dirs: Vec<PathBuf> = dirs.flatten().map(|d| d.path()).collect();
        // Run directories end in a UTC stamp, so names sort by time within a name;
        // the modification time orders across names.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.metadata().and_then(|m| m.modified()).ok()));
        let runs = dirs
            .iter()
            .take(RUNS_SCANNED)
            .filter_map(|d| Self::read(d))
            .collect();
        Self { runs }
    }

    fn read(dir: &Path) -> Option<(String, Experiment, Vec<u64>)> {
        let exp = Experiment::load(&dir.join("config.toml")).ok()?;
        let events = crate::event::read_events(&dir.join("events.jsonl")).ok()?;
        let mut totals: Vec<u64> = Vec::new();
        let mut steps = 0u64;
        for e in &events {
            if let Event::Step(s) = e {
                if totals.len() != s.union_sizes.len() {
                    totals = vec![0; s.union_sizes.len()];
                }
                for (t, u) in totals.iter_mut().zip(&s.union_sizes) {
                    *t += u;
                }
                steps += 1;
            }
        }
        let accumulation = (exp.train.batch / exp.train.micro_batch.max(1)).max(1) as u64;
        let per_micro = steps.checked_mul(accumulation).filter(|&n| n > 0)?;
        if totals.is_empty() {
            return None;
        }
        let name = dir.file_name()?.to_string_lossy().into_owned();
        let unions = totals.iter().map(|t| t / per_micro).collect();
        Some((name, exp, unions))
    }

    /// The newest run whose unions this experiment would see again: the
    /// same model, adapter shape, routing and micro-batch shape.
    fn matching(&self, exp: &Experiment) -> Option<(&str, &Vec<u64>)> {
        let key = |e: &Experiment| {
            let m = &e.method.meft;
            (
                e.model.reference.clone(),
                e.data.task,
                e.data.train.clone(),
                (m.neurons, m.top_k, m.resolved_experts(), m.probe, m.routing),
                m.layers.clone(),
                (e.train.micro_batch, e.train.cutoff_len),
            )
        };
        let want = key(exp);
        self.runs
            .iter()
            .find(|(_, e, _)| e.method.kind == MethodKind::Meft && key(e) == want)
            .map(|(name, _, u)| (name.as_str(), u))
    }
}

/// How many of the newest run directories the setup screen reads for a
/// measured union.
const RUNS_SCANNED: usize = 32;
