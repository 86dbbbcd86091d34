//! A study's report from its runs as they are on disk: each point's runs
//! and their mean, each claim decided from those means, as JSON and as
//! Markdown.

use super::{ClaimKind, Plan, Study, XAxis};
use crate::train::runs::{decimal, grouped, RunRecord};
use crate::units;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub title: String,
    pub about: String,
    pub quick: bool,
    /// The machine the runs trained on, as the first run recorded it.
    pub machine: Option<String>,
    pub groups: Vec<GroupReport>,
    pub claims: Vec<ClaimReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub id: String,
    pub title: String,
    pub about: String,
    pub metric: String,
    pub x: XAxis,
    /// Why the group has no runs.
    pub skipped: Option<String>,
    pub points: Vec<PointReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PointReport {
    pub series: String,
    pub label: String,
    /// The metric's mean over the runs that measured it.
    pub mean: Option<f64>,
    /// Trainable parameters (the same at every seed).
    pub params: Option<u64>,
    /// The largest peak device ledger of its runs, in bytes.
    pub device_ledger: Option<u64>,
    /// The peak learning rate its runs trained at.
    pub lr: Option<f64>,
    pub runs: Vec<RunReport>,
}

/// Other processes' average busy cores from which a run's step times are
/// marked as measured beside other work.
pub const BUSY_CORES: f64 = 0.25;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    /// The run directory, relative to the study's output folder.
    pub dir: String,
    /// finished, diverged, failed, … as `meft runs` says it.
    pub state: String,
    /// The group's metric from the run's summary (its final evaluation).
    pub metric: Option<f64>,
    pub final_loss: Option<f64>,
    pub wall_s: Option<f64>,
    pub median_step_s: Option<f64>,
    /// Cores other processes kept busy while it trained (its telemetry's
    /// system load less its own), on average: its times are comparable
    /// only where this is near 0.
    pub other_load_cores: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimReport {
    pub text: String,
    pub paper: String,
    pub verdict: Verdict,
    /// The figures that decide it.
    pub measured: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Holds,
    Fails,
    Unmeasured,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "does not hold",
            Verdict::Unmeasured => "not measured",
        }
    }
}

pub(super) fn build(study: &Study, plan: &Plan, quick: bool, out: &Path) -> Report {
    let mut machine = None;
    let mut groups: Vec<GroupReport> = study
        .groups
        .iter()
        .zip(&plan.skipped)
        .map(|(g, skipped)| GroupReport {
            id: g.id.clone(),
            title: g.title.clone(),
            about: g.about.clone(),
            metric: g.metric.clone(),
            x: g.x,
            skipped: skipped.clone(),
            points: Vec::new(),
        })
        .collect();
    for run in &plan.runs {
        let rec = RunRecord::read(&run.dir);
        if machine.is_none() {
            machine = rec.info.as_ref().and_then(|i| i.machine.clone());
        }
        let g = &mut groups[run.group];
        let p = &study.points[run.point];
        let i = match g
            .points
            .iter()
            .position(|q| q.series == p.series && q.label == p.label)
        {
            Some(i) => i,
            None => {
                g.points.push(PointReport {
                    series: p.series.clone(),
                    label: p.label.clone(),
                    mean: None,
                    params: None,
                    device_ledger: None,
                    lr: None,
                    runs: Vec::new(),
                });
                g.points.len() - 1
            }
        };
        let point = &mut g.points[i];
        let summary = rec.summary.as_ref();
        point.params = point.params.or(rec.trainable_params());
        point.device_ledger = point.device_ledger.max(rec.peak_device_ledger());
        point.lr = Some(run.exp.train.lr);
        point.runs.push(RunReport {
            seed: run.seed,
            dir: run
                .dir
                .strip_prefix(out)
                .unwrap_or(&run.dir)
                .display()
                .to_string(),
            state: rec.state.name().to_string(),
            metric: summary.and_then(|s| s.metrics.get(&g.metric).copied()),
            final_loss: rec.final_loss(),
            wall_s: summary.map(|s| s.wall_s),
            median_step_s: rec.median_step_s(),
            other_load_cores: rec.other_load_cores(),
        });
    }
    for p in groups.iter_mut().flat_map(|g| g.points.iter_mut()) {
        let v: Vec<f64> = p.runs.iter().filter_map(|r| r.metric).collect();
        p.mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    }
    let claims = study
        .claims
        .iter()
        .map(|c| {
            let g = groups.iter().find(|g| g.id == c.group);
            let (verdict, measured) = match g {
                Some(g) => decide(c, g),
                None => (Verdict::Unmeasured, String::new()),
            };
            ClaimReport {
                text: c.text.clone(),
                paper: c.paper.clone(),
                verdict,
                measured,
            }
        })
        .collect();
    Report {
        name: study.name.clone(),
        title: study.title.clone(),
        about: study.about.clone(),
        quick,
        machine,
        groups,
        claims,
    }
}

