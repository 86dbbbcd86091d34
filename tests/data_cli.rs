//! `meft data check`, `meft data synth` and `meft score` through the binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;
use std::path::Path;

fn one_line_exit_2(args: &[&str], says: &str) {
    let (code, _, err) = run(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(says), "{says:?} not in {err}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bad_records_give_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let truncated = write(
        d,
        "nq.jsonl",
        "{\"question\": \"q\", \"answer\": [\"a\"]}\n{\"question\": \"q\", \"ans",
    );
    one_line_exit_2(
        &["data", "check", "--format", "nq", &truncated],
        "nq.jsonl:2: expected",
    );
    let missing = write(d, "gsm.jsonl", "{\"question\": \"q\"}\n");
    one_line_exit_2(
        &["data", "check", "--format", "gsm8k", &missing],
        "gsm.jsonl:1:",
    );
    let squad = write(
        d,
        "squad.json",
        r#"{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Odile Marsk",
            "qas": [{"id": "1", "question": "who", "answers": [{"text": "Odile", "answer_start": "zero"}]}]}]}]}"#,
    );
    one_line_exit_2(
        &["data", "check", "--format", "squad", &squad],
        "squad.json:",
    );
    let empty = write(d, "empty.jsonl", "");
    one_line_exit_2(&["data", "check", "--format", "nq", &empty], "empty file");
    let gold = write(
        d,
        "gold.jsonl",
        "{\"question\": \"q\", \"answer\": [\"a\"]}\n",
    );
    let pred = write(
        d,
        "pred.jsonl",
        "{\"id\": \"nq-7\", \"prediction\": \"a\"}\n",
    );
    one_line_exit_2(
        &["score", "--format", "nq", "--gold", &gold, "--pred", &pred],
        "unknown id \"nq-7\"",
    );
}

#[test]
fn synth_check_and_score_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nq");
    let (code, text, err) = run(&[
        "data",
        "synth",
        "--task",
        "nq",
        "--entities",
        "4",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("test records"), "{text}");
    let test = out.join("test.jsonl");
    let (code, text, _) = run(&["data", "check", "--format", "nq", test.to_str().unwrap()]);
    assert_eq!(code, 0);
    // 4 people × 6 attributes, one held-out question each.
    assert!(text.contains("records  24"), "{text}");
    // Perfect predictions: the gold answer itself.
    let examples = meft::data::load(meft::data::Task::Nq, &test).unwrap();
    let preds: String = examples
        .iter()
        .map(|e| {
            format!(
                "{}\n",
                serde_json::json!({"id": e.id, "prediction": e.gold[0]})
            )
        })
        .collect();
    let pred = write(dir.path(), "pred.jsonl", &preds);
    let (code, text, err) = run(&[
        "score",
        "--format",
        "nq",
        "--gold",
        test.to_str().unwrap(),
        "--pred",
        &pred,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["n"], 24);
    assert_eq!(v["scores"]["nq_em"], 1.0);
}
