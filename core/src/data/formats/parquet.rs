//! Parquet files, as Hugging Face datasets sit on disk: read one row group
//! at a time, each row handed on as the JSON object it would be in a JSONL
//! file (lists as arrays, structs as objects), so every format reads Parquet
//! through the same record types as its JSON files.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use super::record_error;
use crate::data::DataError;

/// Whether `path` names a Parquet file (by its extension).
pub(crate) fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

fn open(path: &Path, expected: &str) -> Result<SerializedFileReader<File>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    SerializedFileReader::new(file).map_err(|e| {
        record_error(
            path,
            1,
            expected,
            format!("not a readable Parquet file: {e}"),
        )
    })
}

/// Calls `each` with (1-based row, row as JSON) for every row, one row group
/// in memory at a time. `required` columns are checked against the schema
/// first, so a file of the wrong shape is refused before any row is read.
pub(crate) fn for_each_row(
    path: &Path,
    expected: &str,
    required: &[(String, String)],
    mut each: impl FnMut(usize, Value) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let reader = open(path, expected)?;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    if let Some((field, missing)) = required.iter().find(|(_, c)| !names.contains(c)) {
        return Err(DataError::Setting(format!(
            "{}: the Parquet schema has no column {missing:?} ({field}); its columns are: {}",
            path.display(),
            names.join(", ")
        )));
    }
    let mut row_no = 0;
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| record_error(path, row_no + 1, expected, e.to_string()))?;
        let rows = group
            .get_row_iter(None)
            .map_err(|e| record_error(path, row_no + 1, expected, e.to_string()))?;
        for row in rows {
            row_no += 1;
            let row = row.map_err(|e| record_error(path, row_no, expected, e.to_string()))?;
            each(row_no, row.to_json_value())?;
        }
    }
    if row_no == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}
