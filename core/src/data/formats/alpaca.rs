//! Alpaca: instruction records, a JSON array (as `alpaca_data.json`) or
//! JSONL, each an instruction, an optional input, the output, and
//! optionally a system message and earlier `[user, assistant]` turns (as
//! LLaMA-Factory reads them).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{for_each_mapped, record_id, write_json, Id, Mapping};
use crate::data::chat::{Message, Role};
use crate::data::prompt::user_text;
use crate::data::{Columns, DataError, Example, Task};

pub(super) const EXPECTED: &str = r#"a JSON object with "instruction" and "output" (strings), optionally "input", "system" (strings) and "history" (array of [user, assistant] pairs)"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AlpacaRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub instruction: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<(String, String)>>,
}

/// Calls `each` with every record, in file order, one at a time.
pub(super) fn for_each(
    path: &Path,
    columns: &Columns,
    each: &mut dyn FnMut(Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mapping = [
        Mapping::required("prompt", "instruction", &columns.prompt),
        Mapping::optional("query", "input", &columns.query),
        Mapping::required("response", "output", &columns.response),
        Mapping::optional("system", "system", &columns.system),
        Mapping::optional("history", "history", &columns.history),
    ];
    let mut n = 0;
    for_each_mapped(path, EXPECTED, &mapping, |line, row: AlpacaRow| {
        let id = record_id(row.id, Task::Alpaca, n);
        let input = row.input.filter(|i| !i.is_empty());
        let system = row.system.filter(|s| !s.is_empty());
        let history = row.history.unwrap_or_default();
        // Only a record with more than its own question needs the whole
        // conversation kept.
        let messages = if system.is_some() || !history.is_empty() {
            let mut m: Vec<Message> = system
                .map(|s| Message::new(Role::System, s))
                .into_iter()
                .collect();
            for (user, assistant) in history {
                m.push(Message::new(Role::User, user));
                m.push(Message::new(Role::Assistant, assistant));
            }
            m.push(Message::new(
                Role::User,
                user_text(&row.instruction, input.as_deref()),
            ));
            m.push(Message::new(Role::Assistant, row.output.clone()));
            m
        } else {
            Vec::new()
        };
        n += 1;
        each(Example {
            id,
            task: Task::Alpaca,
            instruction: row.instruction,
            input,
            gold: vec![row.output.clone()],
            target: row.output,
            messages,
            line,
        })
    })
}

pub(crate) fn write(path: &Path, rows: &[AlpacaRow]) -> Result<(), DataError> {
    write_json(path, rows)
}
