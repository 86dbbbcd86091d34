//! The synthetic world: seeded fictional people with facts no base model can
//! already know, written out in the real task formats (NQ-open, SQuAD,
//! GSM8K, MetaMathQA, ToolBench) so the real loaders and metrics run end to
//! end. The same spec always writes the same bytes, and worlds with different
//! namespaces never share a name, so facts for pretraining a base model can be
//! kept apart from the facts a preset fine-tunes on.
//!
//! This file owns the spec and writing a task's files; `world` draws the
//! people and their facts, `names` the words they are spelled with, and
//! `questions`, `arithmetic` and `tools` turn a world into each task's rows,
//! which the format files under `crate::data::formats` write.

mod arithmetic;
mod general;
mod names;
mod questions;
mod tools;
mod world;

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use self::arithmetic::{arithmetic_problems, Problem};
use self::questions::{knowledge_text, nq_rows, squad_doc};
use self::tools::{catalogue, tool_queries};
use self::world::stream_seed;
pub use self::world::{corpus_text, world, Attribute, Entity, Fact, World};
use super::formats::{
    self, alpaca, gsm8k, messages, metamath, nq, sharegpt, squad, text, toolbench,
};
use super::{DataError, Task};

/// Size knobs of a world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorldSpec {
    /// People in the world.
    pub entities: usize,
    pub seed: u64,
    /// Distinct values per attribute (towns, employers, …).
    pub pool: usize,
    /// Attributes per person, at most `Attribute::ALL.len()`.
    pub attributes: usize,
    /// Worlds with different namespaces never share a person's name, whatever
    /// their seeds (namespaces below 16 keep two-syllable family names).
    pub namespace: u64,
    /// Adds one unanswerable question per person to SQuAD (written as v2.0).
    pub unanswerable: bool,
}

impl Default for WorldSpec {
    fn default() -> Self {
        WorldSpec {
            entities: 200,
            seed: 0,
            pool: 24,
            attributes: 6,
            namespace: 0,
            unanswerable: false,
        }
    }
}

/// Beyond this the name space of one namespace (tens of millions) is still
/// far away, but generation time and file sizes stop being sensible.
pub const MAX_ENTITIES: usize = 1_000_000;
const MAX_POOL: usize = 5_000;

impl WorldSpec {
    pub fn validate(&self) -> Result<(), DataError> {
        if self.entities == 0 || self.entities > MAX_ENTITIES {
            return Err(DataError::Setting(format!(
                "entities must be between 1 and {MAX_ENTITIES}, got {}",
                self.entities
            )));
        }
        if self.pool < 2 || self.pool > MAX_POOL {
            return Err(DataError::Setting(format!(
                "pool must be between 2 and {MAX_POOL}, got {}",
                self.pool
            )));
        }
        if self.attributes == 0 || self.attributes > Attribute::ALL.len() {
            return Err(DataError::Setting(format!(
                "attributes must be between 1 and {}, got {}",
                Attribute::ALL.len(),
                self.attributes
            )));
        }
        Ok(())
    }
}

fn task_rng(spec: &WorldSpec, task: Task) -> ChaCha8Rng {
    // `Task::ALL` lists the variants in declaration order (one macro writes
    // both), so the discriminant is the task's place in it.
    let purpose = 1 + task as u64;
    ChaCha8Rng::seed_from_u64(stream_seed(spec.seed, spec.namespace, purpose))
}

fn split_sizes(spec: &WorldSpec) -> (usize, usize) {
    let train = spec.entities.max(1);
    (train, (train / 4).max(1))
}

/// Rows for both splits of `spec`, train first, drawn one at a time: `draw`
/// gets the index the row will take and answers `None` to be asked again (for
/// a question drawn before), so train and test never share a question.
fn draw_splits<T>(spec: &WorldSpec, mut draw: impl FnMut(usize) -> Option<T>) -> (Vec<T>, Vec<T>) {
    let (n_train, n_test) = split_sizes(spec);
    let mut rows = Vec::with_capacity(n_train + n_test);
    while rows.len() < n_train + n_test {
        rows.extend(draw(rows.len()));
    }
    let test = rows.split_off(n_train);
    (rows, test)
}

