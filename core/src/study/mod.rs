//! `meft study`: a grid of real training runs described by one TOML file,
//! run (or reused) one after another, and a report of what they measured:
//! a table per group, the claims the study tests with the figures that
//! decide them, and the data for the plots. Nothing in a report comes from
//! anywhere but the runs' own logs.

mod bootstrap;
mod report;
mod spec;

pub use report::{ClaimReport, GroupReport, PointReport, Report, RunReport, Verdict};
pub use spec::{Claim, ClaimKind, Group, Point, Quick, Study, XAxis};

use crate::config::Experiment;
use crate::train::runs::{RunRecord, RunState};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One training run of the grid: a point of a group at one seed.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub group: usize,
    pub point: usize,
    pub seed: u64,
    pub exp: Experiment,
    /// Where the run lives: named by its point and seed, and by a hash of
    /// its whole config, so a changed setting never reuses an old run. A
    /// point whose config equals one of an earlier group shares its run.
    pub dir: PathBuf,
}

/// The runs of a study, and why a group has none (its model file absent).
#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: Vec<PlannedRun>,
    pub skipped: Vec<Option<String>>,
    /// The learning rate each `lr_from` took, in the order first used.
    pub choices: Vec<LrChoice>,
    /// Points not planned yet: their `lr_from` series has runs still to
    /// finish. (group, point, why)
    pub pending: Vec<(usize, usize, String)>,
}

/// What became of a planned run when the study was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Trained,
    Reused,
    Resumed,
    /// A finished run of another source tree, reused under `--reuse-stale`
    /// (and marked so in its directory, for the report).
    ReusedStale,
    /// A run of another source tree, trained again.
    Retrained,
}

/// The file that marks a run reused from another source tree.
pub const STALE_MARK: &str = "reused-stale.txt";

/// The source tree a run's latest start recorded, if any.
fn source_of(rec: &RunRecord) -> Option<&str> {
    rec.info.as_ref().and_then(|i| i.source.as_deref())
}

/// What a selection series chose: its point with the best mean validation
/// score (the earlier point on a tie).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LrChoice {
    /// `"<group>/<series>"`.
    pub from: String,
    pub label: String,
    pub lr: f64,
    /// The mean validation score of each point of the series, in order.
    pub scores: Vec<(String, f64)>,
}

/// The resolved experiments of every run of `study` (the quick grid with
/// `quick`), their directories under `out/runs`. Every point's settings are
/// checked here, so a typo stops the study before anything trains.
/// Selection groups are planned first; a point whose `lr_from` series has
/// not finished is left pending, to be planned once it has.
pub fn plan(study: &Study, quick: bool, out: &Path) -> Result<Plan> {
    let mut plan = Plan {
        runs: Vec::new(),
        skipped: vec![None; study.groups.len()],
        choices: Vec::new(),
        pending: Vec::new(),
    };
    // A config's directory and run name, from the first point that has it.
    let mut first: std::collections::HashMap<u64, (PathBuf, String)> = Default::default();
    // What each `lr_from` series chose, or why it cannot choose yet.
    let mut chosen: std::collections::HashMap<String, std::result::Result<LrChoice, String>> =
        Default::default();
    let order = study
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.select)
        .chain(study.groups.iter().enumerate().filter(|(_, g)| !g.select));
    for (gi, g) in order {
        if quick && !g.quick {
            plan.skipped[gi] = Some("not in the quick grid".into());
            continue;
        }
        let base_path = study.dir.join(&g.base);
        let base = Experiment::load(&base_path)
            .map_err(|e| anyhow::anyhow!("{}: group {}: {e}", study.file.display(), g.id))?;
        let seeds = study.seeds_of(g, quick);
        for (pi, p) in study.points.iter().enumerate() {
            if p.group != g.id || (quick && !p.quick) {
                continue;
            }
            let here = format!(
                "{}: group {}, point {} {}",
                study.file.display(),
                g.id,
                p.series,
                p.label
            );
            let mut sets = g.sets.clone();
            sets.extend(p.sets.iter().cloned());
            if quick {
                sets.extend(study.quick.sets.iter().cloned());
            }
            if let Some(from) = &p.lr_from {
                // Selection groups are planned before every point that
                // takes their choice, so one reading of a series serves all.
                if !chosen.contains_key(from) {
                    let c = choose_lr(study, &plan.runs, from)?;
                    if let Ok(c) = &c {
                        plan.choices.push(c.clone());
                    }
                    chosen.insert(from.clone(), c);
                }
                match &chosen[from] {
                    Ok(c) => sets.push(format!("train.lr = {:e}", c.lr)),
                    Err(why) => {
                        plan.pending.push((gi, pi, why.clone()));
                        continue;
                    }
                }
            }
            let mut exp = base
                .apply_sets(&sets)
                .map_err(|e| anyhow::anyhow!("{here}: {e}"))?;
            if g.select {
                select_run(&mut exp).map_err(|e| anyhow::anyhow!("{here}: {e}"))?;
            }
            if let Some(why) = absent_model(&exp) {
                plan.skipped[gi] = Some(why);
                break;
            }
            for &seed in &seeds {
                let mut exp = exp.clone();
                exp.train.seed = seed;
                exp.validate().map_err(|e| anyhow::anyhow!("{here}: {e}"))?;
                // The hash leaves the name out: the same training under two
                // groups' names is one run.
                let hash = fnv1a(exp.to_toml()?.as_bytes());
                let (dir, name) = first
                    .entry(hash)
                    .or_insert_with(|| {
                        let point = format!("{}-{}-{}", g.id, slug(&p.series), slug(&p.label));
                        (
                            out.join("runs")
                                .join(format!("{point}-s{seed}-{:08x}", hash as u32)),
                            format!("{}-{point}", study.name),
                        )
                    })
                    .clone();
                exp.name = name;
                plan.runs.push(PlannedRun {
                    group: gi,
                    point: pi,
                    seed,
                    exp,
                    dir,
                });
            }
        }
    }
    Ok(plan)
}

