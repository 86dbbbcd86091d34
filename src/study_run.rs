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

/// Run the study at `spec` into `out` and write its report there; with
/// `drop_checkpoints`, each finished run's checkpoints go once it is done.
pub fn run(
    spec: &Path,
    quick: bool,
    out: Option<PathBuf>,
    drop_checkpoints: bool,
) -> Result<Report> {
    let s = study::Study::load(spec)?;
    let out = out.unwrap_or_else(|| default_out(&s, quick));
    let plan = study::plan(&s, quick, &out)?;
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    let distinct: std::collections::HashSet<&Path> =
        plan.runs.iter().map(|r| r.dir.as_path()).collect();
    println!(
        "{}: {} runs ({} distinct: points with equal settings share one){} into {}",
        s.title,
        plan.runs.len(),
        distinct.len(),
        if quick { " (quick grid)" } else { "" },
        out.display()
    );
    for (g, why) in s.groups.iter().zip(&plan.skipped) {
        if let Some(why) = why {
            println!("group {}: {why}", g.id);
        }
    }
    let started = std::time::Instant::now();
    let mut freed = 0u64;
    for (i, run) in plan.runs.iter().enumerate() {
        let g = &s.groups[run.group];
        let p = &s.points[run.point];
        let what = format!(
            "[{}/{}] {} · {} {} · seed {}",
            i + 1,
            plan.runs.len(),
            g.id,
            p.series,
            p.label,
            run.seed
        );
        let t0 = std::time::Instant::now();
        let outcome = study::execute(run).map_err(|e| {
            match e.is::<crate::train::headless::Interrupted>() {
                true => anyhow::anyhow!(
                    "{e}; run `meft study` again to go on: finished runs are reused and this one resumes from its last checkpoint"
                ),
                false => anyhow::anyhow!("{what}: {}", crate::fsx::error_line(&e)),
            }
        })?;
        let rec = crate::train::runs::RunRecord::read(&run.dir);
        let metric = rec
            .summary
            .as_ref()
            .and_then(|x| x.metrics.get(&g.metric).copied());
        let result = match metric {
            Some(v) => format!("{} {v:.4}", g.metric),
            None => rec.state.name().to_string(),
        };
        let how = match outcome {
            Outcome::Reused => "reused".to_string(),
            Outcome::Trained => format!(
                "trained in {}",
                crate::units::duration(t0.elapsed().as_secs_f64())
            ),
            Outcome::Resumed => format!(
                "resumed, in {}",
                crate::units::duration(t0.elapsed().as_secs_f64())
            ),
        };
        println!("{what}: {result} ({how})");
        if drop_checkpoints {
            freed += study::drop_checkpoints(&rec)?;
        }
    }
    if drop_checkpoints {
        println!(
            "checkpoints of finished runs removed: {} freed",
            crate::units::bytes(freed)
        );
    }
    let report = study::report(&s, &plan, quick, &out);
    write(&report, &out)?;
    println!(
        "\nclaims ({} in all):",
        crate::units::duration(started.elapsed().as_secs_f64())
    );
    for c in &report.claims {
        println!("  {}: {} — {}", c.verdict.name(), c.text, c.measured);
    }
    println!("report: {}", out.join("report.md").display());
    Ok(report)
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
