//! Scoring a predictions file against a gold file: reading predictions as
//! JSONL `{"id", "prediction"}` rows or as SQuAD's `{"qid": "text"}` map,
//! matching them to gold records by id, and averaging each metric of the task.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::metrics::Metric;
use crate::data::formats::{json_error, parse_line, Id};
use crate::data::{load, DataError, Example, Task};

const PREDICTIONS_EXPECTED: &str = r#"a JSON object with "id" and "prediction" (string) per line, or one {"id": "prediction text"} object"#;

/// Mean of each metric of a task over the scored records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReport {
    pub task: Task,
    pub n: usize,
    pub scores: BTreeMap<Metric, f64>,
}

impl ScoreReport {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.scores.get(&metric).copied()
    }
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .scores
            .keys()
            .map(|m| m.name().len())
            .max()
            .unwrap_or(0)
            .max("metric".len());
        writeln!(f, "{:<width$}  {:>8}", "metric", "mean")?;
        for (metric, mean) in &self.scores {
            writeln!(f, "{:<width$}  {:>8.4}", metric.name(), mean)?;
        }
        write!(f, "{} {} records", self.n, self.task)
    }
}

/// One prediction and the line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub line: usize,
    pub id: String,
    pub text: String,
}

#[derive(Deserialize)]
struct PredictionRow {
    id: Id,
    prediction: String,
}

/// Reads a predictions file in either shape. A first line that is a whole
/// object with `id` and `prediction` means JSONL rows; anything else is read
/// as one `{"id": "text"}` map.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, DataError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| DataError::io(path, e))?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            expected: PREDICTIONS_EXPECTED.to_string(),
        });
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let rows = matches!(
        serde_json::from_str::<serde_json::Value>(first),
        Ok(v) if v.get("id").is_some() && v.get("prediction").is_some()
    );
    if rows {
        read_rows(path, text)
    } else {
        read_map(path, text)
    }
}

fn read_rows(path: &Path, text: &str) -> Result<Vec<Prediction>, DataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row: PredictionRow = parse_line(path, i + 1, line, PREDICTIONS_EXPECTED)?;
        out.push(Prediction {
            line: i + 1,
            id: row.id.into_string(),
            text: row.prediction,
        });
    }
    Ok(out)
}

fn read_map(path: &Path, text: &str) -> Result<Vec<Prediction>, DataError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| json_error(path, 1, PREDICTIONS_EXPECTED, &e))?;
    Ok(map
        .into_iter()
        .map(|(id, prediction)| Prediction {
            line: key_line(text, &id),
            id,
            text: prediction,
        })
        .collect())
}

/// The line of a map key, found by its JSON spelling; parsed maps keep no
/// positions.
fn key_line(text: &str, id: &str) -> usize {
    let needle = serde_json::to_string(id).unwrap_or_default();
    match text.find(&needle) {
        Some(at) => 1 + text[..at].matches('\n').count(),
        None => 1,
    }
}

/// Scores every record of `gold_path` (read as `task`) against the
/// predictions in `pred_path`. Predictions are the extracted answers, scored
/// as written.
pub fn score(task: Task, gold_path: &Path, pred_path: &Path) -> Result<ScoreReport, DataError> {
    score_first(task, gold_path, pred_path, None)
}

/// As `score`, over only the first `limit` gold records (the paper scored
/// the first 501 test rows, 451 for ToolBench).
pub fn score_first(
    task: Task,
    gold_path: &Path,
    pred_path: &Path,
    limit: Option<usize>,
) -> Result<ScoreReport, DataError> {
    let mut gold = load(task, gold_path)?;
    if let Some(limit) = limit {
        gold.truncate(limit);
    }
    let predictions = read_predictions(pred_path)?;
    let by_id = match_predictions(&gold, &predictions, gold_path, pred_path)?;
    Ok(score_examples(task, &gold, |ex| {
        by_id.get(ex.id.as_str()).copied().unwrap_or_default()
    }))
}