/// A selection run: scored once on its validation rows at its last step,
/// the test split never decoded.
fn select_run(exp: &mut Experiment) -> Result<()> {
    anyhow::ensure!(
        exp.train.steps > 0,
        "a selection group's runs need train.steps (they are scored at their last step)"
    );
    anyhow::ensure!(
        !exp.data.validation.is_empty(),
        "a selection group's runs need validation rows: set data.validation (say test:0.4)"
    );
    exp.train.eval_every = exp.train.steps;
    exp.eval.test = false;
    Ok(())
}

/// The learning rate of the best point of the selection series `from`
/// (`"<group>/<series>"`) among the planned runs, by the mean of its runs'
/// validation scores; `Err(why)` while any of them has none yet.
fn choose_lr(
    study: &Study,
    runs: &[PlannedRun],
    from: &str,
) -> Result<std::result::Result<LrChoice, String>> {
    let (gid, series) = from.split_once('/').unwrap_or((from, ""));
    let g = study
        .groups
        .iter()
        .position(|g| g.id == gid)
        .with_context(|| format!("lr_from {from:?}: no group {gid}"))?;
    let metric = &study.groups[g].metric;
    let mut scores: Vec<(String, f64, f64)> = Vec::new();
    for (pi, p) in study.points.iter().enumerate() {
        if p.group != gid || p.series != series {
            continue;
        }
        let of_point: Vec<&PlannedRun> = runs
            .iter()
            .filter(|r| r.group == g && r.point == pi)
            .collect();
        // A point outside this grid (the quick one) is not a candidate.
        if of_point.is_empty() {
            continue;
        }
        let mut v = Vec::new();
        for r in &of_point {
            let rec = RunRecord::read(&r.dir);
            match rec
                .validation_eval
                .as_ref()
                .and_then(|e| e.metrics.get(metric))
                .filter(|_| rec.state == RunState::Finished)
            {
                Some(&x) => v.push(x),
                None => {
                    return Ok(Err(format!(
                        "waits for {from}: its run {} has no validation {metric} yet",
                        r.dir.display()
                    )))
                }
            }
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        scores.push((p.label.clone(), mean, of_point[0].exp.train.lr));
    }
    if scores.is_empty() {
        return Ok(Err(format!(
            "{from}: no point of the series is in this grid"
        )));
    }
    // The best mean; on a tie the earlier point.
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if s.1 > scores[best].1 {
            best = i;
        }
    }
    Ok(Ok(LrChoice {
        from: from.to_string(),
        label: scores[best].0.clone(),
        lr: scores[best].2,
        scores: scores.iter().map(|(l, m, _)| (l.clone(), *m)).collect(),
    }))
}

/// Why a run's model cannot be loaded here: a model file that is absent.
fn absent_model(exp: &Experiment) -> Option<String> {
    let r = &exp.model.reference;
    let path = r.strip_prefix("gguf:").or_else(|| r.strip_prefix("hf:"))?;
    (!Path::new(path).exists()).then(|| {
        format!("skipped: the model file {path} is absent (scripts/get-smollm2.sh fetches SmolLM2)")
    })
}

