//! The presets the setup screen offers: every TOML under a presets folder
//! (the runnable ones first, then the rest of the top level, the user's
//! saved ones among them, then `paper/`) that loads as an experiment.

use crate::config::{Experiment, Task};
use std::path::{Path, PathBuf};

/// A preset that loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub path: PathBuf,
    pub exp: Experiment,
}

impl Preset {
    /// How the picker names it: the file's path under the folder, without `.toml`.
    pub fn label(&self, root: &Path) -> String {
        let rel = self.path.strip_prefix(root).unwrap_or(&self.path);
        rel.with_extension("").display().to_string()
    }
}

/// The presets folder and what loaded from it.
#[derive(Debug, Clone, Default)]
pub struct Presets {
    pub root: PathBuf,
    pub all: Vec<Preset>,
}

impl Presets {
    pub fn load(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            all: catalog(root),
        }
    }

    pub fn label(&self, i: usize) -> String {
        self.all
            .get(i)
            .map(|p| p.label(&self.root))
            .unwrap_or_default()
    }
}

/// The presets that run out of the box, in the order the picker lists them.
const RUNNABLE: [&str; 4] = ["nq", "squad", "gsm8k", "toolbench"];

/// Every preset under `root` (and `root/paper/`) that loads; files that do
/// not parse are left out. An absent folder gives none.
pub fn catalog(root: &Path) -> Vec<Preset> {
    let load = |dir: &Path| -> Vec<Preset> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let exp = Experiment::load(&path).ok()?;
                Some(Preset { path, exp })
            })
            .collect()
    };
    let mut top = load(root);
    let rank = |p: &Preset| {
        let stem = p.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        RUNNABLE
            .iter()
            .position(|r| *r == stem)
            .unwrap_or(RUNNABLE.len())
    };
    // Stable: the rest keep their alphabetical order.
    top.sort_by_key(rank);
    top.extend(load(&root.join("paper")));
    top
}

/// The runnable preset of `task` in `presets`: the top-level file named
/// after the task, else any top-level preset of that task.
pub fn for_task<'a>(presets: &'a [Preset], root: &Path, task: Task) -> Option<&'a Preset> {
    let top: Vec<&Preset> = presets
        .iter()
        .filter(|p| p.path.parent() == Some(root) && p.exp.data.task == task)
        .collect();
    top.iter()
        .find(|p| p.path.file_stem().and_then(|s| s.to_str()) == Some(task.name()))
        .or(top.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runnable_presets_come_first_and_paper_last() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
        let all = catalog(&root);
        let labels: Vec<String> = all.iter().map(|p| p.label(&root)).collect();
        assert_eq!(
            labels[..4],
            ["nq", "squad", "gsm8k", "toolbench"],
            "{labels:?}"
        );
        assert!(labels.contains(&"example".to_string()), "{labels:?}");
        let first_paper = labels.iter().position(|l| l.starts_with("paper/"));
        assert!(first_paper.is_some(), "{labels:?}");
        assert!(labels[first_paper.unwrap_or(0)..]
            .iter()
            .all(|l| l.starts_with("paper/")));
        let squad = for_task(&all, &root, Task::Squad).map(|p| p.exp.train.cutoff_len);
        assert_eq!(squad, Some(96));
    }

    #[test]
    fn a_missing_folder_gives_no_presets() {
        assert!(catalog(Path::new("/nonexistent/presets")).is_empty());
    }
}
