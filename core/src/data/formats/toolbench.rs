//! ToolBench query files: one JSON array of queries, each with the APIs on
//! offer and the relevant ones; the target names each relevant API in an
//! answer block (`crate::data::answer::api_block`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{closed_book, read_array, record_error, write_json, Id};
use crate::data::answer::api_block;
use crate::data::{DataError, Example, Task};

pub(super) const EXPECTED: &str =
    r#"a JSON array of {"query", "query_id", "api_list", "relevant APIs"} objects"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ToolQuery {
    pub query: String,
    pub query_id: Id,
    pub api_list: Vec<ToolApi>,
    /// `[tool, api]` pairs.
    #[serde(rename = "relevant APIs")]
    pub relevant: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ToolApi {
    pub category_name: String,
    pub tool_name: String,
    pub api_name: String,
    #[serde(default)]
    pub api_description: String,
    // Written for the shape of real query files; the loader ignores them
    // whatever they hold.
    #[serde(skip_deserializing)]
    pub required_parameters: Vec<ToolParam>,
    #[serde(skip_deserializing)]
    pub optional_parameters: Vec<ToolParam>,
    #[serde(skip_deserializing)]
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ToolParam {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub default: String,
}

pub(super) fn load(path: &Path) -> Result<Vec<Example>, DataError> {
    let rows: Vec<(usize, ToolQuery)> = read_array(path, EXPECTED)?;
    let mut out = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let mut blocks = Vec::with_capacity(row.relevant.len());
        for pair in &row.relevant {
            let [tool, api] = pair.as_slice() else {
                return Err(record_error(
                    path,
                    line,
                    EXPECTED,
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
                    EXPECTED,
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
                EXPECTED,
                "\"relevant APIs\" is empty",
            ));
        }
        let target = blocks.join("\n\n");
        out.push(closed_book(
            row.query_id.into_string(),
            Task::ToolBench,
            row.query,
            target,
            blocks,
        ));
    }
    Ok(out)
}

pub(crate) fn write(path: &Path, rows: &[ToolQuery]) -> Result<(), DataError> {
    write_json(path, rows)
}

#[cfg(test)]
mod tests {
    use crate::data::formats::fixture::{load_err, load_ok, Files};
    use crate::data::Task;

    #[test]
    fn toolbench_target_is_one_block_per_relevant_api() {
        let fx = Files::new();
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
}
