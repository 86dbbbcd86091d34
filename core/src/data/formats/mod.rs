//! The official file shapes of each task (NQ-open, SQuAD v1.1 / v2.0 nested
//! and flattened, GSM8K, MetaMathQA, ToolBench query files): one file per
//! format with its rows, its loader into `Example`s and its writer. This file
//! holds what they share: dispatch by task, reading JSONL and JSON documents,
//! reporting a bad record as `FILE:LINE: expected …`, and writing atomically.

pub(crate) mod gsm8k;
pub(crate) mod metamath;
pub(crate) mod nq;
pub(crate) mod squad;
pub(crate) mod toolbench;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::{DataError, Example, Task};

/// Reads `path` in the official shape of `task`.
pub fn load(task: Task, path: &Path) -> Result<Vec<Example>, DataError> {
    let examples = match task {
        Task::Nq => nq::load(path)?,
        Task::Squad => squad::load(path)?,
        Task::Gsm8k => gsm8k::load(path)?,
        Task::MetaMath => metamath::load(path)?,
        Task::ToolBench => toolbench::load(path)?,
    };
    if examples.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            expected: expected_for(task).to_string(),
        });
    }
    Ok(examples)
}

fn expected_for(task: Task) -> &'static str {
    match task {
        Task::Nq => nq::EXPECTED,
        Task::Squad => squad::DOC_EXPECTED,
        Task::Gsm8k => gsm8k::EXPECTED,
        Task::MetaMath => metamath::EXPECTED,
        Task::ToolBench => toolbench::EXPECTED,
    }
}

// ---------------------------------------------------------------- reading

fn record_error(path: &Path, line: usize, expected: &str, detail: impl Into<String>) -> DataError {
    DataError::Record {
        path: path.to_path_buf(),
        line,
        expected: expected.to_string(),
        detail: detail.into(),
    }
}

/// serde_json's message without its " at line L column C" tail, because the
/// line is already in front of the message and, for JSONL, serde's own line
/// would always read 1.
fn json_detail(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let tail = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&tail).unwrap_or(&text).to_string()
}

pub(crate) fn json_error(
    path: &Path,
    line_offset: usize,
    expected: &str,
    err: &serde_json::Error,
) -> DataError {
    record_error(
        path,
        line_offset + err.line().max(1) - 1,
        expected,
        json_detail(err),
    )
}

/// Calls `each` with (line number, line) for every non-blank line, streaming
/// so a multi-gigabyte JSONL file is never held in memory.
fn for_each_line(
    path: &Path,
    expected: &str,
    mut each: impl FnMut(usize, &str) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut line_no = 0;
    let mut saw_content = false;
    loop {
        buf.clear();
        let read = reader.read_line(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                record_error(path, line_no + 1, expected, "line is not valid UTF-8")
            } else {
                DataError::io(path, e)
            }
        })?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let line = buf.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        saw_content = true;
        each(line_no, line)?;
    }
    if !saw_content {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}

pub(crate) fn parse_line<T: DeserializeOwned>(
    path: &Path,
    line_no: usize,
    line: &str,
    expected: &str,
) -> Result<T, DataError> {
    serde_json::from_str(line).map_err(|e| record_error(path, line_no, expected, json_detail(&e)))
}

/// Calls `each` with (line number, record) for every record of a JSONL file.
fn for_each_record<T: DeserializeOwned>(
    path: &Path,
    expected: &str,
    mut each: impl FnMut(usize, T) -> Result<(), DataError>,
) -> Result<(), DataError> {
    for_each_line(path, expected, |line_no, line| {
        each(line_no, parse_line(path, line_no, line, expected)?)
    })
}

fn read_document(path: &Path, expected: &str) -> Result<String, DataError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                record_error(path, 1, expected, "file is not valid UTF-8")
            } else {
                DataError::io(path, e)
            }
        })?;
    if let Some(stripped) = text.strip_prefix('\u{feff}') {
        text = stripped.to_string();
    }
    if text.trim().is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            expected: expected.to_string(),
        });
    }
    Ok(text)
}

fn parse_document<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    expected: &str,
) -> Result<T, DataError> {
    serde_json::from_str(text).map_err(|e| json_error(path, 1, expected, &e))
}

/// 1-based line where each JSON object opened inside exactly `depth`
/// enclosing containers starts, in document order. Typed deserialisation
/// loses positions, so this recovers the line of, say, the 7th element of a
/// top-level array (`depth` 1) to report a record that parsed but is wrong.
fn object_lines(text: &str, depth: usize) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut line = 1;
    let mut open = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => {
                if c == '{' && open == depth {
                    lines.push(line);
                }
                open += 1;
            }
            '}' | ']' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    lines
}

fn line_of(lines: &[usize], index: usize) -> usize {
    lines.get(index).copied().unwrap_or(1)
}

/// The records of a file holding one JSON array, each with the line its
/// object opens on.
fn read_array<T: DeserializeOwned>(
    path: &Path,
    expected: &str,
) -> Result<Vec<(usize, T)>, DataError> {
    let text = read_document(path, expected)?;
    let rows: Vec<T> = parse_document(path, &text, expected)?;
    let lines = object_lines(&text, 1);
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| (line_of(&lines, i), row))
        .collect())
}