/// The mean over every run of `series` in `g` that measured the metric.
fn series_mean(g: &GroupReport, series: &str) -> Option<f64> {
    let v: Vec<f64> = g
        .points
        .iter()
        .filter(|p| p.series == series)
        .flat_map(|p| p.runs.iter().filter_map(|r| r.metric))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A series' points with a mean, smallest adapter first.
fn by_size<'a>(g: &'a GroupReport, series: &str) -> Vec<&'a PointReport> {
    let mut pts: Vec<&PointReport> = g
        .points
        .iter()
        .filter(|p| p.series == series && p.mean.is_some())
        .collect();
    pts.sort_by_key(|p| p.params.unwrap_or(0));
    pts
}

fn decide(c: &super::Claim, g: &GroupReport) -> (Verdict, String) {
    if let Some(why) = &g.skipped {
        return (Verdict::Unmeasured, why.clone());
    }
    let m = &g.metric;
    let points = |d: f64| format!("{:+.1} points", 100.0 * d);
    match c.kind {
        ClaimKind::Ahead | ClaimKind::Within => {
            let (Some(a), Some(b)) = (series_mean(g, &c.a), series_mean(g, &c.b)) else {
                return (
                    Verdict::Unmeasured,
                    format!("no finished run of {} or {} measured {m}", c.a, c.b),
                );
            };
            let d = a - b;
            let (ok, need) = match c.kind {
                ClaimKind::Ahead => (100.0 * d >= c.by, format!("needs ≥ +{} points", c.by)),
                _ => (
                    100.0 * d.abs() <= c.by,
                    format!("needs within ±{} points", c.by),
                ),
            };
            let text = format!(
                "{} {} vs {} {}: {} ({need})",
                c.a,
                decimal(a),
                c.b,
                decimal(b),
                points(d)
            );
            (verdict(ok), text)
        }
        ClaimKind::Grows | ClaimKind::Flat => {
            let mut ok = true;
            let mut parts = Vec::new();
            for s in &c.series {
                let pts = by_size(g, s);
                let means: Vec<f64> = pts.iter().filter_map(|p| p.mean).collect();
                if means.len() < 2 {
                    return (
                        Verdict::Unmeasured,
                        format!("{s}: fewer than two sizes measured {m}"),
                    );
                }
                // A line of zeros is flat because nothing was learned: it
                // decides nothing about what capacity buys.
                if c.kind == ClaimKind::Flat && means.iter().all(|&v| v == 0.0) {
                    return (
                        Verdict::Unmeasured,
                        format!("{s}: every run scored {m} 0 at every size, so the runs cannot tell what capacity buys"),
                    );
                }
                let (first, last) = (means[0], means[means.len() - 1]);
                let spread = means.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    - means.iter().copied().fold(f64::INFINITY, f64::min);
                let seq: Vec<String> = pts
                    .iter()
                    .filter_map(|p| p.mean.map(|v| format!("{} {}", p.label, decimal(v))))
                    .collect();
                match c.kind {
                    ClaimKind::Grows => {
                        ok &= 100.0 * (last - first) >= c.by;
                        parts.push(format!(
                            "{s}: {} ({} smallest to largest)",
                            seq.join(" → "),
                            points(last - first)
                        ));
                    }
                    _ => {
                        ok &= 100.0 * spread <= c.by;
                        parts.push(format!(
                            "{s}: {} (spread {:.1} points)",
                            seq.join(" → "),
                            100.0 * spread
                        ));
                    }
                }
            }
            let need = match c.kind {
                ClaimKind::Grows => format!("needs ≥ +{} points", c.by),
                _ => format!("needs a spread ≤ {} points", c.by),
            };
            (verdict(ok), format!("{}; {need}", parts.join("; ")))
        }
    }
}

