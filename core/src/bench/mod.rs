//! `meft bench`: the performance table, measured side by side in one
//! process so that ratios hold from one machine to the next. Every figure
//! is measured here (with its spread over repeats) or computed by the
//! planner, and says which.
//!
//! Sections: the machine's ceiling (sgemm, memcpy), retrieval (full key
//! scan against Key-Experts as M grows), training steps (frozen base, LoRA,
//! Parallel Adapter, MEFT), traffic against a dense offload, the host
//! optimizer, device memory against the dense adapter, the paper's overlap
//! knobs, and the cost of telemetry.

mod cache;
mod memory;
mod overlap;
mod retrieval;
mod step;

use serde::Serialize;
use std::time::Instant;

/// How much to measure, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// A reduced grid that finishes in a few minutes.
    pub quick: bool,
    /// The compute device of the sgemm ceiling and the training steps
    /// (retrieval and the host optimizer are the host's by design).
    pub device: candle_core::Device,
}

/// Median and range of repeated timings, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub reps: usize,
}

impl Timing {
    /// Spread as "±x %" of the median (half the range).
    pub fn spread_pct(&self) -> f64 {
        if self.median > 0.0 {
            50.0 * (self.max - self.min) / self.median
        } else {
            0.0
        }
    }
}

/// Time `f` `reps` times after `warmup` unmeasured runs.
pub fn time<T>(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut v = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    Ok(Timing {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
        reps: v.len(),
    })
}

/// One figure of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub value: String,
    /// Where the figure comes from: "measured", "planned", or a comment.
    pub source: String,
}

/// One section: its rows and the targets it is held to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
    /// Targets, each with whether it was met.
    pub checks: Vec<(String, bool)>,
    /// Numbers for JSON readers, by name.
    pub figures: serde_json::Map<String, serde_json::Value>,
}

impl Section {
    fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
            checks: Vec::new(),
            figures: serde_json::Map::new(),
        }
    }

    fn row(&mut self, name: impl Into<String>, value: impl Into<String>, source: &str) {
        self.rows.push(Row {
            name: name.into(),
            value: value.into(),
            source: source.into(),
        });
    }

    fn check(&mut self, what: impl Into<String>, met: bool) {
        self.checks.push((what.into(), met));
    }

    fn figure(&mut self, name: &str, v: impl Serialize) {
        if let Ok(v) = serde_json::to_value(v) {
            self.figures.insert(name.into(), v);
        }
    }
}

/// The whole bench: what machine, then every section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub machine: String,
    pub device: String,
    pub quick: bool,
    pub seconds: f64,
    pub sections: Vec<Section>,
}

impl Report {
    /// The table as text.
    pub fn table(&self) -> String {
        let mut out = format!(
            "meft bench{} · {} · device {} · {:.0} s\n",
            if self.quick { " --quick" } else { "" },
            self.machine,
            self.device,
            self.seconds
        );
        for s in &self.sections {
            out.push_str(&format!(
                "\n{}\n{}\n",
                s.title,
                "─".repeat(s.title.chars().count())
            ));
            let w = s
                .rows
                .iter()
                .map(|r| r.name.chars().count())
                .max()
                .unwrap_or(0);
            let v = s
                .rows
                .iter()
                .map(|r| r.value.chars().count())
                .max()
                .unwrap_or(0);
            for r in &s.rows {
                let pad = v - r.value.chars().count();
                out.push_str(&format!(
                    "  {:<w$}  {}{}  {}\n",
                    r.name,
                    " ".repeat(pad),
                    r.value,
                    r.source
                ));
            }
            for (what, met) in &s.checks {
                out.push_str(&format!("  {} {what}\n", if *met { "✓" } else { "✗" }));
            }
        }
        out
    }
}

/// What this machine is, in one line: CPU model and cores.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model}, {cores} cores")
}

/// Run every section, reporting each title as it starts.
pub fn run(opts: Options, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let mut sections = Vec::new();
    progress("ceiling");
    let ceiling = memory::ceiling(&opts)?;
    let (gflops, memcpy_gbs) = (ceiling.1, ceiling.2);
    sections.push(ceiling.0);
    progress("retrieval");
    sections.push(retrieval::section(&opts)?);
    progress("steps");
    sections.extend(step::sections(&opts, gflops)?);
    progress("host optimizer");
    sections.push(memory::host_optimizer(&opts, memcpy_gbs)?);
    progress("device memory and traffic (planned)");
    sections.push(memory::planned()?);
    Ok(Report {
        machine: machine(),
        device: format!("{:?}", opts.device.location()),
        quick: opts.quick,
        seconds: t0.elapsed().as_secs_f64(),
        sections,
    })
}

