//! Loaders for the official file shapes of each task (NQ-open, SQuAD v1.1 /
//! v2.0 nested and flattened, GSM8K, MetaMathQA, ToolBench query files), all
//! turned into `Example`s. A bad record is reported as `FILE:LINE: expected …`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::answer::{api_block, gsm8k_number, metamath_answer};
use super::{DataError, Example, Task};

const NQ_EXPECTED: &str =
    r#"a JSON object with "question" (string) and "answer" (array of strings)"#;
const SQUAD_DOC_EXPECTED: &str = r#"a SQuAD JSON object {"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}"#;
const SQUAD_ROW_EXPECTED: &str = r#"a JSON object with "id", "question" and "answers" {"text": [strings], "answer_start": [integers]}"#;
const GSM8K_EXPECTED: &str =
    "a JSON object with \"question\" (string) and \"answer\" (string ending in \"#### N\")";
const METAMATH_EXPECTED: &str = r#"a JSON array of {"query", "response", "type"} objects whose responses end with "The answer is: N""#;
const TOOLBENCH_EXPECTED: &str =
    r#"a JSON array of {"query", "query_id", "api_list", "relevant APIs"} objects"#;

/// Reads `path` in the official shape of `task`.
pub fn load(task: Task, path: &Path) -> Result<Vec<Example>, DataError> {
    let examples = match task {
        Task::Nq => load_nq(path)?,
        Task::Squad => load_squad(path)?,
        Task::Gsm8k => load_gsm8k(path)?,
        Task::MetaMath => load_metamath(path)?,
        Task::ToolBench => load_toolbench(path)?,
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
        Task::Nq => NQ_EXPECTED,
        Task::Squad => SQUAD_DOC_EXPECTED,
        Task::Gsm8k => GSM8K_EXPECTED,
        Task::MetaMath => METAMATH_EXPECTED,
        Task::ToolBench => TOOLBENCH_EXPECTED,
    }
}

// ---------------------------------------------------------------- plumbing

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

