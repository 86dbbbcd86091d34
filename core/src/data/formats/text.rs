//! Raw text for continued pretraining: JSONL (or JSON, Parquet) records
//! with a `text` field, or a `.txt` file whose documents are separated by
//! blank lines. Training packs the documents into `cutoff_len` blocks.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{for_each_mapped, record_error, record_id, write_jsonl, Id, Mapping};
use crate::data::{Columns, DataError, Example, Task};

pub(super) const EXPECTED: &str =
    r#"a JSON object with "text" (string), or a .txt file of documents separated by blank lines"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TextRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub text: String,
}

fn document(id: String, line: usize, text: String) -> Example {
    Example {
        id,
        task: Task::Text,
        instruction: String::new(),
        input: None,
        target: text,
        gold: Vec::new(),
        messages: Vec::new(),
        line,
    }
}

fn is_txt(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

/// Calls `each` with every document, in file order, one at a time.
pub(super) fn for_each(
    path: &Path,
    columns: &Columns,
    each: &mut dyn FnMut(Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    if is_txt(path) {
        return for_each_txt(path, each);
    }
    let mapping = [Mapping::required("text", "text", &columns.text)];
    let mut n = 0;
    for_each_mapped(path, EXPECTED, &mapping, |line, row: TextRow| {
        if row.text.trim().is_empty() {
            return Err(record_error(path, line, EXPECTED, "`text` is empty"));
        }
        let id = record_id(row.id, Task::Text, n);
        n += 1;
        each(document(id, line, row.text))
    })
}

/// Documents of a text file, read a line at a time.
fn for_each_txt(
    path: &Path,
    each: &mut dyn FnMut(Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut n = 0;
    let mut doc = String::new();
    let mut start = 0;
    let mut flush = |doc: &mut String, start: usize| -> Result<(), DataError> {
        if doc.is_empty() {
            return Ok(());
        }
        let id = record_id(None, Task::Text, n);
        n += 1;
        each(document(id, start, std::mem::take(doc)))
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                record_error(path, i + 1, EXPECTED, "line is not valid UTF-8")
            }
            _ => DataError::io(path, e),
        })?;
        let line = line.trim_start_matches('\u{feff}').trim_end();
        if line.trim().is_empty() {
            flush(&mut doc, start)?;
            continue;
        }
        if doc.is_empty() {
            start = i + 1;
        } else {
            doc.push('\n');
        }
        doc.push_str(line);
    }
    flush(&mut doc, start)?;
    if n == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            expected: EXPECTED.to_string(),
        });
    }
    Ok(())
}

pub(crate) fn write(path: &Path, rows: &[TextRow]) -> Result<(), DataError> {
    write_jsonl(path, rows)
}
