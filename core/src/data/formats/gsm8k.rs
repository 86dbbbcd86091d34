//! GSM8K: JSONL rows of a word problem and its worked solution, which ends
//! with the final number on a `#### N` line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{closed_book, for_each_record, record_error, record_id, write_jsonl, Id};
use crate::data::answer::gsm8k_number;
use crate::data::{DataError, Example, Task};

pub(super) const EXPECTED: &str =
    "a JSON object with \"question\" (string) and \"answer\" (string ending in \"#### N\")";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Gsm8kRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub question: String,
    pub answer: String,
}

pub(super) fn load(path: &Path) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::new();
    for_each_record(path, EXPECTED, |line_no, row: Gsm8kRow| {
        let Some(number) = gsm8k_number(&row.answer) else {
            return Err(record_error(
                path,
                line_no,
                EXPECTED,
                "`answer` has no \"#### N\" line",
            ));
        };
        let id = record_id(row.id, Task::Gsm8k, out.len());
        out.push(closed_book(
            id,
            Task::Gsm8k,
            row.question,
            row.answer,
            vec![number],
        ));
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn write(path: &Path, rows: &[Gsm8kRow]) -> Result<(), DataError> {
    write_jsonl(path, rows)
}

#[cfg(test)]
mod tests {
    use crate::data::formats::fixture::{load_ok, strings, Files};
    use crate::data::Task;

    #[test]
    fn gsm8k_gold_is_the_number_after_hashes() {
        let (_fx, path) = Files::with(
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
}