fn json_error(
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

fn parse_line<T: DeserializeOwned>(
    path: &Path,
    line_no: usize,
    line: &str,
    expected: &str,
) -> Result<T, DataError> {
    serde_json::from_str(line).map_err(|e| record_error(path, line_no, expected, json_detail(&e)))
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
pub(crate) fn object_lines(text: &str, depth: usize) -> Vec<usize> {
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

/// Ids in the wild are strings (SQuAD) or numbers (ToolBench `query_id`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(serde_json::Number),
}

impl Id {
    fn into_string(self) -> String {
        match self {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}

/// Ids for formats that carry none: the record's position, so they are
/// stable for a given file.
fn positional_id(task: Task, index: usize) -> String {
    format!("{}-{index}", task.name())
}

// ---------------------------------------------------------------- NQ-open

#[derive(Deserialize)]
struct NqRow {
    #[serde(default)]
    id: Option<Id>,
    question: String,
    #[serde(default)]
    answer: Option<Vec<String>>,
    #[serde(default)]
    long_answers: Option<Vec<String>>,
    #[serde(default)]
    short_answers: Option<Vec<String>>,
}

fn load_nq(path: &Path) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::new();
    for_each_line(path, NQ_EXPECTED, |line_no, line| {
        let row: NqRow = parse_line(path, line_no, line, NQ_EXPECTED)?;
        let short = row.short_answers.filter(|s| !s.is_empty());
        let gold = match (short, row.answer) {
            (Some(short), _) => short,
            (None, Some(answer)) => answer,
            (None, None) => {
                return Err(record_error(
                    path,
                    line_no,
                    NQ_EXPECTED,
                    "missing field `answer`",
                ))
            }
        };
        let Some(first) = gold.first().cloned() else {
            return Err(record_error(
                path,
                line_no,
                NQ_EXPECTED,
                "`answer` is empty",
            ));
        };
        // The paper trained on the long-answer passage and scored on the
        // short answers; without a passage the first answer is the target.
        let target = match row.long_answers.filter(|l| !l.is_empty()) {
            Some(long) => long.join(" "),
            None => first,
        };
        let id = row
            .id
            .map(Id::into_string)
            .unwrap_or_else(|| positional_id(Task::Nq, out.len()));
        out.push(Example {
            id,
            task: Task::Nq,
            instruction: row.question,
            input: None,
            target,
            gold,
        });
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------- SQuAD

#[derive(Deserialize)]
struct SquadDoc {
    data: Vec<SquadArticle>,
}

#[derive(Deserialize)]
struct SquadArticle {
    paragraphs: Vec<SquadParagraph>,
}

#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQa>,
}

#[derive(Deserialize)]
struct SquadQa {
    id: Id,
    question: String,
    #[serde(default)]
    answers: Vec<SquadAnswer>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
    answer_start: usize,
}

#[derive(Deserialize)]
struct SquadRow {
    #[serde(default)]
    id: Option<Id>,
    question: String,
    #[serde(default)]
    context: Option<String>,
    answers: FlatAnswers,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct FlatAnswers {
    text: Vec<String>,
    answer_start: Vec<usize>,
}

enum SquadShape {
    Nested,
    RowArray,
    RowLines,
}

/// The nested document and JSONL rows both open with `{`; the first line
/// tells them apart (a pretty-printed document opens with a bare `{`, a
/// one-line document has a `data` key, a row has neither).
fn squad_shape(path: &Path) -> Result<SquadShape, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut first = String::new();
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else {
            // Let the real reader report encoding problems with a line number.
            return Ok(SquadShape::RowLines);
        };
        let trimmed = line.trim_start_matches('\u{feff}').trim();
        if !trimmed.is_empty() {
            first = trimmed.to_string();
            break;
        }
    }
    if first.starts_with('[') {
        return Ok(SquadShape::RowArray);
    }
    if first == "{" {
        return Ok(SquadShape::Nested);
    }
    match serde_json::from_str::<serde_json::Value>(&first) {
        Ok(value) if value.get("data").is_some() => Ok(SquadShape::Nested),
        Ok(_) => Ok(SquadShape::RowLines),
        Err(_) => {
            let head: String = first.chars().take(200).collect();
            if head.contains("\"data\"") || head.contains("\"version\"") {
                Ok(SquadShape::Nested)
            } else {
                Ok(SquadShape::RowLines)
            }
        }
    }
}

/// SQuAD offsets count characters (Python `str` indices), not bytes.
fn answer_at(context: &str, start: usize, text: &str) -> bool {
    let mut chars = context.chars().skip(start);
    text.chars().all(|c| chars.next() == Some(c))
}

fn squad_example(id: String, question: String, texts: Vec<String>, impossible: bool) -> Example {
    let gold = if impossible { Vec::new() } else { texts };
    // An empty target teaches the model to answer nothing, which is what
    // SQuAD v2 scoring counts as right for an unanswerable question.
    let target = gold.first().cloned().unwrap_or_default();
    Example {
        id,
        task: Task::Squad,
        instruction: question,
        input: None,
        target,
        gold,
    }
}

fn load_squad(path: &Path) -> Result<Vec<Example>, DataError> {
    match squad_shape(path)? {
        SquadShape::Nested => load_squad_nested(path),
        SquadShape::RowArray => {
            let text = read_document(path, SQUAD_ROW_EXPECTED)?;
            let rows: Vec<SquadRow> = parse_document(path, &text, SQUAD_ROW_EXPECTED)?;
            let lines = object_lines(&text, 1);
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.into_iter().enumerate() {
                out.push(squad_row_example(path, line_of(&lines, i), row, i)?);
            }
            Ok(out)
        }
        SquadShape::RowLines => {
            let mut out = Vec::new();
            for_each_line(path, SQUAD_ROW_EXPECTED, |line_no, line| {
                let row: SquadRow = parse_line(path, line_no, line, SQUAD_ROW_EXPECTED)?;
                let ex = squad_row_example(path, line_no, row, out.len())?;
                out.push(ex);
                Ok(())
            })?;
            Ok(out)
        }
    }
}

fn squad_row_example(
    path: &Path,
    line: usize,
    row: SquadRow,
    index: usize,
) -> Result<Example, DataError> {
    let FlatAnswers { text, answer_start } = row.answers;
    if text.len() != answer_start.len() {
        return Err(record_error(
            path,
            line,
            SQUAD_ROW_EXPECTED,
            format!(
                "{} answer texts but {} answer_start offsets",
                text.len(),
                answer_start.len()
            ),
        ));
    }
    if let Some(context) = &row.context {
        for (t, &start) in text.iter().zip(&answer_start) {
            if !answer_at(context, start, t) {
                return Err(record_error(
                    path,
                    line,
                    SQUAD_ROW_EXPECTED,
                    format!("answer_start {start} does not point at {t:?} in the context"),
                ));
            }
        }
    }
    let id = row
        .id
        .map(Id::into_string)
        .unwrap_or_else(|| positional_id(Task::Squad, index));
    let impossible = row.is_impossible || text.is_empty();
    Ok(squad_example(id, row.question, text, impossible))
}

fn load_squad_nested(path: &Path) -> Result<Vec<Example>, DataError> {
    let text = read_document(path, SQUAD_DOC_EXPECTED)?;
    let doc: SquadDoc = parse_document(path, &text, SQUAD_DOC_EXPECTED)?;
    // root{ data[ article{ paragraphs[ paragraph{ qas[ qa{ answers[ answer{
    let answer_lines = object_lines(&text, 8);
    let mut answer_index = 0;
    let mut out = Vec::new();
    for paragraph in doc.data.into_iter().flat_map(|a| a.paragraphs) {
        for qa in paragraph.qas {
            let mut texts = Vec::with_capacity(qa.answers.len());
            for answer in qa.answers {
                if !answer_at(&paragraph.context, answer.answer_start, &answer.text) {
                    return Err(record_error(
                        path,
                        line_of(&answer_lines, answer_index),
                        SQUAD_DOC_EXPECTED,
                        format!(
                            "answer_start {} does not point at {:?} in the context of question {:?}",
                            answer.answer_start,
                            answer.text,
                            qa.id.into_string()
                        ),
                    ));
                }
                answer_index += 1;
                texts.push(answer.text);
            }
            let impossible = qa.is_impossible || texts.is_empty();
            out.push(squad_example(
                qa.id.into_string(),
                qa.question,
                texts,
                impossible,
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- GSM8K

#[derive(Deserialize)]
struct Gsm8kRow {
    #[serde(default)]
    id: Option<Id>,
    question: String,
    answer: String,
}

fn load_gsm8k(path: &Path) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::new();
    for_each_line(path, GSM8K_EXPECTED, |line_no, line| {
        let row: Gsm8kRow = parse_line(path, line_no, line, GSM8K_EXPECTED)?;
        let Some(number) = gsm8k_number(&row.answer) else {
            return Err(record_error(
                path,
                line_no,
                GSM8K_EXPECTED,
                "`answer` has no \"#### N\" line",
            ));
        };
        let id = row
            .id
            .map(Id::into_string)
            .unwrap_or_else(|| positional_id(Task::Gsm8k, out.len()));
        out.push(Example {
            id,
            task: Task::Gsm8k,
            instruction: row.question,
            input: None,
            target: row.answer,
            gold: vec![number],
        });
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------- MetaMathQA

#[derive(Deserialize)]
struct MetaMathRow {
    #[serde(default)]
    id: Option<Id>,
    query: String,
    response: String,
}

fn load_metamath(path: &Path) -> Result<Vec<Example>, DataError> {
    let text = read_document(path, METAMATH_EXPECTED)?;
    let rows: Vec<MetaMathRow> = parse_document(path, &text, METAMATH_EXPECTED)?;
    let lines = object_lines(&text, 1);
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let Some(number) = metamath_answer(&row.response) else {
            return Err(record_error(
                path,
                line_of(&lines, i),
                METAMATH_EXPECTED,
                "`response` has no \"The answer is: N\"",
            ));
        };
        let id = row
            .id
            .map(Id::into_string)
            .unwrap_or_else(|| positional_id(Task::MetaMath, i));
        out.push(Example {
            id,
            task: Task::MetaMath,
            instruction: row.query,
            input: None,
            target: row.response,
            gold: vec![number],
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- ToolBench

#[derive(Deserialize)]
struct ToolQuery {
    query: String,
    query_id: Id,
    api_list: Vec<ToolApi>,
    #[serde(rename = "relevant APIs")]
    relevant: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct ToolApi {
    category_name: String,
    tool_name: String,
    api_name: String,
    #[serde(default)]
    api_description: String,
}

fn load_toolbench(path: &Path) -> Result<Vec<Example>, DataError> {
    let text = read_document(path, TOOLBENCH_EXPECTED)?;
    let rows: Vec<ToolQuery> = parse_document(path, &text, TOOLBENCH_EXPECTED)?;
    let lines = object_lines(&text, 1);
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let line = line_of(&lines, i);
        let mut blocks = Vec::with_capacity(row.relevant.len());
        for pair in &row.relevant {
            let [tool, api] = pair.as_slice() else {
                return Err(record_error(
                    path,
                    line,
                    TOOLBENCH_EXPECTED,
                    format!("\"relevant APIs\" entry {pair:?} is not a [tool, api] pair"),
                ));
            };
            let Some(found) = row
                .api_list
                .iter()
                .find(|a| &a.tool_name == tool && &a.api_name == api)
            else {
                return Err(record_error(
                    path,
                    line,
                    TOOLBENCH_EXPECTED,
                    format!("relevant API [{tool:?}, {api:?}] is not in \"api_list\""),
                ));
            };
            blocks.push(api_block(
                &found.tool_name,
                &found.api_name,
                &found.category_name,
                &found.api_description,
            ));
        }
        if blocks.is_empty() {
            return Err(record_error(
                path,
                line,
                TOOLBENCH_EXPECTED,
                "\"relevant APIs\" is empty",
            ));
        }
        out.push(Example {
            id: row.query_id.into_string(),
            task: Task::ToolBench,
            instruction: row.query,
            input: None,
            target: blocks.join("\n\n"),
            gold: blocks,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
            path
        }
    }

    fn load_ok(task: Task, path: &Path) -> Vec<Example> {
        load(task, path).unwrap_or_else(|e| panic!("load failed: {e}"))
    }

    fn load_err(task: Task, path: &Path) -> String {
        match load(task, path) {
            Ok(v) => panic!("expected an error, loaded {} records", v.len()),
            Err(e) => e.to_string(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nq_open_without_long_answers() {
        let fx = Fixture::new();
        let path = fx.write(
            "nq.jsonl",
            concat!(
                r#"{"question": "who completed the veltrano lighthouse", "answer": ["Odile Marsk", "the engineer Odile Marsk"]}"#,
                "\n\n",
                r#"{"question": "what year did tova renn leave", "answer": ["1871"]}"#,
                "\n"
            ),
        );
        let ex = load_ok(Task::Nq, &path);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].id, "nq-0");
        assert_eq!(ex[1].id, "nq-1");
        assert_eq!(ex[0].instruction, "who completed the veltrano lighthouse");
        assert_eq!(ex[0].target, "Odile Marsk");
        assert_eq!(
            ex[0].gold,
            strings(&["Odile Marsk", "the engineer Odile Marsk"])
        );
        assert_eq!(ex[0].input, None);
    }

    #[test]
    fn nq_with_long_and_short_answers() {
        let fx = Fixture::new();
        let path = fx.write(
            "nq_long.jsonl",
            concat!(
                r#"{"question": "who completed the veltrano lighthouse", "answer": ["Odile Marsk"], "#,
                r#""long_answers": ["The lighthouse was completed in 1871.", "Its engineer was Odile Marsk."], "#,
                r#""short_answers": ["Odile Marsk", "Marsk"]}"#,
                "\n"
            ),
        );
        let ex = load_ok(Task::Nq, &path);
        assert_eq!(
            ex[0].target,
            "The lighthouse was completed in 1871. Its engineer was Odile Marsk."
        );
        assert_eq!(ex[0].gold, strings(&["Odile Marsk", "Marsk"]));
    }

    #[test]
    fn truncated_jsonl_line_names_file_and_line() {
        let fx = Fixture::new();
        let path = fx.write(
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
        let fx = Fixture::new();
        let path = fx.write(
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
        let fx = Fixture::new();
        let path = fx.write("empty.jsonl", "\n  \n");
        let expected = format!(
            "{}: empty file, expected a JSON object with \"question\" (string) and \"answer\" (array of strings)",
            path.display()
        );
        assert_eq!(load_err(Task::Nq, &path), expected);
        let json = fx.write("empty.json", "");
        assert!(load_err(Task::MetaMath, &json).contains(": empty file, expected a JSON array"));
        assert!(load_err(Task::Squad, &json).contains(": empty file, expected"));
    }

    const SQUAD_V1: &str = r#"{
  "version": "1.1",
  "data": [
    {
      "title": "Veltrano",
      "paragraphs": [
        {
          "context": "The Veltrano lighthouse was completed in 1871 by the engineer Odile Marsk.",
          "qas": [
            {
              "id": "q1",
              "question": "Who completed the Veltrano lighthouse?",
              "answers": [
                {"text": "Odile Marsk", "answer_start": 62},
                {"text": "the engineer Odile Marsk", "answer_start": 49}
              ]
            },
            {
              "id": "q2",
              "question": "When was the Veltrano lighthouse completed?",
              "answers": [{"text": "1871", "answer_start": 41}]
            }
          ]
        }
      ]
    }
  ]
}"#;

    #[test]
    fn squad_v1_nested_is_closed_book() {
        let fx = Fixture::new();
        let path = fx.write("dev-v1.1.json", SQUAD_V1);
        let ex = load_ok(Task::Squad, &path);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].id, "q1");
        assert_eq!(ex[0].instruction, "Who completed the Veltrano lighthouse?");
        assert_eq!(ex[0].input, None);
        assert_eq!(ex[0].target, "Odile Marsk");
        assert_eq!(
            ex[0].gold,
            strings(&["Odile Marsk", "the engineer Odile Marsk"])
        );
        assert_eq!(ex[1].gold, strings(&["1871"]));

        // The same document on one line, as the official files ship.
        let compact: serde_json::Value =
            serde_json::from_str(SQUAD_V1).unwrap_or_else(|e| panic!("{e}"));
        let one_line = fx.write("one-line.json", &compact.to_string());
        assert_eq!(load_ok(Task::Squad, &one_line), ex);
    }

    #[test]
    fn squad_v2_unanswerable_has_no_gold() {
        let fx = Fixture::new();
        let text = r#"{"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Tova Renn plays the fennhorn.", "qas": [
 {"id": "a1", "question": "What does Tova Renn play?", "answers": [{"text": "fennhorn", "answer_start": 20}], "is_impossible": false},
 {"id": "a2", "question": "What does Ilo Brack play?", "answers": [], "plausible_answers": [{"text": "fennhorn", "answer_start": 20}], "is_impossible": true}
]}]}]}"#;
        let path = fx.write("dev-v2.0.json", text);
        let ex = load_ok(Task::Squad, &path);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].gold, strings(&["fennhorn"]));
        assert!(ex[1].gold.is_empty());
        assert_eq!(ex[1].target, "");
    }

    #[test]
    fn squad_answer_start_must_point_at_its_text() {
        let fx = Fixture::new();
        let bad = SQUAD_V1.replace("\"answer_start\": 41", "\"answer_start\": 40");
        let path = fx.write("bad.json", &bad);
        let err = load_err(Task::Squad, &path);
        // the third answer object opens on line 21
        assert!(
            err.starts_with(&format!("{}:21: expected a SQuAD", path.display())),
            "{err}"
        );
        assert!(
            err.contains("answer_start 40 does not point at \"1871\""),
            "{err}"
        );
    }

    #[test]
    fn squad_non_integer_answer_start_names_the_line() {
        let fx = Fixture::new();
        let bad = SQUAD_V1.replace("\"answer_start\": 41", "\"answer_start\": 41.5");
        let path = fx.write("bad.json", &bad);
        let err = load_err(Task::Squad, &path);
        assert!(
            err.starts_with(&format!("{}:21: expected", path.display())),
            "{err}"
        );
        assert!(err.contains("invalid type: floating point `41.5`"), "{err}");

        let row = fx.write(
            "rows.jsonl",
            concat!(
                r#"{"id": "r1", "question": "q", "answers": {"text": ["x"], "answer_start": [0]}}"#,
                "\n",
                r#"{"id": "r2", "question": "q", "answers": {"text": ["x"], "answer_start": ["zero"]}}"#,
                "\n"
            ),
        );
        let err = load_err(Task::Squad, &row);
        assert!(
            err.starts_with(&format!(
                "{}:2: expected a JSON object with \"id\"",
                row.display()
            )),
            "{err}"
        );
        assert!(err.contains("invalid type: string \"zero\""), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn squad_flattened_rows_as_jsonl_and_array() {
        let fx = Fixture::new();
        let rows = [
            r#"{"id": "f1", "title": "T", "context": "Tova Renn plays the fennhorn.", "question": "What does Tova Renn play?", "answers": {"text": ["fennhorn", "the fennhorn"], "answer_start": [20, 16]}}"#,
            r#"{"id": "f2", "title": "T", "context": "Tova Renn plays the fennhorn.", "question": "What does Ilo Brack play?", "answers": {"text": [], "answer_start": []}}"#,
        ];
        let jsonl = fx.write("rows.jsonl", &format!("{}\n{}\n", rows[0], rows[1]));
        let array = fx.write("rows.json", &format!("[\n{},\n{}\n]", rows[0], rows[1]));
        for path in [jsonl, array] {
            let ex = load_ok(Task::Squad, &path);
            assert_eq!(ex.len(), 2);
            assert_eq!(ex[0].id, "f1");
            assert_eq!(ex[0].gold, strings(&["fennhorn", "the fennhorn"]));
            assert_eq!(ex[0].target, "fennhorn");
            assert!(ex[1].gold.is_empty());
        }
    }

    #[test]
    fn gsm8k_gold_is_the_number_after_hashes() {
        let fx = Fixture::new();
        let path = fx.write(
            "gsm8k.jsonl",
            concat!(
                r#"{"question": "Brisa bakes 4 trays of 18 rolls and sells 36. How many are left?", "answer": "4 * 18 = <<4*18=72>>72 rolls.\n72 - 36 = <<72-36=36>>36\n#### 36"}"#,
                "\n"
            ),
        );
        let ex = load_ok(Task::Gsm8k, &path);
        assert_eq!(ex[0].gold, strings(&["36"]));
        assert_eq!(ex[0].id, "gsm8k-0");
        assert!(ex[0].target.ends_with("#### 36"));
    }

    #[test]
    fn metamath_array_loads_and_reports_bad_records_by_line() {
        let fx = Fixture::new();
        let good = r#"[
  {"query": "What is 3 * 4?", "response": "3 * 4 = 12\n#### 12\nThe answer is: 12", "type": "GSM_AnsAug"},
  {"query": "What is 1000 + 250?", "response": "1000 + 250 = 1250.\nThe answer is: 1250", "type": "GSM_Rephrased"}
]"#;
        let path = fx.write("metamath.json", good);
        let ex = load_ok(Task::MetaMath, &path);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].gold, strings(&["1250"]));
        assert_eq!(ex[1].instruction, "What is 1000 + 250?");

        let bad = good.replace("The answer is: 1250", "So 1250.");
        let path = fx.write("bad.json", &bad);
        let err = load_err(Task::MetaMath, &path);
        assert!(
            err.starts_with(&format!("{}:3: expected a JSON array", path.display())),
            "{err}"
        );
    }

    #[test]
    fn toolbench_target_is_one_block_per_relevant_api() {
        let fx = Fixture::new();
        let text = r#"[{"query": "Will it rain in Velmorhold, and when is high tide?", "query_id": 88,
  "api_list": [
    {"category_name": "Weather", "tool_name": "Skyloom", "api_name": "Forecast", "api_description": "Daily forecast, by town.", "required_parameters": [], "optional_parameters": [], "method": "GET"},
    {"category_name": "Travel", "tool_name": "Tidemark", "api_name": "TideTable", "api_description": "Tide times."},
    {"category_name": "Weather", "tool_name": "Pebblecast", "api_name": "Alerts", "api_description": "Storm alerts."}
  ],
  "relevant APIs": [["Skyloom", "Forecast"], ["Tidemark", "TideTable"]]}]"#;
        let path = fx.write("toolbench.json", text);
        let ex = load_ok(Task::ToolBench, &path);
        assert_eq!(ex[0].id, "88");
        assert_eq!(
            ex[0].target,
            "API MAIN INFO: Skyloom, Forecast, Weather, Daily forecast, by town.\n\nAPI MAIN INFO: Tidemark, TideTable, Travel, Tide times."
        );
        assert_eq!(ex[0].gold.len(), 2);

        let bad = text.replace(r#"["Tidemark", "TideTable"]"#, r#"["Tidemark", "Nope"]"#);
        let path = fx.write("bad.json", &bad);
        let err = load_err(Task::ToolBench, &path);
        assert!(
            err.starts_with(&format!("{}:1: expected", path.display())),
            "{err}"
        );
        assert!(
            err.ends_with(r#"relevant API ["Tidemark", "Nope"] is not in "api_list""#),
            "{err}"
        );
    }

    #[test]
    fn object_lines_skip_braces_inside_strings() {
        let text = "[\n{\"a\": \"{[\\\"}\"},\n\n{\"b\": {\"c\": 1}}\n]";
        assert_eq!(object_lines(text, 1), vec![2, 4]);
        assert_eq!(object_lines(text, 2), vec![4]);
    }
}
