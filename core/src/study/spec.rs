//! The study file: groups of points (each a base experiment with settings
//! on top), the seeds every point runs at, the quick grid, and the claims
//! the runs are to decide.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    pub name: String,
    pub title: String,
    /// What the study sets out to show, in a paragraph for the report.
    #[serde(default)]
    pub about: String,
    /// `train.seed` of each run of a point: every point runs once per seed.
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub quick: Quick,
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
    #[serde(rename = "point", default)]
    pub points: Vec<Point>,
    #[serde(rename = "claim", default)]
    pub claims: Vec<Claim>,
    /// The study file and the folder its base experiments are relative to.
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The reduced grid of `--quick`: fewer seeds, settings applied on top of
/// every point (shorter runs), and only the groups and points marked quick.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quick {
    /// Seeds of the quick grid (default: the first of the study's).
    #[serde(default)]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub sets: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub about: String,
    /// The experiment TOML every point of the group starts from, relative
    /// to the study file.
    pub base: String,
    /// Settings for every point of the group, before the point's own.
    #[serde(default)]
    pub sets: Vec<String>,
    /// The evaluation metric the group compares ("nq_em", "gsm8k_acc", …).
    pub metric: String,
    /// What the plot's x axis shows.
    #[serde(default)]
    pub x: XAxis,
    /// Seeds of this group when not the study's (a slow model: fewer).
    #[serde(default)]
    pub seeds: Vec<u64>,
    #[serde(default = "yes")]
    pub quick: bool,
    /// A selection group: its runs are scored on the validation rows only
    /// (`data.validation`, once at the last step; the test split is never
    /// decoded), and other groups' points take their learning rate from its
    /// best point (`lr_from`). No claim may rest on it.
    #[serde(default)]
    pub select: bool,
}

/// A plot's x axis: the adapter's trainable parameters (log scale), the
/// run's peak device ledger, or its learning rate (log scale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XAxis {
    #[default]
    Params,
    Device,
    Lr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub group: String,
    /// The line the point belongs to ("MEFT", "LoRA", …).
    pub series: String,
    /// The point on it ("M 4096", "r 8", …).
    pub label: String,
    #[serde(default)]
    pub sets: Vec<String>,
    #[serde(default = "yes")]
    pub quick: bool,
    /// `"<group>/<series>"` of a selection group: this point trains at the
    /// learning rate of that series' point with the best validation score.
    #[serde(default)]
    pub lr_from: Option<String>,
}

/// A statement the runs of one group decide, with a margin in points of
/// the group's metric (hundredths: 10 points = 0.10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub text: String,
    pub group: String,
    pub kind: ClaimKind,
    /// `ahead` and `within`: the series compared (mean over their runs).
    #[serde(default)]
    pub a: String,
    #[serde(default)]
    pub b: String,
    /// `grows` and `flat`: the series each tested on its own.
    #[serde(default)]
    pub series: Vec<String>,
    /// The margin, in points.
    pub by: f64,
    /// What the paper reports on the same question.
    #[serde(default)]
    pub paper: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// mean(a) − mean(b) ≥ by.
    Ahead,
    /// |mean(a) − mean(b)| ≤ by.
    Within,
    /// Along each series, by size: the largest point's mean − the
    /// smallest's ≥ by.
    Grows,
    /// Along each series: the largest mean − the smallest ≤ by.
    Flat,
}

fn yes() -> bool {
    true
}

impl Study {
    /// Read a study: `path` is its TOML, or a folder holding `study.toml`.
    /// Every reference inside is checked, each error naming the file and
    /// the group, point or claim.
    pub fn load(path: &Path) -> Result<Study> {
        let file = match path.is_dir() {
            true => path.join("study.toml"),
            false => path.to_path_buf(),
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let mut s: Study = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), crate::fsx::one_line(&e)))?;
        s.dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        s.file = file;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<()> {
        let f = self.file.display();
        if self.seeds.is_empty() {
            bail!("{f}: seeds: give at least one seed");
        }
        if self.groups.is_empty() {
            bail!("{f}: no [[group]]: a study needs at least one");
        }
        for (i, g) in self.groups.iter().enumerate() {
            if self.groups[..i].iter().any(|h| h.id == g.id) {
                bail!("{f}: group {}: two groups have this id", g.id);
            }
            if !self.points.iter().any(|p| p.group == g.id) {
                bail!("{f}: group {}: no [[point]] belongs to it", g.id);
            }
        }
        for (i, p) in self.points.iter().enumerate() {
            if self.group(&p.group).is_none() {
                bail!(
                    "{f}: point {} {}: group {:?} is not a [[group]] id",
                    p.series,
                    p.label,
                    p.group
                );
            }
            if self.points[..i]
                .iter()
                .any(|q| q.group == p.group && q.series == p.series && q.label == p.label)
            {
                bail!(
                    "{f}: point {} {}: appears twice in group {}",
                    p.series,
                    p.label,
                    p.group
                );
            }
        }
        for p in &self.points {
            let Some(from) = &p.lr_from else {
                continue;
            };
            let here = format!("{f}: point {} {}: lr_from {from:?}", p.series, p.label);
            let Some((g, series)) = from.split_once('/') else {
                bail!("{here}: expected \"<group>/<series>\"");
            };
            match self.group(g) {
                Some(g) if g.select => {}
                Some(_) => bail!("{here}: group {g} is not a selection group (select = true)"),
                None => bail!("{here}: group {g:?} is not a [[group]] id"),
            }
            if self.group(&p.group).is_some_and(|g| g.select) {
                bail!("{here}: a selection group's points set their own learning rates");
            }
            if !self
                .points
                .iter()
                .any(|q| q.group == g && q.series == series)
            {
                bail!("{here}: no series {series:?} in group {g}");
            }
        }
        for c in &self.claims {
            let here = format!("{f}: claim {:?}", c.text);
            match self.group(&c.group) {
                None => bail!("{here}: group {:?} is not a [[group]] id", c.group),
                Some(g) if g.select => bail!(
                    "{here}: group {} chooses settings on the validation rows; a claim rests on test scores",
                    c.group
                ),
                Some(_) => {}
            }
            let named: Vec<&String> = match c.kind {
                ClaimKind::Ahead | ClaimKind::Within => vec![&c.a, &c.b],
                ClaimKind::Grows | ClaimKind::Flat => c.series.iter().collect(),
            };
            if named.is_empty() {
                bail!("{here}: series: name the series it tests");
            }
            for s in named {
                if !self
                    .points
                    .iter()
                    .any(|p| p.group == c.group && &p.series == s)
                {
                    bail!("{here}: no series {s:?} in group {}", c.group);
                }
            }
            if !c.by.is_finite() || c.by < 0.0 {
                bail!("{here}: by: a margin in points, 0 or more");
            }
        }
        Ok(())
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// The seeds a group's points run at.
    pub fn seeds_of(&self, g: &Group, quick: bool) -> Vec<u64> {
        let own = match g.seeds.is_empty() {
            true => &self.seeds,
            false => &g.seeds,
        };
        if !quick {
            return own.clone();
        }
        let picked: Vec<u64> = own
            .iter()
            .copied()
            .filter(|s| self.quick.seeds.contains(s))
            .collect();
        match picked.is_empty() {
            true => own.iter().take(1).copied().collect(),
            false => picked,
        }
    }
}
