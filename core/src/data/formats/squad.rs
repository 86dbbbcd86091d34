//! SQuAD v1.1 and v2.0: the official nested document (read and written),
//! and the flattened rows of Hugging Face exports, as JSONL or as one array
//! (read only). Questions are asked closed book: the context only checks
//! that each `answer_start` points at its answer.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    closed_book, for_each_record, line_of, object_lines, parse_document, present, read_array,
    read_document, record_error, record_id, write_json, Id,
};
use crate::data::{DataError, Example, Task};

pub(super) const DOC_EXPECTED: &str = r#"a SQuAD JSON object {"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}"#;
const ROW_EXPECTED: &str = r#"a JSON object with "id", "question" and "answers" {"text": [strings], "answer_start": [integers]}"#;

// Fields marked `skip_deserializing` are written for the shape of the
// official files; the loader ignores them whatever they hold, as it always
// has.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SquadDoc {
    #[serde(skip_deserializing)]
    pub version: String,
    pub data: Vec<SquadArticle>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SquadArticle {
    #[serde(skip_deserializing)]
    pub title: String,
    pub paragraphs: Vec<SquadParagraph>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SquadParagraph {
    pub context: String,
    pub qas: Vec<SquadQa>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SquadQa {
    pub id: Id,
    pub question: String,
    #[serde(default)]
    pub answers: Vec<SquadAnswer>,
    /// v2.0 only; a missing flag means answerable.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_impossible: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SquadAnswer {
    pub text: String,
    pub answer_start: usize,
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
    // Hugging Face's SQuAD Parquet holds the flattened rows.
    if super::parquet::is_parquet(path) {
        return Ok(SquadShape::RowLines);
    }
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
    closed_book(id, Task::Squad, question, target, gold)
}

pub(super) fn load(path: &Path) -> Result<Vec<Example>, DataError> {
    match squad_shape(path)? {
        SquadShape::Nested => load_squad_nested(path),
        SquadShape::RowArray => read_array(path, ROW_EXPECTED)?
            .into_iter()
            .enumerate()
            .map(|(i, (line, row))| squad_row_example(path, line, row, i))
            .collect(),
        SquadShape::RowLines => {
            let mut out = Vec::new();
            for_each_record(path, ROW_EXPECTED, |line_no, row| {
                out.push(squad_row_example(path, line_no, row, out.len())?);
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
            ROW_EXPECTED,
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
                    ROW_EXPECTED,
                    format!("answer_start {start} does not point at {t:?} in the context"),
                ));
            }
        }
    }
    let id = record_id(row.id, Task::Squad, index);
    let impossible = row.is_impossible || text.is_empty();
    Ok(squad_example(id, row.question, text, impossible))
}

fn load_squad_nested(path: &Path) -> Result<Vec<Example>, DataError> {
    let text = read_document(path, DOC_EXPECTED)?;
    let doc: SquadDoc = parse_document(path, &text, DOC_EXPECTED)?;
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
                        DOC_EXPECTED,
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
            let impossible = qa.is_impossible.unwrap_or(false) || texts.is_empty();
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

pub(crate) fn write(path: &Path, doc: &SquadDoc) -> Result<(), DataError> {
    write_json(path, doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::formats::fixture::{load_err, load_ok, strings, Files};

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
        let (fx, path) = Files::with("dev-v1.1.json", SQUAD_V1);
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
        let fx = Files::new();
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
        let fx = Files::new();
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
        let fx = Files::new();
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
        let fx = Files::new();
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
    fn written_documents_load_back_and_unread_fields_stay_ignored() {
        let qa = |id: &str, question: &str, answers, impossible| SquadQa {
            id: Id::Text(id.to_string()),
            question: question.to_string(),
            answers,
            is_impossible: Some(impossible),
        };
        let answer = SquadAnswer {
            text: "fennhorn".to_string(),
            answer_start: 20,
        };
        let doc = SquadDoc {
            version: "v2.0".to_string(),
            data: vec![SquadArticle {
                title: "Tova Renn".to_string(),
                paragraphs: vec![SquadParagraph {
                    context: "Tova Renn plays the fennhorn.".to_string(),
                    qas: vec![
                        qa("a1", "What does Tova Renn play?", vec![answer], false),
                        qa("a2", "What does Ilo Brack play?", Vec::new(), true),
                    ],
                }],
            }],
        };
        let fx = Files::new();
        let path = fx.path("written.json");
        write(&path, &doc).unwrap_or_else(|e| panic!("{e}"));
        let ex = load_ok(Task::Squad, &path);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].gold, strings(&["fennhorn"]));
        assert!(ex[1].gold.is_empty());

        // The loader never read `version` or `title`, so any value loads.
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let odd = text
            .replace(r#""version": "v2.0""#, r#""version": 2"#)
            .replace(r#""title": "Tova Renn""#, r#""title": null"#);
        assert_ne!(odd, text);
        let odd = fx.write("odd.json", &odd);
        assert_eq!(load_ok(Task::Squad, &odd), ex);

        // A null flag is as wrong as it always was.
        let null = text.replacen(r#""is_impossible": false"#, r#""is_impossible": null"#, 1);
        let null = fx.write("null.json", &null);
        let err = load_err(Task::Squad, &null);
        assert!(
            err.ends_with("invalid type: null, expected a boolean"),
            "{err}"
        );
    }
}