fn verdict(ok: bool) -> Verdict {
    match ok {
        true => Verdict::Holds,
        false => Verdict::Fails,
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

impl Report {
    /// The report as Markdown; each group with a measured point shows its
    /// plot as `<group id>.svg` beside the report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", self.title);
        if !self.about.is_empty() {
            let _ = writeln!(out, "{}\n", self.about);
        }
        let runs: Vec<&RunReport> = self
            .groups
            .iter()
            .flat_map(|g| g.points.iter().flat_map(|p| p.runs.iter()))
            .collect();
        let finished = runs.iter().filter(|r| r.metric.is_some()).count();
        let _ = writeln!(
            out,
            "{} runs, {finished} of them measured{}. Measured on {}. Every figure below comes from the runs' own logs (`events.jsonl`, in the run directories named in the last column); a point's figure is the mean over its seeds, each seed's value listed beside it. A median step marked \"beside N busy cores\" was timed while other processes kept N cores busy on average (the run's telemetry: the machine's busy cores less its own); compare step times only between unmarked runs.\n",
            runs.len(),
            if self.quick { " (the quick grid)" } else { "" },
            self.machine.as_deref().unwrap_or("an unrecorded machine")
        );
        let _ = writeln!(out, "## Claims\n");
        let _ = writeln!(out, "| claim | measured | verdict | the paper |");
        let _ = writeln!(out, "|---|---|---|---|");
        for c in &self.claims {
            let _ = writeln!(
                out,
                "| {} | {} | **{}** | {} |",
                cell(&c.text),
                cell(&c.measured),
                c.verdict.name(),
                cell(&c.paper)
            );
        }
        for g in &self.groups {
            let _ = writeln!(out, "\n## {}\n", g.title);
            if !g.about.is_empty() {
                let _ = writeln!(out, "{}\n", g.about);
            }
            if let Some(why) = &g.skipped {
                let _ = writeln!(out, "_{}_", why.trim_end_matches('.'));
                continue;
            }
            if g.points.iter().any(|p| p.mean.is_some()) {
                let _ = writeln!(out, "![{}]({}.svg)\n", g.title, g.id);
            }
            let _ = writeln!(
                out,
                "| series | point | {m} | {m} by seed | trainable params | peak device ledger | lr | median step | runs |",
                m = g.metric
            );
            let _ = writeln!(out, "|---|---|---:|---|---:|---:|---:|---:|---|");
            for p in &g.points {
                let seeds: Vec<String> = p
                    .runs
                    .iter()
                    .map(|r| match r.metric {
                        Some(v) => format!("{} (seed {})", decimal(v), r.seed),
                        None => format!("{} (seed {})", r.state, r.seed),
                    })
                    .collect();
                let step: Vec<f64> = p.runs.iter().filter_map(|r| r.median_step_s).collect();
                let busy = p
                    .runs
                    .iter()
                    .filter_map(|r| r.other_load_cores)
                    .fold(0.0, f64::max);
                let beside = match busy >= BUSY_CORES {
                    true => format!(" (beside {busy:.1} busy cores)"),
                    false => String::new(),
                };
                let step = match step.is_empty() {
                    true => "–".to_string(),
                    false => format!(
                        "{:.3} s{beside}",
                        step.iter().sum::<f64>() / step.len() as f64
                    ),
                };
                let dirs: Vec<String> = p.runs.iter().map(|r| format!("`{}`", r.dir)).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(&p.series),
                    cell(&p.label),
                    p.mean.map(decimal).unwrap_or_else(|| "–".into()),
                    seeds.join(", "),
                    p.params.map(grouped).unwrap_or_else(|| "–".into()),
                    p.device_ledger
                        .map(units::bytes)
                        .unwrap_or_else(|| "–".into()),
                    p.lr.map(|v| format!("{v:.0e}"))
                        .unwrap_or_else(|| "–".into()),
                    step,
                    dirs.join(" ")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::Claim;

    fn point(series: &str, label: &str, params: u64, metrics: &[f64]) -> PointReport {
        let runs: Vec<RunReport> = metrics
            .iter()
            .enumerate()
            .map(|(i, &v)| RunReport {
                seed: i as u64 + 1,
                dir: String::new(),
                state: "finished".into(),
                metric: Some(v),
                final_loss: None,
                wall_s: None,
                median_step_s: None,
                other_load_cores: None,
            })
            .collect();
        PointReport {
            series: series.into(),
            label: label.into(),
            mean: Some(metrics.iter().sum::<f64>() / metrics.len() as f64),
            params: Some(params),
            device_ledger: None,
            lr: None,
            runs,
        }
    }

    fn group(points: Vec<PointReport>) -> GroupReport {
        GroupReport {
            id: "g".into(),
            title: "G".into(),
            about: String::new(),
            metric: "nq_em".into(),
            x: XAxis::Params,
            skipped: None,
            points,
        }
    }

    fn claim(kind: ClaimKind, by: f64) -> Claim {
        Claim {
            text: "t".into(),
            group: "g".into(),
            kind,
            a: "A".into(),
            b: "B".into(),
            series: vec!["A".into()],
            by,
            paper: String::new(),
        }
    }

    #[test]
    fn claims_by_hand() {
        // A: 0.60 and 0.70 at two sizes (means 0.65 over both); B: 0.50.
        let g = group(vec![
            point("A", "big", 100, &[0.7, 0.7]),
            point("A", "small", 10, &[0.6, 0.6]),
            point("B", "x", 10, &[0.4, 0.6]),
        ]);
        // Ahead: 0.65 − 0.50 = 15 points (margins clear of rounding).
        assert_eq!(decide(&claim(ClaimKind::Ahead, 14.9), &g).0, Verdict::Holds);
        assert_eq!(decide(&claim(ClaimKind::Ahead, 15.1), &g).0, Verdict::Fails);
        assert_eq!(
            decide(&claim(ClaimKind::Within, 14.9), &g).0,
            Verdict::Fails
        );
        // Grows: sorted by size, 0.60 → 0.70 is +10 points.
        assert_eq!(decide(&claim(ClaimKind::Grows, 9.9), &g).0, Verdict::Holds);
        assert_eq!(decide(&claim(ClaimKind::Flat, 5.0), &g).0, Verdict::Fails);
    }

    #[test]
    fn a_line_of_zeros_decides_nothing() {
        let g = group(vec![
            point("A", "small", 10, &[0.0]),
            point("A", "big", 100, &[0.0]),
        ]);
        let (v, why) = decide(&claim(ClaimKind::Flat, 2.0), &g);
        assert_eq!(v, Verdict::Unmeasured);
        assert!(why.contains("every run scored nq_em 0"), "{why}");
    }
}
