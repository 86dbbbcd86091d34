//! A study's report from its runs as they are on disk: each point's runs
//! and their mean, each claim decided from those means, as JSON and as
//! Markdown.

use super::bootstrap::{interval, Arm};
use super::{ClaimKind, LrChoice, Plan, Study, XAxis};
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
    /// The source trees that trained the runs, with how many runs each
    /// ("unrecorded" for logs from before it was recorded).
    pub sources: Vec<(String, usize)>,
    /// The learning rates the selection groups chose.
    pub choices: Vec<LrChoice>,
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
    /// Scored on the validation rows, to choose settings.
    pub select: bool,
    /// Points not planned yet, and why.
    pub pending: Vec<String>,
    pub points: Vec<PointReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PointReport {
    pub series: String,
    pub label: String,
    /// The metric's mean over the runs that measured it.
    pub mean: Option<f64>,
    /// Its 95 % bootstrap interval over questions and seeds.
    pub interval: Option<(f64, f64)>,
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
    /// The source tree that trained it, and whether the study reused it
    /// from another tree under `--reuse-stale`.
    pub source: Option<String>,
    pub stale: bool,
    /// The metric on each question, in order (what the intervals draw).
    #[serde(skip)]
    pub scores: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimReport {
    pub text: String,
    pub paper: String,
    pub verdict: Verdict,
    /// The figures that decide it.
    pub measured: String,
    /// The deciding statistic (in metric units) and its 95 % interval.
    pub statistic: Option<(f64, f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval clears the margin.
    Holds,
    /// The interval lies on the wrong side of the margin.
    Fails,
    /// The interval straddles the margin: the runs cannot tell.
    Undecided,
    Unmeasured,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "does not hold",
            Verdict::Undecided => "undecided",
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
            select: g.select,
            pending: Vec::new(),
            points: Vec::new(),
        })
        .collect();
    for (gi, pi, why) in &plan.pending {
        let p = &study.points[*pi];
        groups[*gi]
            .pending
            .push(format!("{} {}: {why}", p.series, p.label));
    }
    let mut sources: Vec<(String, usize)> = Vec::new();
    // Each run directory counted once, however many points share it.
    let mut seen = std::collections::HashSet::new();
    for run in &plan.runs {
        let rec = RunRecord::read(&run.dir);
        if machine.is_none() {
            machine = rec.info.as_ref().and_then(|i| i.machine.clone());
        }
        let source = rec.info.as_ref().and_then(|i| i.source.clone());
        if seen.insert(run.dir.clone()) {
            let name = source.clone().unwrap_or_else(|| "unrecorded".into());
            match sources.iter_mut().find(|(s, _)| *s == name) {
                Some((_, n)) => *n += 1,
                None => sources.push((name, 1)),
            }
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
                    interval: None,
                    params: None,
                    device_ledger: None,
                    lr: None,
                    runs: Vec::new(),
                });
                g.points.len() - 1
            }
        };
        // A selection group's figure is its validation score; every other
        // group's is the final test evaluation.
        let finished = rec.summary.is_some();
        let eval = match g.select {
            true => rec.validation_eval.as_ref(),
            false => rec.test_eval.as_ref(),
        }
        .filter(|_| finished);
        let point = &mut g.points[i];
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
            metric: eval.and_then(|e| e.metrics.get(&g.metric).copied()),
            final_loss: rec.final_loss(),
            wall_s: rec.summary.as_ref().map(|s| s.wall_s),
            median_step_s: rec.median_step_s(),
            other_load_cores: rec.other_load_cores(),
            source,
            stale: run.dir.join(super::STALE_MARK).is_file(),
            scores: eval
                .and_then(|e| e.row_scores.get(&g.metric).cloned())
                .unwrap_or_default(),
        });
    }
    for p in groups.iter_mut().flat_map(|g| g.points.iter_mut()) {
        let v: Vec<f64> = p.runs.iter().filter_map(|r| r.metric).collect();
        p.mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let arm: Arm = p
            .runs
            .iter()
            .filter(|r| r.metric.is_some())
            .map(|r| r.scores.as_slice())
            .collect();
        // Seeded by the runs themselves: a point that shares its runs
        // with another group's shows the same interval there.
        let seed = p.runs.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, r| {
            r.dir
                .bytes()
                .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
        });
        p.interval = interval(&[arm], &|m| m[0], seed)
            .ok()
            .map(|(_, lo, hi)| (lo, hi));
    }
    let claims = study
        .claims
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let g = groups.iter().find(|g| g.id == c.group);
            let (verdict, measured, statistic) = match g {
                Some(g) => decide(c, g, 1 + k as u64),
                None => (Verdict::Unmeasured, String::new(), None),
            };
            ClaimReport {
                text: c.text.clone(),
                paper: c.paper.clone(),
                verdict,
                measured,
                statistic,
            }
        })
        .collect();
    Report {
        name: study.name.clone(),
        title: study.title.clone(),
        about: study.about.clone(),
        quick,
        machine,
        sources,
        choices: plan.choices.clone(),
        groups,
        claims,
    }
}

