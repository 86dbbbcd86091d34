//! ShareGPT: conversations of `from` / `value` turns (`human`, `gpt`,
//! `system`), optionally a `system` field beside them; a JSON array or
//! JSONL.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    conversation, conversation_example, for_each_mapped, record_id, write_json, Id, Mapping, Tags,
};
use crate::data::{Columns, DataError, Example, Task};

pub(super) const EXPECTED: &str = r#"a JSON object with "conversations" (array of {"from": "human" | "gpt" | "system", "value": string}), optionally "system" (string)"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Turn {
    pub from: String,
    pub value: String,
}

/// A row as read: its turns kept as JSON until the user's tags pick their
/// fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RowIn {
    #[serde(default)]
    id: Option<Id>,
    conversations: Vec<serde_json::Value>,
    #[serde(default)]
    system: Option<String>,
}

/// A row as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ShareGptRow {
    pub conversations: Vec<Turn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// Calls `each` with every record, in file order, one at a time.
pub(super) fn for_each(
    path: &Path,
    columns: &Columns,
    each: &mut dyn FnMut(Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mapping = [
        Mapping::required("messages", "conversations", &columns.messages),
        Mapping::optional("system", "system", &columns.system),
    ];
    let tag = |t: &Option<String>, default: &[&str]| -> Vec<String> {
        match t {
            Some(t) => vec![t.clone()],
            None => default.iter().map(|s| s.to_string()).collect(),
        }
    };
    let tags = Tags {
        role: columns.role_tag.clone().unwrap_or_else(|| "from".into()),
        content: columns
            .content_tag
            .clone()
            .unwrap_or_else(|| "value".into()),
        user: tag(&columns.user_tag, &["human", "user"]),
        assistant: tag(&columns.assistant_tag, &["gpt", "assistant"]),
        system: columns
            .system_tag
            .clone()
            .unwrap_or_else(|| "system".into()),
    };
    let mut n = 0;
    for_each_mapped(path, EXPECTED, &mapping, |line, row: RowIn| {
        let messages = conversation(path, line, EXPECTED, &row.conversations, &tags, row.system)?;
        let id = record_id(row.id, Task::ShareGpt, n);
        n += 1;
        each(conversation_example(id, Task::ShareGpt, line, messages))
    })
}

pub(crate) fn write(path: &Path, rows: &[ShareGptRow]) -> Result<(), DataError> {
    write_json(path, rows)
}
