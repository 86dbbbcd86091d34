//! The official file shapes of each task (NQ-open, SQuAD v1.1 / v2.0 nested
//! and flattened, GSM8K, MetaMathQA, ToolBench query files) and the general
//! ones (alpaca, sharegpt, messages, text): one file per format with its
//! rows, its loader into `Example`s and its writer. This file holds what they
//! share: dispatch by task, reading JSONL, JSON documents and Parquet,
//! the user's column names, conversations, reporting a bad record as
//! `FILE:LINE: expected …`, and writing atomically.

pub(crate) mod alpaca;
pub(crate) mod gsm8k;
pub(crate) mod messages;
pub(crate) mod metamath;
pub(crate) mod nq;
pub(crate) mod parquet;
pub(crate) mod sharegpt;
pub(crate) mod squad;
pub(crate) mod text;
pub(crate) mod toolbench;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::chat::{Message, Role};
use super::{Columns, DataError, Example, Task};

/// Reads `path` in the official shape of `task`.
pub fn load(task: Task, path: &Path) -> Result<Vec<Example>, DataError> {
    load_with(task, path, &Columns::default())
}

/// Reads `path` in the shape of `task`, the general formats' fields under
/// the user's column names.
pub fn load_with(task: Task, path: &Path, columns: &Columns) -> Result<Vec<Example>, DataError> {
    let examples = match task {
        Task::Nq => nq::load(path)?,
        Task::Squad => squad::load(path)?,
        Task::Gsm8k => gsm8k::load(path)?,
        Task::MetaMath => metamath::load(path)?,
        Task::ToolBench => toolbench::load(path)?,
        _ => {
            let mut out = Vec::new();
            for_each_example(task, path, columns, &mut |e| {
                out.push(e);
                Ok(())
            })?;
            return Ok(out);
        }
    };
    if examples.is_empty() {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            expected: expected_for(task).to_string(),
        });
    }
    Ok(examples)
}