fn match_predictions<'a>(
    gold: &[Example],
    predictions: &'a [Prediction],
    gold_path: &Path,
    pred_path: &Path,
) -> Result<HashMap<&'a str, &'a str>, DataError> {
    let known: HashMap<&str, ()> = gold.iter().map(|e| (e.id.as_str(), ())).collect();
    let mut by_id = HashMap::with_capacity(predictions.len());
    for p in predictions {
        if !known.contains_key(p.id.as_str()) {
            return Err(DataError::UnknownId {
                path: pred_path.to_path_buf(),
                line: p.line,
                id: p.id.clone(),
                gold: gold_path.to_path_buf(),
            });
        }
        if by_id.insert(p.id.as_str(), p.text.as_str()).is_some() {
            return Err(DataError::DuplicateId {
                path: pred_path.to_path_buf(),
                line: p.line,
                id: p.id.clone(),
            });
        }
    }
    let missing: Vec<&Example> = gold
        .iter()
        .filter(|e| !by_id.contains_key(e.id.as_str()))
        .collect();
    if let Some(first) = missing.first() {
        return Err(DataError::MissingPredictions {
            path: pred_path.to_path_buf(),
            gold: gold_path.to_path_buf(),
            count: missing.len(),
            total: gold.len(),
            first: first.id.clone(),
        });
    }
    Ok(by_id)
}