/// Every finished run of `series` in `g`, as one arm.
fn series_arm<'a>(g: &'a GroupReport, series: &str) -> Arm<'a> {
    g.points
        .iter()
        .filter(|p| p.series == series)
        .flat_map(|p| p.runs.iter().filter(|r| r.metric.is_some()))
        .map(|r| r.scores.as_slice())
        .collect()
}

/// A series' points with a mean, smallest adapter first; a point whose
/// runs recorded no parameter count cannot be placed, and says so.
fn by_size<'a>(g: &'a GroupReport, series: &str) -> Result<Vec<&'a PointReport>, String> {
    let mut pts: Vec<(u64, &PointReport)> = Vec::new();
    for p in g
        .points
        .iter()
        .filter(|p| p.series == series && p.mean.is_some())
    {
        let params = p.params.ok_or_else(|| {
            format!(
                "{series} {}: no trainable-parameter count recorded (its runs' logs have no start), so the sizes cannot be ordered",
                p.label
            )
        })?;
        pts.push((params, p));
    }
    pts.sort_by_key(|&(params, _)| params);
    Ok(pts.into_iter().map(|(_, p)| p).collect())
}

/// A difference in points, signed.
fn points(d: f64) -> String {
    format!("{:+.1}", 100.0 * d)
}

/// "[lo, hi]" in points.
fn span(lo: f64, hi: f64) -> String {
    format!("[{}, {}]", points(lo), points(hi))
}

/// The verdict of an interval [lo, hi] against "statistic ≥ by" (in metric
/// units): it clears the margin, misses it entirely, or straddles it.
fn at_least(lo: f64, hi: f64, by: f64) -> Verdict {
    if lo >= by {
        Verdict::Holds
    } else if hi < by {
        Verdict::Fails
    } else {
        Verdict::Undecided
    }
}

/// The verdict of [lo, hi] against "statistic ≤ by".
fn at_most(lo: f64, hi: f64, by: f64) -> Verdict {
    if hi <= by {
        Verdict::Holds
    } else if lo > by {
        Verdict::Fails
    } else {
        Verdict::Undecided
    }
}

/// Several series' verdicts as one: any that fails fails the claim, any
/// undecided leaves it undecided.
fn all_of(v: &[Verdict]) -> Verdict {
    [Verdict::Unmeasured, Verdict::Fails, Verdict::Undecided]
        .into_iter()
        .find(|w| v.contains(w))
        .unwrap_or(Verdict::Holds)
}

type Decided = (Verdict, String, Option<(f64, f64, f64)>);