/// Calls `each` with every record of `path` in file order. The general
/// formats stream, one record in memory at a time (a JSON array is read
/// whole, as it must be parsed whole); the benchmark formats are loaded
/// first.
pub fn for_each_example(
    task: Task,
    path: &Path,
    columns: &Columns,
    each: &mut dyn FnMut(Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mut n = 0;
    let mut counted = |e: Example| {
        n += 1;
        each(e)
    };
    match task {
        Task::Alpaca => alpaca::for_each(path, columns, &mut counted)?,
        Task::ShareGpt => sharegpt::for_each(path, columns, &mut counted)?,
        Task::Messages => messages::for_each(path, columns, &mut counted)?,
        Task::Text => text::for_each(path, columns, &mut counted)?,
        _ => {
            for e in load_with(task, path, columns)? {
                counted(e)?;
            }
        }
    }
    if n == 0 {
        return Err(DataError::NoRecords {
            path: path.to_path_buf(),
            expected: expected_for(task).to_string(),
        });
    }
    Ok(())
}

fn expected_for(task: Task) -> &'static str {
    match task {
        Task::Nq => nq::EXPECTED,
        Task::Squad => squad::DOC_EXPECTED,
        Task::Gsm8k => gsm8k::EXPECTED,
        Task::MetaMath => metamath::EXPECTED,
        Task::ToolBench => toolbench::EXPECTED,
        Task::Alpaca => alpaca::EXPECTED,
        Task::ShareGpt => sharegpt::EXPECTED,
        Task::Messages => messages::EXPECTED,
        Task::Text => text::EXPECTED,
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

/// Calls `each` with (line number, record) for every record of a JSONL file
/// (or row number, record for a Parquet file).
fn for_each_record<T: DeserializeOwned>(
    path: &Path,
    expected: &str,
    mut each: impl FnMut(usize, T) -> Result<(), DataError>,
) -> Result<(), DataError> {
    if parquet::is_parquet(path) {
        return parquet::for_each_row(path, expected, &[], |row, value| {
            each(row, from_value(path, row, expected, value)?)
        });
    }
    for_each_line(path, expected, |line_no, line| {
        each(line_no, parse_line(path, line_no, line, expected)?)
    })
}

fn from_value<T: DeserializeOwned>(
    path: &Path,
    line: usize,
    expected: &str,
    value: serde_json::Value,
) -> Result<T, DataError> {
    serde_json::from_value(value).map_err(|e| record_error(path, line, expected, json_detail(&e)))
}

/// Whether the file's first non-blank character opens a JSON array.
fn starts_array(path: &Path) -> Result<bool, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    loop {
        let buf = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
        if buf.is_empty() {
            return Ok(false);
        }
        let skip = buf
            .iter()
            .take_while(|b| b.is_ascii_whitespace() || matches!(b, 0xef | 0xbb | 0xbf))
            .count();
        if skip < buf.len() {
            return Ok(buf[skip] == b'[');
        }
        let n = buf.len();
        reader.consume(n);
    }
}

/// Calls `each` with (line or row, record) for every record of `path`,
/// whatever holds it: a Parquet file (whose schema must have the
/// `required` columns: (setting, column)), a JSON array, or JSONL.
fn for_each_value(
    path: &Path,
    expected: &str,
    required: &[(String, String)],
    mut each: impl FnMut(usize, serde_json::Value) -> Result<(), DataError>,
) -> Result<(), DataError> {
    if parquet::is_parquet(path) {
        return parquet::for_each_row(path, expected, required, each);
    }
    if starts_array(path)? {
        for (line, value) in read_array::<serde_json::Value>(path, expected)? {
            each(line, value)?;
        }
        return Ok(());
    }
    for_each_record(path, expected, each)
}

/// A record's fields under the names the format reads them by: each column
/// the user named (`data.columns.KEY = "theirs"`) moved to the format's own
/// name. A required column missing from a record is an error; an optional
/// one is simply absent.
fn mapped(
    path: &Path,
    line: usize,
    expected: &str,
    value: serde_json::Value,
    mapping: &[Mapping],
) -> Result<serde_json::Value, DataError> {
    let serde_json::Value::Object(mut obj) = value else {
        return Err(record_error(path, line, expected, "not a JSON object"));
    };
    for &Mapping {
        key,
        ours,
        theirs,
        required,
    } in mapping
    {
        let Some(theirs) = theirs.filter(|t| t.as_str() != ours) else {
            continue;
        };
        match obj.remove(theirs.as_str()) {
            Some(v) => {
                obj.insert(ours.to_string(), v);
            }
            None if !required => {}
            None => {
                return Err(record_error(
                    path,
                    line,
                    expected,
                    format!("missing column {theirs:?} (data.columns.{key})"),
                ))
            }
        }
    }
    Ok(serde_json::Value::Object(obj))
}

/// One field of a general format: its `data.columns` key, the format's own
/// name for it, the user's name if they gave one, and whether every record
/// must have it.
#[derive(Clone, Copy)]
struct Mapping<'a> {
    key: &'static str,
    ours: &'static str,
    theirs: Option<&'a String>,
    required: bool,
}

impl<'a> Mapping<'a> {
    fn required(key: &'static str, ours: &'static str, theirs: &'a Option<String>) -> Self {
        Mapping {
            key,
            ours,
            theirs: theirs.as_ref(),
            required: true,
        }
    }

    fn optional(key: &'static str, ours: &'static str, theirs: &'a Option<String>) -> Self {
        Mapping {
            required: false,
            ..Mapping::required(key, ours, theirs)
        }
    }
}

/// The columns a Parquet file of a mapped format must have: (where the
/// name comes from, the name).
fn required_columns(mapping: &[Mapping]) -> Vec<(String, String)> {
    mapping
        .iter()
        .filter(|m| m.required)
        .map(|m| match m.theirs {
            Some(theirs) => (format!("data.columns.{}", m.key), theirs.clone()),
            None => ("the format's own name".to_string(), m.ours.to_string()),
        })
        .collect()
}