/// Fisher–Yates, spelled out so the same seed always gives the same order.
fn shuffle<T>(rng: &mut ChaCha8Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

// ---------------------------------------------------------------- writing

/// What `write` produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthReport {
    pub task: Task,
    pub train: PathBuf,
    pub test: PathBuf,
    /// Files besides train and test (the NQ knowledge lines).
    pub extra: Vec<PathBuf>,
    pub train_records: usize,
    pub test_records: usize,
}

impl fmt::Display for SynthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} train records in {}, {} test records in {}",
            self.task,
            self.train_records,
            self.train.display(),
            self.test_records,
            self.test.display()
        )?;
        for extra in &self.extra {
            write!(f, ", {}", extra.display())?;
        }
        Ok(())
    }
}

/// File names `write` uses for a task's train and test splits.
pub fn file_names(task: Task) -> (&'static str, &'static str) {
    match task {
        Task::Nq | Task::Gsm8k | Task::Messages | Task::Text => ("train.jsonl", "test.jsonl"),
        Task::Squad | Task::MetaMath | Task::ToolBench | Task::Alpaca | Task::ShareGpt => {
            ("train.json", "test.json")
        }
    }
}

/// Writes `train.*` and `test.*` for `task` into `out` (created if needed).
pub fn write(task: Task, spec: &WorldSpec, out: &Path) -> Result<SynthReport, DataError> {
    spec.validate()?;
    fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let (train_name, test_name) = file_names(task);
    let train = out.join(train_name);
    let test = out.join(test_name);
    let world = world(spec);
    let mut rng = task_rng(spec, task);
    let mut extra = Vec::new();
    let paths = (train.as_path(), test.as_path());
    let (train_records, test_records) = match task {
        Task::Nq => {
            let knowledge = out.join("knowledge.txt");
            formats::write_text(&knowledge, &knowledge_text(&world))?;
            extra.push(knowledge);
            write_splits(nq::write, paths, nq_rows(&world))?
        }
        Task::Squad => {
            let mut taken: HashSet<String> =
                world.entities.iter().map(|e| e.name.clone()).collect();
            let (tr, n_tr) = squad_doc(&world, spec, &mut rng, &mut taken, Split::Train);
            let (te, n_te) = squad_doc(&world, spec, &mut rng, &mut taken, Split::Test);
            squad::write(&train, &tr)?;
            squad::write(&test, &te)?;
            (n_tr, n_te)
        }
        Task::Gsm8k => {
            let (tr, te) = arithmetic_problems(&world, spec, &mut rng);
            let rows = |ps: Vec<Problem>| ps.iter().map(Problem::gsm8k).collect();
            write_splits(gsm8k::write, paths, (rows(tr), rows(te)))?
        }
        Task::MetaMath => {
            let (tr, te) = arithmetic_problems(&world, spec, &mut rng);
            let rows = |ps: Vec<Problem>| ps.iter().map(Problem::metamath).collect();
            write_splits(metamath::write, paths, (rows(tr), rows(te)))?
        }
        Task::ToolBench => {
            let catalogue = catalogue(spec, &mut rng);
            write_splits(
                toolbench::write,
                paths,
                tool_queries(&world, spec, &catalogue, &mut rng),
            )?
        }
        Task::Alpaca => write_splits(alpaca::write, paths, general::alpaca_rows(&world))?,
        Task::ShareGpt => write_splits(sharegpt::write, paths, general::sharegpt_rows(&world))?,
        Task::Messages => write_splits(messages::write, paths, general::message_rows(&world))?,
        Task::Text => write_splits(text::write, paths, general::text_rows(&world))?,
    };
    Ok(SynthReport {
        task,
        train,
        test,
        extra,
        train_records,
        test_records,
    })
}