fn decide(c: &super::Claim, g: &GroupReport, seed: u64) -> Decided {
    if let Some(why) = &g.skipped {
        return (Verdict::Unmeasured, why.clone(), None);
    }
    let m = &g.metric;
    let by = c.by / 100.0;
    let unmeasured = |why: String| (Verdict::Unmeasured, why, None);
    match c.kind {
        ClaimKind::Ahead | ClaimKind::Within => {
            let (a, b) = (series_arm(g, &c.a), series_arm(g, &c.b));
            if a.is_empty() || b.is_empty() {
                return unmeasured(format!(
                    "no finished run of {} or {} measured {m}",
                    c.a, c.b
                ));
            }
            let stat = match interval(&[a, b], &|x| x[0] - x[1], seed) {
                Ok(s) => s,
                Err(why) => return unmeasured(format!("{} against {}: {why}", c.a, c.b)),
            };
            let (d, lo, hi) = stat;
            let (verdict, need) = match c.kind {
                ClaimKind::Ahead => (at_least(lo, hi, by), format!("needs ≥ +{} points", c.by)),
                _ => {
                    let v = match (at_least(lo, hi, -by), at_most(lo, hi, by)) {
                        (Verdict::Holds, Verdict::Holds) => Verdict::Holds,
                        (Verdict::Fails, _) | (_, Verdict::Fails) => Verdict::Fails,
                        _ => Verdict::Undecided,
                    };
                    (v, format!("needs the interval within ±{} points", c.by))
                }
            };
            let (ma, mb) = (series_mean(g, &c.a), series_mean(g, &c.b));
            let text = format!(
                "{} {} vs {} {}: {} points, 95 % interval {} ({need})",
                c.a,
                decimal(ma),
                c.b,
                decimal(mb),
                points(d),
                span(lo, hi)
            );
            (verdict, text, Some(stat))
        }
        ClaimKind::Grows | ClaimKind::Flat => {
            let mut verdicts = Vec::new();
            let mut parts = Vec::new();
            let mut last_stat = None;
            for s in &c.series {
                let pts = match by_size(g, s) {
                    Ok(pts) => pts,
                    Err(why) => return unmeasured(why),
                };
                if pts.len() < 2 {
                    return unmeasured(format!("{s}: fewer than two sizes measured {m}"));
                }
                let means: Vec<f64> = pts.iter().filter_map(|p| p.mean).collect();
                // A line of zeros is flat because nothing was learned: it
                // decides nothing about what capacity buys.
                if c.kind == ClaimKind::Flat && means.iter().all(|&v| v == 0.0) {
                    return unmeasured(format!(
                        "{s}: every run scored {m} 0 at every size, so the runs cannot tell what capacity buys"
                    ));
                }
                let arms: Vec<Arm> = pts
                    .iter()
                    .map(|p| {
                        p.runs
                            .iter()
                            .filter(|r| r.metric.is_some())
                            .map(|r| r.scores.as_slice())
                            .collect()
                    })
                    .collect();
                let seq: Vec<String> = pts
                    .iter()
                    .filter_map(|p| p.mean.map(|v| format!("{} {}", p.label, decimal(v))))
                    .collect();
                let grows = |x: &[f64]| x[x.len() - 1] - x[0];
                let spread = |x: &[f64]| {
                    x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        - x.iter().copied().fold(f64::INFINITY, f64::min)
                };
                let stat = match c.kind {
                    ClaimKind::Grows => interval(&arms, &grows, seed),
                    _ => interval(&arms, &spread, seed),
                };
                let (v, lo, hi) = match stat {
                    Ok(x) => x,
                    Err(why) => return unmeasured(format!("{s}: {why}")),
                };
                last_stat = Some((v, lo, hi));
                match c.kind {
                    ClaimKind::Grows => {
                        verdicts.push(at_least(lo, hi, by));
                        parts.push(format!(
                            "{s}: {} ({} points smallest to largest, 95 % interval {})",
                            seq.join(" → "),
                            points(v),
                            span(lo, hi)
                        ));
                    }
                    _ => {
                        verdicts.push(at_most(lo, hi, by));
                        parts.push(format!(
                            "{s}: {} (spread {:.1} points, 95 % interval [{:.1}, {:.1}])",
                            seq.join(" → "),
                            100.0 * v,
                            100.0 * lo,
                            100.0 * hi
                        ));
                    }
                }
            }
            let need = match c.kind {
                ClaimKind::Grows => format!("needs the interval ≥ +{} points", c.by),
                _ => format!("needs the interval ≤ {} points", c.by),
            };
            let stat = (c.series.len() == 1).then_some(last_stat).flatten();
            (
                all_of(&verdicts),
                format!("{}; {need}", parts.join("; ")),
                stat,
            )
        }
    }
}