/// Train `run` unless a finished run of the same config, trained by this
/// source tree, is already there; resume one that stopped after a
/// checkpoint; start again one that left none. A run another source tree
/// trained (or one that recorded none) is trained again, or with
/// `reuse_stale` reused when finished and marked. A stop by signal is
/// passed up, so the study ends there.
pub fn execute(run: &PlannedRun, reuse_stale: bool) -> Result<Outcome> {
    let rec = RunRecord::read(&run.dir);
    let finished = rec.state == RunState::Finished && rec.summary.is_some();
    let stale = run.dir.exists() && source_of(&rec) != Some(crate::SOURCE_HASH);
    if finished && !stale {
        return Ok(Outcome::Reused);
    }
    if finished && reuse_stale {
        let text = format!(
            "reused by meft study --reuse-stale: trained by source tree {}, reused by {}\n",
            source_of(&rec).unwrap_or("unrecorded"),
            crate::SOURCE_HASH
        );
        crate::fsx::write_atomic(&run.dir.join(STALE_MARK), text.as_bytes())?;
        return Ok(Outcome::ReusedStale);
    }
    let resume = !stale
        && run.dir.is_dir()
        && crate::checkpoint::latest(&run.dir.join("checkpoints")).is_some()
        && crate::train::resume_point(&run.dir, &run.exp).is_ok();
    if run.dir.exists() && !resume {
        // Nothing to resume from: what is there is a start that never got
        // to a checkpoint, or another source tree's run.
        std::fs::remove_dir_all(&run.dir)
            .with_context(|| format!("{}: cannot clear", run.dir.display()))?;
    }
    match crate::train::headless::run_with(run.exp.clone(), &run.dir, resume, true) {
        Ok(_) => Ok(match (resume, stale) {
            (true, _) => Outcome::Resumed,
            (false, true) => Outcome::Retrained,
            (false, false) => Outcome::Trained,
        }),
        Err(e) if e.is::<crate::train::headless::Interrupted>() => Err(e),
        // A run refused before it started (data or a model that will not
        // load) left no directory: that is bad input, and the study stops.
        Err(e) if !run.dir.exists() => Err(e),
        // A run that diverged or failed while training is an outcome of
        // the study: its record says so and the study goes on.
        Err(_) => Ok(Outcome::Trained),
    }
}

/// Remove a finished run's checkpoints (its log and summary are all a
/// report reads, and a finished run is reused, never resumed); returns the
/// bytes freed. An unfinished run keeps them, to resume from.
pub fn drop_checkpoints(rec: &RunRecord) -> Result<u64> {
    let dir = rec.dir.join("checkpoints");
    if rec.state != RunState::Finished || rec.summary.is_none() || !dir.is_dir() {
        return Ok(0);
    }
    let freed = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
    Ok(freed)
}

/// Gzip a finished run's event log into `events.jsonl.gz` (written beside
/// it, then renamed into place) and remove the plain one; what reads a
/// run reads either.
pub fn pack_log(rec: &RunRecord) -> Result<()> {
    let plain = rec.dir.join("events.jsonl");
    if rec.state != RunState::Finished || !plain.is_file() {
        return Ok(());
    }
    use std::io::Write;
    let text = std::fs::read(&plain).with_context(|| format!("{}", plain.display()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&text)?;
    let packed = rec.dir.join("events.jsonl.gz");
    crate::fsx::write_atomic(&packed, &gz.finish()?)
        .with_context(|| format!("{}: cannot write", packed.display()))?;
    std::fs::remove_file(&plain).with_context(|| format!("{}: cannot remove", plain.display()))?;
    // The run has ended: its lock file guards nothing now.
    let _ = std::fs::remove_file(rec.dir.join("lock"));
    Ok(())
}

/// The report of `study` from the runs of `plan` as they are on disk.
pub fn report(study: &Study, plan: &Plan, quick: bool, out: &Path) -> Report {
    report::build(study, plan, quick, out)
}

/// A file name's piece from a label: lower-case letters, digits and dashes.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// 64-bit FNV-1a: a stable hash of a run's config text.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_letters_and_digits() {
        assert_eq!(slug("MEFT M 4096 K 32"), "meft-m-4096-k-32");
        assert_eq!(slug("r 8 (q,v)"), "r-8-q-v");
        assert_eq!(slug("--"), "");
    }

    #[test]
    fn fnv1a_matches_its_published_values() {
        // The FNV test vectors: "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