/// Writes both splits with a format's writer; returns their record counts.
fn write_splits<T>(
    write: fn(&Path, &[T]) -> Result<(), DataError>,
    (train, test): (&Path, &Path),
    (train_rows, test_rows): (Vec<T>, Vec<T>),
) -> Result<(usize, usize), DataError> {
    write(train, &train_rows)?;
    write(test, &test_rows)?;
    Ok((train_rows.len(), test_rows.len()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load;

    pub(super) fn small() -> WorldSpec {
        WorldSpec {
            entities: 30,
            seed: 11,
            pool: 8,
            attributes: 4,
            namespace: 0,
            unanswerable: false,
        }
    }

    pub(super) fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    /// `task`'s files for `spec`, in a directory removed when the first
    /// value drops.
    pub(super) fn written(
        task: Task,
        spec: &WorldSpec,
    ) -> Result<(tempfile::TempDir, SynthReport), DataError> {
        let dir = tmp();
        let report = write(task, spec, dir.path())?;
        Ok((dir, report))
    }

    pub(super) fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    #[test]
    fn same_seed_writes_identical_files_for_every_task() -> Result<(), DataError> {
        let spec = WorldSpec {
            unanswerable: true,
            ..small()
        };
        for &task in Task::ALL {
            let (a, b, c) = (tmp(), tmp(), tmp());
            let ra = write(task, &spec, a.path())?;
            let rb = write(task, &spec, b.path())?;
            let rc = write(task, &WorldSpec { seed: 99, ..spec }, c.path())?;
            assert_eq!(read(&ra.train), read(&rb.train), "{task}");
            assert_eq!(read(&ra.test), read(&rb.test), "{task}");
            assert_ne!(read(&ra.train), read(&rc.train), "{task}");
            for (x, y) in ra.extra.iter().zip(&rb.extra) {
                assert_eq!(read(x), read(y));
            }
            assert!(read(&ra.train).is_ascii());
        }
        Ok(())
    }

    #[test]
    fn generated_files_load_back_with_expected_counts() -> Result<(), DataError> {
        let spec = small();
        let facts = 30 * 4;
        let expected = [
            (Task::Nq, facts * 3, facts),
            (Task::Squad, facts, facts),
            (Task::Gsm8k, 30, 7),
            (Task::MetaMath, 30, 7),
            (Task::ToolBench, 30, 7),
            (Task::Alpaca, facts * 3, facts),
            // two facts per conversation
            (Task::ShareGpt, facts / 2 * 3, facts / 2),
            (Task::Messages, facts / 2 * 3, facts / 2),
            // one biography per person, a quarter held out
            (Task::Text, 30, 7),
        ];
        for (task, n_train, n_test) in expected {
            let (_dir, report) = written(task, &spec)?;
            assert_eq!(
                (report.train_records, report.test_records),
                (n_train, n_test),
                "{task}"
            );
            let train = load(task, &report.train)?;
            let test = load(task, &report.test)?;
            assert_eq!((train.len(), test.len()), (n_train, n_test), "{task}");
            let train_ids: HashSet<&str> = train.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(train_ids.len(), n_train, "{task} ids are unique");
            assert!(
                train
                    .iter()
                    .chain(&test)
                    .all(|e| !e.gold.is_empty() || task == Task::Text),
                "{task}"
            );
        }
        Ok(())
    }

    #[test]
    fn bad_specs_are_rejected() {
        let dir = tmp();
        for spec in [
            WorldSpec {
                entities: 0,
                ..small()
            },
            WorldSpec { pool: 1, ..small() },
            WorldSpec {
                attributes: 9,
                ..small()
            },
        ] {
            let err = write(Task::Nq, &spec, dir.path())
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("must be between")));
        }
    }
}
