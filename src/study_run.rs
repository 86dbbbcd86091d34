//! `meft study`: run a study's grid (reusing finished runs), then write its
//! report: `report.md`, `study.json` and a plot per group as SVG and PNG.

use crate::plot::{Chart, Series};
use anyhow::Result;
use meft_core::study::{self, GroupReport, Outcome, Report, XAxis};
use std::path::{Path, PathBuf};

/// The folder a study writes to when none is given.
pub fn default_out(s: &study::Study, quick: bool) -> PathBuf {
    let name = match quick {
        true => format!("study-{}-quick", s.name),
        false => format!("study-{}", s.name),
    };
    Path::new("runs").join(name)
}

/// How `meft study` runs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Options {
    /// The reduced grid: fewer seeds, shorter runs, the quick groups.
    #[arg(long)]
    pub quick: bool,
    /// Where the runs and the report go (default runs/study-<name>, with
    /// -quick for the quick grid).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Remove each run's checkpoints once it has finished (the report needs
    /// only its log and summary; unfinished runs keep theirs).
    #[arg(long)]
    pub drop_checkpoints: bool,
    /// As --drop-checkpoints, and gzip each finished run's event log: what
    /// a study kept in a repository holds.
    #[arg(long)]
    pub pack: bool,
    /// Reuse finished runs that another source tree trained (each is marked
    /// stale in the report) instead of training them again.
    #[arg(long)]
    pub reuse_stale: bool,
    /// Train nothing: rebuild the report from the runs' logs in --out.
    #[arg(long, conflicts_with_all = ["drop_checkpoints", "pack", "reuse_stale"])]
    pub report_only: bool,
}

/// Run the study at `spec` and write its report: selection groups first,
/// then every point, those that take a learning rate from a selection
/// series once it has finished.
pub fn run(spec: &Path, opts: Options) -> Result<Report> {
    let s = study::Study::load(spec)?;
    let quick = opts.quick;
    let out = opts.out.clone().unwrap_or_else(|| default_out(&s, quick));
    if opts.report_only {
        anyhow::ensure!(
            out.is_dir(),
            "{}: no study output here to report on",
            out.display()
        );
        let plan = study::plan(&s, quick, &out)?;
        let report = study::report(&s, &plan, quick, &out);
        write(&report, &out)?;
        print_claims(&report, &out, None);
        return Ok(report);
    }
    let first = study::plan(&s, quick, &out)?;
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    println!(
        "{}: {} runs planned{}{} into {}",
        s.title,
        first.runs.len(),
        match first.pending.len() {
            0 => String::new(),
            n =>
                format!(", {n} points waiting for the learning rates their selection series choose"),
        },
        if quick { " (quick grid)" } else { "" },
        out.display()
    );
    for (g, why) in s.groups.iter().zip(&first.skipped) {
        if let Some(why) = why {
            println!("group {}: {why}", g.id);
        }
    }
    let started = std::time::Instant::now();
    let mut freed = 0u64;
    let mut done: std::collections::HashSet<PathBuf> = Default::default();
    let mut plan = first;
    let mut count = 0usize;
    loop {
        let todo: Vec<study::PlannedRun> = plan
            .runs
            .iter()
            .filter(|r| !done.contains(&r.dir))
            .cloned()
            .collect();
        if todo.is_empty() {
            break;
        }
        for c in &plan.choices {
            println!(
                "{}: chose {} on validation (train.lr = {:.0e})",
                c.from, c.label, c.lr
            );
        }
        let total: std::collections::HashSet<&Path> =
            plan.runs.iter().map(|r| r.dir.as_path()).collect();
        for run in &todo {
            // Points sharing a run: the first one trains it.
            if !done.insert(run.dir.clone()) {
                continue;
            }
            count += 1;
            freed += one(&s, run, (count, total.len()), &opts)?;
        }
        plan = study::plan(&s, quick, &out)?;
    }
    if opts.drop_checkpoints || opts.pack {
        println!(
            "checkpoints of finished runs removed: {} freed",
            crate::units::bytes(freed)
        );
    }
    let report = study::report(&s, &plan, quick, &out);
    write(&report, &out)?;
    print_claims(&report, &out, Some(started.elapsed().as_secs_f64()));
    Ok(report)
}