/// Ids in the wild are strings (SQuAD) or numbers (ToolBench `query_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Id {
    Text(String),
    Number(serde_json::Number),
}

impl Id {
    pub(crate) fn into_string(self) -> String {
        match self {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}

/// A record's own id, or for formats that carry none its position, so it is
/// stable for a given file.
fn record_id(id: Option<Id>, task: Task, index: usize) -> String {
    id.map(Id::into_string)
        .unwrap_or_else(|| format!("{}-{index}", task.name()))
}

/// A question answered from memory, with no input passage: how every format
/// loads, SQuAD too, since the paper asks its questions closed book.
fn closed_book(
    id: String,
    task: Task,
    question: String,
    target: String,
    gold: Vec<String>,
) -> Example {
    Example {
        id,
        task,
        instruction: question,
        input: None,
        target,
        gold,
    }
}

/// For a field that may be missing but, when there, must hold a value: a
/// `null` is refused as it would be for a required field.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

// ---------------------------------------------------------------- writing

/// Written under a temporary name and renamed, so a reader never sees half a
/// file and an interrupted run leaves the old one intact.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), DataError> {
    crate::fsx::write_atomic(path, text.as_bytes()).map_err(|e| DataError::io(path, e))
}

/// One pretty-printed JSON document, laid out as the official JSON files are.
fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), DataError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
    write_text(path, &text)
}

/// One compact JSON object per line.
fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), DataError> {
    let mut text = String::new();
    for row in rows {
        let line = serde_json::to_string(row)
            .map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_text(path, &text)
}

/// Files for loader and scorer tests, in a directory removed afterwards.
#[cfg(test)]
pub(crate) mod fixture {
    use std::path::{Path, PathBuf};

    use super::load;
    use crate::data::{Example, Task};

    pub(crate) struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        pub(crate) fn new() -> Self {
            Files {
                dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            }
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.path(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
            path
        }

        /// A new directory holding one file.
        pub(crate) fn with(name: &str, text: &str) -> (Self, PathBuf) {
            let files = Files::new();
            let path = files.write(name, text);
            (files, path)
        }
    }

    pub(crate) fn load_ok(task: Task, path: &Path) -> Vec<Example> {
        load(task, path).unwrap_or_else(|e| panic!("load failed: {e}"))
    }

    pub(crate) fn load_err(task: Task, path: &Path) -> String {
        match load(task, path) {
            Ok(v) => panic!("expected an error, loaded {} records", v.len()),
            Err(e) => e.to_string(),
        }
    }

    pub(crate) fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{load_err, Files};
    use super::*;

    #[test]
    fn truncated_jsonl_line_names_file_and_line() {
        let (_fx, path) = Files::with(
            "nq.jsonl",
            concat!(
                r#"{"question": "a", "answer": ["b"]}"#,
                "\n",
                r#"{"question": "c", "answer": ["d"]}"#,
                "\n",
                r#"{"question": "who completed"#,
                "\n"
            ),
        );
        let expected = format!(
            "{}:3: expected a JSON object with \"question\" (string) and \"answer\" (array of strings): EOF while parsing a string",
            path.display()
        );
        assert_eq!(load_err(Task::Nq, &path), expected);
    }

    #[test]
    fn missing_answer_names_file_and_line() {
        let (fx, path) = Files::with(
            "nq.jsonl",
            concat!(
                r#"{"question": "a", "answer": ["b"]}"#,
                "\n",
                r#"{"question": "c"}"#,
                "\n"
            ),
        );
        let expected = format!(
            "{}:2: expected a JSON object with \"question\" (string) and \"answer\" (array of strings): missing field `answer`",
            path.display()
        );
        assert_eq!(load_err(Task::Nq, &path), expected);

        let gsm = fx.write("gsm.jsonl", "{\"question\": \"q\"}\n");
        let err = load_err(Task::Gsm8k, &gsm);
        assert!(
            err.starts_with(&format!("{}:1: expected", gsm.display())),
            "{err}"
        );
        assert!(err.ends_with("missing field `answer`"), "{err}");
    }

    #[test]
    fn empty_file_is_an_error() {
        let (fx, path) = Files::with("empty.jsonl", "\n  \n");
        let expected = format!(
            "{}: empty file, expected a JSON object with \"question\" (string) and \"answer\" (array of strings)",
            path.display()
        );
        assert_eq!(load_err(Task::Nq, &path), expected);
        let json = fx.write("empty.json", "");
        assert!(load_err(Task::MetaMath, &json).contains(": empty file, expected a JSON array"));
        assert!(load_err(Task::Squad, &json).contains(": empty file, expected"));
    }

    #[test]
    fn object_lines_skip_braces_inside_strings() {
        let text = "[\n{\"a\": \"{[\\\"}\"},\n\n{\"b\": {\"c\": 1}}\n]";
        assert_eq!(object_lines(text, 1), vec![2, 4]);
        assert_eq!(object_lines(text, 2), vec![4]);
    }
}