/// The mean over every measured run of `series` in `g`.
fn series_mean(g: &GroupReport, series: &str) -> f64 {
    let v: Vec<f64> = g
        .points
        .iter()
        .filter(|p| p.series == series)
        .flat_map(|p| p.runs.iter().filter_map(|r| r.metric))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
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
        let distinct: std::collections::BTreeSet<&str> =
            runs.iter().map(|r| r.dir.as_str()).collect();
        let _ = writeln!(
            out,
            "{} runs ({} distinct: points with equal settings share one), {finished} of them measured{}. Measured on {}. Every figure below comes from the runs' own logs (`events.jsonl`, in the run directories named in the last column); a point's figure is the mean over its seeds, each seed's value listed beside it. A median step marked \"beside N busy cores\" was timed while other processes kept N cores busy on average (the run's telemetry: the machine's busy cores less its own); compare step times only between unmarked runs.\n",
            runs.len(),
            distinct.len(),
            if self.quick { " (the quick grid)" } else { "" },
            self.machine.as_deref().unwrap_or("an unrecorded machine")
        );
        let _ = writeln!(
            out,
            "Protocol: learning rates are chosen on validation rows (selection groups; their runs never decode a test question), and the test questions are scored once per final run. Intervals are 95 % bootstrap intervals over questions and seeds ({} replicates, seeded: the same logs give the same intervals); a claim holds only when its interval clears the margin, does not hold when the interval lies wholly on the other side, and is undecided when it straddles it.\n",
            super::bootstrap::REPLICATES
        );
        let trees: Vec<String> = self
            .sources
            .iter()
            .map(|(s, n)| format!("`{s}` ({n} runs)"))
            .collect();
        let stale = runs.iter().filter(|r| r.stale).count();
        let _ = writeln!(
            out,
            "Source trees that trained the runs: {}.{}\n",
            trees.join(", "),
            match stale {
                0 => String::new(),
                n => format!(" {n} runs were reused from another source tree under `--reuse-stale` and are marked \"stale\"."),
            }
        );
        if !self.choices.is_empty() {
            let _ = writeln!(out, "Learning rates chosen on validation:\n");
            for c in &self.choices {
                let scores: Vec<String> = c
                    .scores
                    .iter()
                    .map(|(l, v)| format!("{l} {}", decimal(*v)))
                    .collect();
                let _ = writeln!(
                    out,
                    "- `{}`: {} → train.lr = {:.0e}; validation means {}",
                    c.from,
                    c.label,
                    c.lr,
                    scores.join(", ")
                );
            }
            let _ = writeln!(out);
        }
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
            if g.select {
                let _ = writeln!(
                    out,
                    "_A selection group: every figure is a validation score; no claim rests on it._\n"
                );
            }
            for p in &g.pending {
                let _ = writeln!(out, "- not run yet: {p}");
            }
            if !g.pending.is_empty() {
                let _ = writeln!(out);
            }
            if g.points.iter().any(|p| p.mean.is_some()) {
                let _ = writeln!(out, "![{}]({}.svg)\n", g.title, g.id);
            }
            let _ = writeln!(
                out,
                "| series | point | {m} | 95 % interval | {m} by seed | trainable params | peak device ledger | lr | median step | runs |",
                m = g.metric
            );
            let _ = writeln!(out, "|---|---|---:|---|---|---:|---:|---:|---:|---|");
            for p in &g.points {
                let seeds: Vec<String> = p
                    .runs
                    .iter()
                    .map(|r| {
                        let stale = if r.stale { ", stale" } else { "" };
                        match r.metric {
                            Some(v) => format!("{} (seed {}{stale})", decimal(v), r.seed),
                            None => format!("{} (seed {}{stale})", r.state, r.seed),
                        }
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
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(&p.series),
                    cell(&p.label),
                    p.mean.map(decimal).unwrap_or_else(|| "–".into()),
                    p.interval
                        .map(|(lo, hi)| format!("{}–{}", decimal(lo), decimal(hi)))
                        .unwrap_or_else(|| "–".into()),
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

    /// A point whose runs (one per value) each answer `round(v · 20)` of 20
    /// questions, the first ones.
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
                source: None,
                stale: false,
                scores: (0..20)
                    .map(|q| f64::from(q < (v * 20.0).round() as i32))
                    .collect(),
            })
            .collect();
        PointReport {
            series: series.into(),
            label: label.into(),
            mean: Some(metrics.iter().sum::<f64>() / metrics.len() as f64),
            interval: None,
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
            select: false,
            pending: Vec::new(),
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
        // A answers every question at both sizes and seeds; B none: every
        // replicate's difference is 1, so the interval is [1, 1].
        let g = group(vec![
            point("A", "big", 100, &[1.0, 1.0]),
            point("A", "small", 10, &[1.0, 1.0]),
            point("B", "x", 10, &[0.0, 0.0]),
        ]);
        let (v, text, stat) = decide(&claim(ClaimKind::Ahead, 99.0), &g, 1);
        assert_eq!((v, stat), (Verdict::Holds, Some((1.0, 1.0, 1.0))));
        assert!(
            text.contains("+100.0 points, 95 % interval [+100.0, +100.0]"),
            "{text}"
        );
        assert_eq!(
            decide(&claim(ClaimKind::Within, 5.0), &g, 1).0,
            Verdict::Fails
        );
        // Flat: A is 1 at both sizes.
        assert_eq!(
            decide(&claim(ClaimKind::Flat, 1.0), &g, 1).0,
            Verdict::Holds
        );
        assert_eq!(
            decide(&claim(ClaimKind::Grows, 1.0), &g, 1).0,
            Verdict::Fails
        );
    }

    #[test]
    fn a_size_without_its_parameter_count_is_not_placed() {
        let mut unknown = point("A", "big", 100, &[1.0]);
        unknown.params = None;
        let g = group(vec![point("A", "small", 10, &[0.0]), unknown]);
        let (v, text, stat) = decide(&claim(ClaimKind::Grows, 1.0), &g, 1);
        assert_eq!((v, stat), (Verdict::Unmeasured, None));
        assert!(
            text.contains("A big: no trainable-parameter count recorded"),
            "{text}"
        );
    }

    #[test]
    fn an_interval_that_straddles_the_margin_decides_nothing() {
        // A: 0.60, B: 0.50 on 20 questions each, one seed: a 10-point gap
        // whose interval is far wider than 10 points.
        let g = group(vec![
            point("A", "a", 10, &[0.6]),
            point("B", "b", 10, &[0.5]),
        ]);
        let (v, text, stat) = decide(&claim(ClaimKind::Ahead, 5.0), &g, 1);
        let (d, lo, hi) = stat.unwrap();
        assert!((d - 0.1).abs() < 1e-12, "{d}");
        assert!(lo < 0.05 && hi > 0.05, "{lo} {hi}");
        assert_eq!(v, Verdict::Undecided, "{text}");
        // The same logs, the same figures.
        assert_eq!(decide(&claim(ClaimKind::Ahead, 5.0), &g, 1).2, stat);
    }

    #[test]
    fn a_line_of_zeros_decides_nothing() {
        let g = group(vec![
            point("A", "small", 10, &[0.0]),
            point("A", "big", 100, &[0.0]),
        ]);
        let (v, why, _) = decide(&claim(ClaimKind::Flat, 2.0), &g, 1);
        assert_eq!(v, Verdict::Unmeasured);
        assert!(why.contains("every run scored nq_em 0"), "{why}");
    }
}
