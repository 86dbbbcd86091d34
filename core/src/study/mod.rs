//! `meft study`: a grid of real training runs described by one TOML file,
//! run (or reused) one after another, and a report of what they measured:
//! a table per group, the claims the study tests with the figures that
//! decide them, and the data for the plots. Nothing in a report comes from
//! anywhere but the runs' own logs.

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
}

/// What became of a planned run when the study was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Trained,
    Reused,
    Resumed,
}

/// The resolved experiments of every run of `study` (the quick grid with
/// `quick`), their directories under `out/runs`. Every point's settings are
/// checked here, so a typo stops the study before anything trains.
pub fn plan(study: &Study, quick: bool, out: &Path) -> Result<Plan> {
    let mut runs: Vec<PlannedRun> = Vec::new();
    let mut skipped = vec![None; study.groups.len()];
    // A config's directory and run name, from the first point that has it.
    let mut first: std::collections::HashMap<u64, (PathBuf, String)> = Default::default();
    for (gi, g) in study.groups.iter().enumerate() {
        if quick && !g.quick {
            skipped[gi] = Some("not in the quick grid".into());
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
            let exp = base
                .apply_sets(&sets)
                .map_err(|e| anyhow::anyhow!("{here}: {e}"))?;
            if let Some(why) = absent_model(&exp) {
                skipped[gi] = Some(why);
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
                runs.push(PlannedRun {
                    group: gi,
                    point: pi,
                    seed,
                    exp,
                    dir,
                });
            }
        }
    }
    Ok(Plan { runs, skipped })
}

/// Why a run's model cannot be loaded here: a model file that is absent.
fn absent_model(exp: &Experiment) -> Option<String> {
    let r = &exp.model.reference;
    let path = r.strip_prefix("gguf:").or_else(|| r.strip_prefix("hf:"))?;
    (!Path::new(path).exists()).then(|| {
        format!("skipped: the model file {path} is absent (scripts/get-smollm2.sh fetches SmolLM2)")
    })
}

/// Train `run` unless a finished run of the same config is already there;
/// resume one that stopped after a checkpoint; start again one that left
/// none. A stop by signal is passed up, so the study ends there.
pub fn execute(run: &PlannedRun) -> Result<Outcome> {
    let rec = RunRecord::read(&run.dir);
    if rec.state == RunState::Finished && rec.summary.is_some() {
        return Ok(Outcome::Reused);
    }
    let resume = run.dir.is_dir()
        && crate::checkpoint::latest(&run.dir.join("checkpoints")).is_some()
        && crate::train::resume_point(&run.dir, &run.exp).is_ok();
    if run.dir.exists() && !resume {
        // Nothing to resume from: what is there is a start that never got
        // to a checkpoint.
        std::fs::remove_dir_all(&run.dir)
            .with_context(|| format!("{}: cannot clear", run.dir.display()))?;
    }
    match crate::train::headless::run_with(run.exp.clone(), &run.dir, resume, true) {
        Ok(_) => Ok(if resume {
            Outcome::Resumed
        } else {
            Outcome::Trained
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