/// Means of the task's metrics over `examples`, asking `prediction` for each
/// record's answer; the eval loop calls this directly with its decodes.
pub fn score_examples<'a>(
    task: Task,
    examples: &[Example],
    prediction: impl Fn(&Example) -> &'a str,
) -> ScoreReport {
    let metrics = task.metrics();
    let mut sums = vec![0.0; metrics.len()];
    for ex in examples {
        let pred = prediction(ex);
        for (sum, metric) in sums.iter_mut().zip(&metrics) {
            *sum += metric.score(pred, &ex.gold);
        }
    }
    let n = examples.len();
    let scores = metrics
        .into_iter()
        .zip(sums)
        .map(|(m, s)| (m, if n == 0 { 0.0 } else { s / n as f64 }))
        .collect();
    ScoreReport { task, n, scores }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::data::formats::fixture::Files;
    use crate::data::synth::{self, WorldSpec};

    const SQUAD: &str = r#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "The Veltrano lighthouse was completed in 1871 by the engineer Odile Marsk.", "qas": [
{"id": "q1", "question": "Who completed it?", "answers": [{"text": "Odile Marsk", "answer_start": 62}]},
{"id": "q2", "question": "When?", "answers": [{"text": "1871", "answer_start": 41}]}
]}]}]}"#;

    /// A directory holding the SQuAD gold file, and that file.
    fn squad_gold() -> (Files, PathBuf) {
        Files::with("dev.json", SQUAD)
    }

    /// What scoring `pred` against `gold` as SQuAD fails with.
    fn squad_error(gold: &Path, pred: &Path) -> String {
        score(Task::Squad, gold, pred)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn scores_jsonl_predictions() -> Result<(), DataError> {
        let (f, gold) = squad_gold();
        let pred = f.write(
            "pred.jsonl",
            "{\"id\": \"q1\", \"prediction\": \"The engineer, Odile Marsk.\"}\n{\"id\": \"q2\", \"prediction\": \"1871\"}\n",
        );
        let report = score(Task::Squad, &gold, &pred)?;
        assert_eq!(report.n, 2);
        assert!(close(report.get(Metric::SquadEm), 0.5));
        assert!(close(report.get(Metric::SquadF1), 0.9));
        assert!(close(report.get(Metric::ContainsCi), 1.0));
        assert_eq!(report.get(Metric::ToolIou), None);
        let table = report.to_string();
        let expected = "metric           mean\nsquad_em       0.5000\nsquad_f1       0.9000\ncontains_ci    1.0000\n2 squad records";
        assert_eq!(table, expected);
        let json = serde_json::to_string(&report).unwrap_or_default();
        assert!(json.contains("\"squad_em\":0.5"), "{json}");
        Ok(())
    }

    #[test]
    fn scores_a_squad_style_map() -> Result<(), DataError> {
        let (f, gold) = squad_gold();
        let pred = f.write(
            "pred.json",
            "{\n  \"q2\": \"in 1870\",\n  \"q1\": \"Odile Marsk\"\n}\n",
        );
        let report = score(Task::Squad, &gold, &pred)?;
        assert!(close(report.get(Metric::SquadEm), 0.5));
        Ok(())
    }

    #[test]
    fn unknown_id_names_file_line_and_id() {
        let (f, gold) = squad_gold();
        let pred = f.write(
            "pred.jsonl",
            "{\"id\": \"q1\", \"prediction\": \"x\"}\n{\"id\": \"q9\", \"prediction\": \"y\"}\n",
        );
        let err = squad_error(&gold, &pred);
        let expected = format!(
            "{}:2: unknown id \"q9\", not in {}",
            pred.display(),
            gold.display()
        );
        assert_eq!(err, expected);

        let map = f.write("pred.json", "{\n  \"q1\": \"x\",\n  \"zz\": \"y\"\n}");
        let err = squad_error(&gold, &map);
        assert!(
            err.starts_with(&format!("{}:3: unknown id \"zz\"", map.display())),
            "{err}"
        );
    }

    #[test]
    fn missing_predictions_are_counted() -> Result<(), DataError> {
        let (f, gold) = squad_gold();
        let pred = f.write("pred.jsonl", "{\"id\": \"q2\", \"prediction\": \"1871\"}\n");
        let err = squad_error(&gold, &pred);
        let expected = format!(
            "{}: 1 of 2 records of {} have no prediction, the first is \"q1\"",
            pred.display(),
            gold.display()
        );
        assert_eq!(err, expected);
        // the first record alone needs only the first prediction
        let first = f.write(
            "first.jsonl",
            "{\"id\": \"q1\", \"prediction\": \"Odile Marsk\"}\n",
        );
        let report = score_first(Task::Squad, &gold, &first, Some(1))?;
        assert_eq!(report.n, 1);
        assert!(close(report.get(Metric::SquadEm), 1.0));
        assert!(score(Task::Squad, &gold, &first).is_err());
        Ok(())
    }

    #[test]
    fn bad_prediction_lines_name_the_line() {
        let (f, gold) = squad_gold();
        let pred = f.write(
            "pred.jsonl",
            "{\"id\": \"q1\", \"prediction\": \"x\"}\n{\"id\": \"q2\", \"prediction\": 5}\n",
        );
        let err = squad_error(&gold, &pred);
        assert!(
            err.starts_with(&format!(
                "{}:2: expected a JSON object with \"id\"",
                pred.display()
            )),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let empty = f.write("empty.jsonl", "");
        let err = squad_error(&gold, &empty);
        assert!(
            err.starts_with(&format!("{}: empty file", empty.display())),
            "{err}"
        );
    }

    /// The synthetic world's own targets are right answers, so every metric
    /// of these tasks must give them full marks.
    #[test]
    fn synthetic_targets_score_full_marks() -> Result<(), DataError> {
        let f = Files::new();
        let spec = WorldSpec {
            entities: 30,
            seed: 11,
            pool: 8,
            attributes: 4,
            ..WorldSpec::default()
        };
        for task in [Task::Nq, Task::Squad, Task::MetaMath, Task::ToolBench] {
            let written = synth::write(task, &spec, &f.path(task.name()))?;
            let test = load(task, &written.test)?;
            let targets: HashMap<&str, &str> = test
                .iter()
                .map(|e| (e.id.as_str(), e.target.as_str()))
                .collect();
            let report = score_examples(task, &test, |e| targets[e.id.as_str()]);
            assert_eq!(report.n, written.test_records, "{task}");
            for (metric, mean) in &report.scores {
                assert_eq!(*mean, 1.0, "{task} {metric}");
            }
        }
        Ok(())
    }

    #[test]
    fn numeric_ids_match_toolbench_query_ids() -> Result<(), DataError> {
        let f = Files::new();
        let gold = f.write(
            "tool.json",
            r#"[{"query": "q", "query_id": 7, "api_list": [{"category_name": "Weather", "tool_name": "Skyloom", "api_name": "Forecast"}], "relevant APIs": [["Skyloom", "Forecast"]]}]"#,
        );
        let pred = f.write(
            "pred.jsonl",
            "{\"id\": 7, \"prediction\": \"API MAIN INFO: Skyloom, Forecast, Weather, \"}\n",
        );
        let report = score(Task::ToolBench, &gold, &pred)?;
        assert!(close(report.get(Metric::ToolIou), 1.0));
        Ok(())
    }
}