/// `meft bench --config FILE`: the first `steps` steps of that run, each
/// through the trainer's own `train_step` (the step function, then the
/// ledgers, events and histograms a run emits), timed by the trainer as a
/// run times them. Nothing is checkpointed or evaluated.
pub fn run_config(
    exp: &crate::config::Experiment,
    steps: usize,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    exp.validate()?;
    progress("the model");
    let loaded = crate::train::load_base(exp)?;
    let dir = tempfile::tempdir()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (_ctl, ctl_rx) = std::sync::mpsc::channel();
    let mut t = crate::train::trainer::Trainer::new(exp.clone(), loaded, dir.path(), tx, ctl_rx)?;
    let steps = (steps.max(1) as u64).min(t.total);
    for i in 0..steps {
        progress(&format!("step {} of {steps}", i + 1));
        t.train_step()?;
        // A run's watcher drains the events as they come.
        rx.try_iter().for_each(drop);
    }
    let summary = t.summary();
    let mut times = t.tally.step_times.clone();
    times.sort_by(f64::total_cmp);
    let timing = Timing {
        median: summary.median_step_s,
        min: times.first().copied().unwrap_or(f64::NAN),
        max: times.last().copied().unwrap_or(f64::NAN),
        reps: times.len(),
    };
    let mut s = Section::new(&format!(
        "The run's own steps: {} ({} · {} of {} steps)",
        exp.name, exp.method.kind, steps, t.total
    ));
    s.row(
        "median step",
        format!(
            "{:.3} s ±{:.0} % (fastest {:.3}, slowest {:.3})",
            timing.median,
            timing.spread_pct(),
            timing.min,
            timing.max
        ),
        "measured by the trainer, as `meft run` reports its median step",
    );
    s.row(
        "tokens per second",
        format!(
            "{:.0}",
            summary.tokens as f64 / t.tally.step_times.iter().sum::<f64>().max(1e-9)
        ),
        "measured",
    );
    s.row(
        "loss, first and last step",
        format!("{:.4} → {:.4}", summary.first_loss, summary.final_loss),
        "measured",
    );
    s.figure("median_step_s", timing.median);
    s.figure("fastest_step_s", timing.min);
    s.figure("slowest_step_s", timing.max);
    s.figure("steps", steps);
    Ok(Report {
        machine: machine(),
        device: format!("{:?}", t.model.device.location()),
        quick: false,
        seconds: t0.elapsed().as_secs_f64(),
        sections: vec![s],
    })
}

/// Least-squares slope of log(y) against log(x): how y grows with x.
pub fn growth_exponent(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = pts.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let sxx: f64 = pts.iter().map(|(x, _)| x * x).sum();
    let sxy: f64 = pts.iter().map(|(x, y)| x * y).sum();
    (n * sxy - sx * sy) / (n * sxx - sx * sx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_exponents_by_hand() {
        // y = 3·x²: slope 2; y = 5·√x: slope 0.5.
        let sq: Vec<(f64, f64)> = [1.0f64, 2.0, 4.0, 8.0]
            .iter()
            .map(|&x| (x, 3.0 * x * x))
            .collect();
        assert!((growth_exponent(&sq) - 2.0).abs() < 1e-12);
        let rt: Vec<(f64, f64)> = [4.0f64, 16.0, 64.0]
            .iter()
            .map(|&x| (x, 5.0 * x.sqrt()))
            .collect();
        assert!((growth_exponent(&rt) - 0.5).abs() < 1e-12);
        assert!(growth_exponent(&[(1.0, 1.0)]).is_nan());
    }

    #[test]
    fn timings_report_median_and_range() {
        let mut i = 0;
        let t = time(1, 3, || {
            i += 1;
            Ok(())
        })
        .unwrap_or(Timing {
            median: -1.0,
            min: 0.0,
            max: 0.0,
            reps: 0,
        });
        assert_eq!((t.reps, i), (3, 4));
        assert!(t.min <= t.median && t.median <= t.max);
    }
}
