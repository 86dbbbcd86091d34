//! NQ-open: JSONL rows of a question and its short answers, optionally with
//! the long-answer passage and short answers of the full Natural Questions.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{closed_book, for_each_record, record_error, record_id, write_jsonl, Id};
use crate::data::{DataError, Example, Task};

pub(super) const EXPECTED: &str =
    r#"a JSON object with "question" (string) and "answer" (array of strings)"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NqRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_answers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_answers: Option<Vec<String>>,
}

impl NqRow {
    /// A row as NQ-open ships it: no id, no passage.
    pub(crate) fn open(question: String, answer: Vec<String>) -> Self {
        NqRow {
            id: None,
            question,
            answer: Some(answer),
            long_answers: None,
            short_answers: None,
        }
    }
}

pub(super) fn load(path: &Path) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::new();
    for_each_record(path, EXPECTED, |line_no, row: NqRow| {
        let short = row.short_answers.filter(|s| !s.is_empty());
        let gold = match (short, row.answer) {
            (Some(short), _) => short,
            (None, Some(answer)) => answer,
            (None, None) => {
                return Err(record_error(
                    path,
                    line_no,
                    EXPECTED,
                    "missing field `answer`",
                ))
            }
        };
        let Some(first) = gold.first().cloned() else {
            return Err(record_error(path, line_no, EXPECTED, "`answer` is empty"));
        };
        // The paper trained on the long-answer passage and scored on the
        // short answers; without a passage the first answer is the target.
        let target = match row.long_answers.filter(|l| !l.is_empty()) {
            Some(long) => long.join(" "),
            None => first,
        };
        let id = record_id(row.id, Task::Nq, out.len());
        out.push(closed_book(id, Task::Nq, row.question, target, gold));
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn write(path: &Path, rows: &[NqRow]) -> Result<(), DataError> {
    write_jsonl(path, rows)
}

#[cfg(test)]
mod tests {
    use crate::data::formats::fixture::{load_ok, strings, Files};
    use crate::data::Task;

    #[test]
    fn nq_open_without_long_answers() {
        let (_fx, path) = Files::with(
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
        let (_fx, path) = Files::with(
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
}