/// Every record of a general format, its fields moved to the format's own
/// names and read as `T`, with its line.
fn for_each_mapped<T: DeserializeOwned>(
    path: &Path,
    expected: &str,
    mapping: &[Mapping],
    mut each: impl FnMut(usize, T) -> Result<(), DataError>,
) -> Result<(), DataError> {
    for_each_value(path, expected, &required_columns(mapping), |line, value| {
        let value = mapped(path, line, expected, value, mapping)?;
        each(line, from_value(path, line, expected, value)?)
    })
}

/// How a conversation format spells its turns: the keys of a turn and the
/// speaker names.
pub(crate) struct Tags {
    pub role: String,
    pub content: String,
    pub user: Vec<String>,
    pub assistant: Vec<String>,
    pub system: String,
}

impl Tags {
    fn role_of(&self, name: &str) -> Option<Role> {
        if self.user.iter().any(|u| u == name) {
            Some(Role::User)
        } else if self.assistant.iter().any(|a| a == name) {
            Some(Role::Assistant)
        } else if name == self.system {
            Some(Role::System)
        } else {
            None
        }
    }

    fn names(&self) -> String {
        let mut all: Vec<&str> = self.user.iter().map(String::as_str).collect();
        all.extend(self.assistant.iter().map(String::as_str));
        all.push(&self.system);
        all.join(", ")
    }
}

/// The turns of one conversation, checked: every turn a known speaker with
/// text, at least one turn, the last the assistant's (what is trained and
/// what evaluation compares against). A system message given beside the
/// turns comes first.
fn conversation(
    path: &Path,
    line: usize,
    expected: &str,
    turns: &[serde_json::Value],
    tags: &Tags,
    system: Option<String>,
) -> Result<Vec<Message>, DataError> {
    let err = |detail: String| record_error(path, line, expected, detail);
    if turns.is_empty() {
        return Err(err("empty conversation: no turns".into()));
    }
    let mut out: Vec<Message> = system
        .filter(|s| !s.is_empty())
        .map(|s| Message::new(Role::System, s))
        .into_iter()
        .collect();
    for (i, turn) in turns.iter().enumerate() {
        let n = i + 1;
        let field = |key: &str| -> Result<String, DataError> {
            match turn.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(err(format!(
                    "turn {n}: {key:?} must be a string, got {other}"
                ))),
                None => Err(err(format!("turn {n}: missing {key:?}"))),
            }
        };
        let speaker = field(&tags.role)?;
        let Some(role) = tags.role_of(&speaker) else {
            return Err(err(format!(
                "turn {n}: unknown role {speaker:?} (expected one of: {})",
                tags.names()
            )));
        };
        out.push(Message::new(role, field(&tags.content)?));
    }
    match out.last().map(|m| m.role) {
        Some(Role::Assistant) => Ok(out),
        _ => Err(err(
            "the conversation does not end with an assistant turn (the answer it trains on)".into(),
        )),
    }
}

/// A conversation as a record: its last user turn the instruction, its
/// last assistant turn the target and the gold answer.
fn conversation_example(id: String, task: Task, line: usize, messages: Vec<Message>) -> Example {
    let target = messages
        .last()
        .map(|m| m.content.clone())
        .unwrap_or_default();
    let instruction = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default();
    Example {
        id,
        task,
        instruction,
        input: None,
        gold: vec![target.clone()],
        target,
        messages,
        line,
    }
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
    if parquet::is_parquet(path) {
        let mut rows = Vec::new();
        parquet::for_each_row(path, expected, &[], |row, value| {
            rows.push((row, from_value(path, row, expected, value)?));
            Ok(())
        })?;
        return Ok(rows);
    }
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
        messages: Vec::new(),
        line: 0,
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
