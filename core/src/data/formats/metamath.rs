//! MetaMathQA: one JSON array of queries and responses, each response
//! ending with `The answer is: N`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{closed_book, read_array, record_error, record_id, write_json, Id};
use crate::data::answer::metamath_answer;
use crate::data::{DataError, Example, Task};

pub(super) const EXPECTED: &str = r#"a JSON array of {"query", "response", "type"} objects whose responses end with "The answer is: N""#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetaMathRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub query: String,
    pub response: String,
    /// Where MetaMathQA got the question (`GSM_AnsAug`, …); written for the
    /// shape of the real file, ignored on reading whatever it holds.
    #[serde(rename = "type", skip_deserializing)]
    pub kind: String,
}

pub(super) fn load(path: &Path) -> Result<Vec<Example>, DataError> {
    let rows: Vec<(usize, MetaMathRow)> = read_array(path, EXPECTED)?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, (line, row)) in rows.into_iter().enumerate() {
        let Some(number) = metamath_answer(&row.response) else {
            return Err(record_error(
                path,
                line,
                EXPECTED,
                "`response` has no \"The answer is: N\"",
            ));
        };
        let id = record_id(row.id, Task::MetaMath, i);
        out.push(closed_book(
            id,
            Task::MetaMath,
            row.query,
            row.response,
            vec![number],
        ));
    }
    Ok(out)
}

pub(crate) fn write(path: &Path, rows: &[MetaMathRow]) -> Result<(), DataError> {
    write_json(path, rows)
}

#[cfg(test)]
mod tests {
    use crate::data::formats::fixture::{load_err, load_ok, strings, Files};
    use crate::data::Task;

    #[test]
    fn metamath_array_loads_and_reports_bad_records_by_line() {
        let fx = Files::new();
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
}
