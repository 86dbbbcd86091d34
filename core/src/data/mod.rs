//! The data room: the one example type every task loads into, the loaders for
//! the official file formats, the answer grammar those formats share with the
//! metrics, the synthetic world that writes those formats, the prompt
//! template, tokenization with loss masks, and batching.
//!
//! Scoring answers lives in `crate::eval`, which builds on this room; this
//! room only reads and writes data and never imports from `eval`.

pub mod answer;
pub mod batch;
pub mod chat;
pub mod formats;
pub mod inspect;
pub mod prompt;
pub mod spec;
pub mod synth;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use formats::{for_each_example, load, load_with};

pub use crate::config::{Columns, Task};

/// One training or evaluation record, whatever file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Stable identifier; predictions files refer to records by it.
    pub id: String,
    pub task: Task,
    pub instruction: String,
    pub input: Option<String>,
    /// What the model is trained to produce.
    pub target: String,
    /// What the metrics compare a prediction against; empty for an
    /// unanswerable SQuAD v2 question.
    pub gold: Vec<String>,
    /// The whole conversation, for records that are more than one question
    /// and its answer (a system message, earlier turns): `instruction` is
    /// then its last user turn and `target` its last assistant turn, which
    /// ends it. Empty for single-turn records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<chat::Message>,
    /// The 1-based line (JSONL, JSON) or row (Parquet) the record starts
    /// on, for messages about it; 0 when unknown.
    #[serde(skip)]
    pub line: usize,
}

/// Everything that can go wrong reading, writing or checking data. Every
/// variant displays as one line that names the file (and the line when there
/// is one), so a user can jump straight to the bad record.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}:{line}: expected {expected}: {detail}", path.display())]
    Record {
        path: PathBuf,
        line: usize,
        expected: String,
        detail: String,
    },
    #[error("{}: empty file, expected {expected}", path.display())]
    Empty { path: PathBuf, expected: String },
    #[error("{}: no records, expected {expected}", path.display())]
    NoRecords { path: PathBuf, expected: String },
    #[error("{}:{line}: unknown id {id:?}, not in {}", path.display(), gold.display())]
    UnknownId {
        path: PathBuf,
        line: usize,
        id: String,
        gold: PathBuf,
    },
    #[error("{}:{line}: duplicate prediction for id {id:?}", path.display())]
    DuplicateId {
        path: PathBuf,
        line: usize,
        id: String,
    },
    #[error("{}: {count} of {total} records of {} have no prediction, the first is {first:?}", path.display(), gold.display())]
    MissingPredictions {
        path: PathBuf,
        gold: PathBuf,
        count: usize,
        total: usize,
        first: String,
    },
    #[error("{0}")]
    Setting(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What `meft data check` prints: enough to see at a glance that a file is the
/// one meant and that its answers were found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub task: Task,
    pub path: PathBuf,
    pub records: usize,
    pub gold_min: usize,
    pub gold_mean: f64,
    pub gold_max: usize,
    /// Mean target length in characters, not bytes, so it means the same for
    /// any script.
    pub target_chars_mean: f64,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file     {}", self.path.display())?;
        writeln!(f, "task     {}", self.task)?;
        writeln!(f, "records  {}", self.records)?;
        writeln!(
            f,
            "gold     min {}  mean {:.2}  max {}",
            self.gold_min, self.gold_mean, self.gold_max
        )?;
        write!(f, "target   mean {:.1} chars", self.target_chars_mean)
    }
}

/// Loads `path` as `task` and summarises it; any bad record is reported the
/// same way `load` reports it.
pub fn check(task: Task, path: &Path) -> Result<CheckReport, DataError> {
    check_with(task, path, &Columns::default())
}

/// [`check`] with the user's column names, one record in memory at a time.
pub fn check_with(task: Task, path: &Path, columns: &Columns) -> Result<CheckReport, DataError> {
    let (mut records, mut gold_sum, mut target_chars) = (0usize, 0usize, 0usize);
    let (mut gold_min, mut gold_max) = (usize::MAX, 0usize);
    for_each_example(task, path, columns, &mut |e| {
        records += 1;
        gold_sum += e.gold.len();
        gold_min = gold_min.min(e.gold.len());
        gold_max = gold_max.max(e.gold.len());
        target_chars += e.target.chars().count();
        Ok(())
    })?;
    let denom = records.max(1) as f64;
    Ok(CheckReport {
        task,
        path: path.to_path_buf(),
        records,
        gold_min: if records == 0 { 0 } else { gold_min },
        gold_mean: gold_sum as f64 / denom,
        gold_max,
        target_chars_mean: target_chars as f64 / denom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_round_trip_through_str_and_serde() {
        for &task in Task::ALL {
            assert_eq!(task.name().parse::<Task>().ok(), Some(task));
            let json = serde_json::to_string(&task).ok();
            assert_eq!(json, Some(format!("\"{}\"", task.name())));
        }
    }

    #[test]
    fn unknown_task_lists_the_allowed_names() {
        let err = "squad2".parse::<Task>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                r#"unknown task "squad2", expected one of: nq, squad, gsm8k, metamath, toolbench, alpaca, sharegpt, messages, text"#
            )
        );
    }

    #[test]
    fn check_summarises_gold_counts_and_target_length() -> Result<(), DataError> {
        let dir = tempfile::tempdir().map_err(|e| DataError::io(Path::new("tmp"), e))?;
        let path = dir.path().join("nq.jsonl");
        let text = concat!(
            r#"{"question": "q1", "answer": ["Odile Marsk", "Marsk"]}"#,
            "\n",
            r#"{"question": "q2", "answer": ["Velmo"]}"#,
            "\n"
        );
        std::fs::write(&path, text).map_err(|e| DataError::io(&path, e))?;
        let report = check(Task::Nq, &path)?;
        assert_eq!(report.records, 2);
        assert_eq!((report.gold_min, report.gold_max), (1, 2));
        assert!((report.gold_mean - 1.5).abs() < 1e-12);
        // targets are the first answers: 11 and 5 characters
        assert!((report.target_chars_mean - 8.0).abs() < 1e-12);
        let shown = report.to_string();
        assert!(shown.contains("records  2"), "{shown}");
        assert!(
            shown.contains("gold     min 1  mean 1.50  max 2"),
            "{shown}"
        );
        Ok(())
    }
}