/// Execute one planned run and say what became of it; returns the bytes
/// its checkpoints freed.
fn one(
    s: &study::Study,
    run: &study::PlannedRun,
    (n, of): (usize, usize),
    opts: &Options,
) -> Result<u64> {
    let g = &s.groups[run.group];
    let p = &s.points[run.point];
    let what = format!(
        "[{n}/{of}] {} · {} {} · seed {}",
        g.id, p.series, p.label, run.seed
    );
    let t0 = std::time::Instant::now();
    let outcome = study::execute(run, opts.reuse_stale).map_err(|e| {
        match e.is::<crate::train::headless::Interrupted>() {
            true => anyhow::anyhow!(
                "{e}; run `meft study` again to go on: finished runs are reused and this one resumes from its last checkpoint"
            ),
            false => anyhow::anyhow!("{what}: {}", crate::fsx::error_line(&e)),
        }
    })?;
    let rec = crate::train::runs::RunRecord::read(&run.dir);
    let eval = match g.select {
        true => rec.validation_eval.as_ref(),
        false => rec.test_eval.as_ref(),
    };
    let result = match eval.and_then(|e| e.metrics.get(&g.metric)) {
        Some(v) if g.select => format!("validation {} {v:.4}", g.metric),
        Some(v) => format!("{} {v:.4}", g.metric),
        None => rec.state.name().to_string(),
    };
    let took = crate::units::duration(t0.elapsed().as_secs_f64());
    let how = match outcome {
        Outcome::Reused => "reused".to_string(),
        Outcome::ReusedStale => "reused from another source tree: stale".to_string(),
        Outcome::Trained => format!("trained in {took}"),
        Outcome::Retrained => format!("trained again in {took}: its run was another source tree's"),
        Outcome::Resumed => format!("resumed, in {took}"),
    };
    println!("{what}: {result} ({how})");
    let mut freed = 0;
    if opts.drop_checkpoints || opts.pack {
        freed = study::drop_checkpoints(&rec)?;
    }
    if opts.pack {
        study::pack_log(&rec)?;
    }
    Ok(freed)
}

fn print_claims(report: &Report, out: &Path, took: Option<f64>) {
    match took {
        Some(t) => println!("\nclaims ({} in all):", crate::units::duration(t)),
        None => println!("\nclaims (from the runs on disk):"),
    }
    for c in &report.claims {
        println!("  {}: {} — {}", c.verdict.name(), c.text, c.measured);
    }
    println!("report: {}", out.join("report.md").display());
}

/// `report.md`, `study.json`, and each measured group's plot.
pub fn write(report: &Report, out: &Path) -> Result<()> {
    let put = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        crate::fsx::write_atomic(&path, bytes)
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))
    };
    put("report.md", report.markdown().as_bytes())?;
    put(
        "study.json",
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    for g in &report.groups {
        if g.points.iter().all(|p| p.mean.is_none()) {
            continue;
        }
        let chart = chart(g);
        chart.write(&out.join(format!("{}.svg", g.id)))?;
        chart.write(&out.join(format!("{}.png", g.id)))?;
    }
    Ok(())
}

/// A group's plot: the metric's mean against the adapter's size (log
/// scale) or the run's peak device ledger, one line per series.
pub fn chart(g: &GroupReport) -> Chart {
    let mut series: Vec<Series> = Vec::new();
    for p in &g.points {
        let x = match g.x {
            XAxis::Params => p.params.map(|v| v as f64),
            XAxis::Device => p.device_ledger.map(|v| v as f64 / (1u64 << 20) as f64),
            XAxis::Lr => p.lr,
        };
        let pt = (x.unwrap_or(f64::NAN), p.mean.unwrap_or(f64::NAN));
        match series.iter_mut().find(|s| s.label == p.series) {
            Some(s) => s.points.push(pt),
            None => series.push(Series {
                label: p.series.clone(),
                points: vec![pt],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Chart {
        title: g.title.clone(),
        x_title: match g.x {
            XAxis::Params => "trainable parameters (log scale)".into(),
            XAxis::Device => "peak device ledger (MiB)".into(),
            XAxis::Lr => "peak learning rate (log scale)".into(),
        },
        y_title: format!("{} (mean over seeds)", g.metric),
        series,
        markers: true,
        x_log: g.x != XAxis::Device,
    }
}
