//! OpenAI-style chat records: JSONL, one conversation per line, its
//! `messages` a list of `role` / `content` turns (`system`, `user`,
//! `assistant`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    conversation, conversation_example, for_each_mapped, record_id, write_jsonl, Id, Mapping, Tags,
};
use crate::data::chat::Message;
use crate::data::{Columns, DataError, Example, Task};

pub(super) const EXPECTED: &str = r#"a JSON object with "messages" (array of {"role": "system" | "user" | "assistant", "content": string})"#;

/// A row as read: its turns kept as JSON until the user's tags pick their
/// fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RowIn {
    #[serde(default)]
    id: Option<Id>,
    messages: Vec<serde_json::Value>,
}

/// A row as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MessagesRow {
    pub messages: Vec<Message>,
}

/// Calls `each` with every record, in file order, one at a time.
pub(super) fn for_each(
    path: &Path,
    columns: &Columns,
    each: &mut dyn FnMut(Example) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mapping = [Mapping::required("messages", "messages", &columns.messages)];
    let name = |t: &Option<String>, default: &str| t.clone().unwrap_or_else(|| default.into());
    let tags = Tags {
        role: name(&columns.role_tag, "role"),
        content: name(&columns.content_tag, "content"),
        user: vec![name(&columns.user_tag, "user")],
        assistant: vec![name(&columns.assistant_tag, "assistant")],
        system: name(&columns.system_tag, "system"),
    };
    let mut n = 0;
    for_each_mapped(path, EXPECTED, &mapping, |line, row: RowIn| {
        let messages = conversation(path, line, EXPECTED, &row.messages, &tags, None)?;
        let id = record_id(row.id, Task::Messages, n);
        n += 1;
        each(conversation_example(id, Task::Messages, line, messages))
    })
}

pub(crate) fn write(path: &Path, rows: &[MessagesRow]) -> Result<(), DataError> {
    write_jsonl(path, rows)
}
