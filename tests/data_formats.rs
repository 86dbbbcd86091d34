//! The general formats (alpaca, sharegpt, messages, text): the committed
//! fixtures load as written, in JSON and in Parquet alike (the Parquet copies
//! are made by `scripts/parquet-fixtures.py` with pyarrow); `meft data
//! synth` output round-trips; the user's column names are honoured; bad
//! records are one line naming the file and line; a validation split is
//! seeded and leaves the training rows disjoint from it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;
use meft::config::{Columns, Experiment, Task};
use meft::data::chat::{Message, Role};
use meft::data::{load, load_with, Example};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

fn one_line_exit_2(args: &[&str], says: &[&str]) {
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    for s in says {
        assert!(err.contains(s), "{s:?} not in {err}");
    }
    assert!(out.is_empty() || !out.contains("first row"), "{out}");
}

fn roles(ex: &Example) -> Vec<Role> {
    ex.messages.iter().map(|m| m.role).collect()
}

#[test]
fn alpaca_fixture_loads_with_its_system_and_history() {
    let ex = load(Task::Alpaca, &fixture("alpaca.json")).unwrap();
    assert_eq!(ex.len(), 4);
    assert_eq!(ex[0].instruction, "Give three tips for staying healthy.");
    // An empty input is no input.
    assert_eq!(ex[0].input, None);
    assert!(ex[0].messages.is_empty());
    assert_eq!(ex[1].input.as_deref(), Some("The cat sleeps on the mat."));
    assert_eq!(ex[1].gold, vec!["Le chat dort sur le tapis.".to_string()]);
    // System and history make the record a conversation.
    use Role::*;
    assert_eq!(
        roles(&ex[2]),
        vec![System, User, Assistant, User, Assistant]
    );
    assert_eq!(ex[2].messages[0].content, "You are a careful translator.");
    assert_eq!(ex[2].target, "Die Katze schläft auf der Matte.");
    assert_eq!(ex[3].input, None);
    assert_eq!((ex[0].line, ex[1].line, ex[3].line), (2, 7, 19));
}

#[test]
fn conversation_fixtures_load_turn_by_turn() {
    use Role::*;
    for (task, file) in [
        (Task::ShareGpt, "sharegpt.json"),
        (Task::Messages, "messages.jsonl"),
    ] {
        let ex = load(task, &fixture(file)).unwrap();
        assert_eq!(ex.len(), 3, "{task}");
        assert_eq!(roles(&ex[0]), vec![User, Assistant], "{task}");
        assert_eq!(
            roles(&ex[1]),
            vec![System, User, Assistant, User, Assistant],
            "{task}"
        );
        assert_eq!(ex[1].messages[0].content, "You are a helpful assistant.");
        // The last user turn is the instruction, the last answer the target.
        assert_eq!(ex[1].instruction, "And an even one?");
        assert_eq!(ex[1].target, "2 is the only even prime number.");
        assert_eq!(
            ex[2].messages[0],
            Message::new(System, "Answer in one word.")
        );
        assert_eq!(ex[2].gold, vec!["Blue.".to_string()]);
    }
}

#[test]
fn text_fixtures_load_as_documents() {
    let txt = load(Task::Text, &fixture("text.txt")).unwrap();
    assert_eq!(txt.len(), 3);
    assert_eq!(
        txt[0].target,
        "The lighthouse at Veltrano was completed in 1871.\nIts lamp could be seen twenty miles out to sea."
    );
    assert_eq!((txt[0].line, txt[1].line, txt[2].line), (1, 4, 6));
    let jsonl = load(Task::Text, &fixture("text.jsonl")).unwrap();
    assert_eq!(jsonl.len(), 2);
    assert_eq!(
        jsonl[1].target,
        "Odile Marsk kept the light for thirty years."
    );
}

#[test]
fn parquet_holds_the_same_records_and_gives_the_same_batches() {
    let tok = meft::model::Tokenizer::tiny(&[]).unwrap();
    for (task, json, parquet) in [
        (Task::Alpaca, "alpaca.json", "alpaca.parquet"),
        (Task::ShareGpt, "sharegpt.json", "sharegpt.parquet"),
        (Task::Messages, "messages.jsonl", "messages.parquet"),
        (Task::Text, "text.jsonl", "text.parquet"),
    ] {
        let a = load(task, &fixture(json)).unwrap();
        let b = load(task, &fixture(parquet)).unwrap();
        let strip = |v: &[Example]| -> Vec<Example> {
            v.iter()
                .map(|e| Example {
                    line: 0,
                    ..e.clone()
                })
                .collect()
        };
        assert_eq!(strip(&a), strip(&b), "{task}");
        let mut exp = Experiment::default();
        exp.data.task = task;
        exp.train.cutoff_len = 512;
        let ea = meft::data::spec::encode_all(&exp, &a, &tok, None).unwrap();
        let eb = meft::data::spec::encode_all(&exp, &b, &tok, None).unwrap();
        assert_eq!(ea, eb, "{task}");
        assert!(!ea.is_empty());
    }
}

#[test]
fn column_names_are_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let alpaca = dir.path().join("qa.jsonl");
    std::fs::write(
        &alpaca,
        "{\"question\": \"Who kept the light?\", \"answer\": \"Odile Marsk.\", \"ctx\": \"Veltrano\"}\n",
    )
    .unwrap();
    let columns = Columns {
        prompt: Some("question".into()),
        response: Some("answer".into()),
        query: Some("ctx".into()),
        ..Columns::default()
    };
    let ex = load_with(Task::Alpaca, &alpaca, &columns).unwrap();
    assert_eq!(ex[0].instruction, "Who kept the light?");
    assert_eq!(ex[0].input.as_deref(), Some("Veltrano"));
    assert_eq!(ex[0].target, "Odile Marsk.");

    let chat = dir.path().join("chat.jsonl");
    std::fs::write(
        &chat,
        "{\"dialog\": [{\"speaker\": \"me\", \"text\": \"Hi?\"}, {\"speaker\": \"bot\", \"text\": \"Hello.\"}]}\n",
    )
    .unwrap();
    let columns = Columns {
        messages: Some("dialog".into()),
        role_tag: Some("speaker".into()),
        content_tag: Some("text".into()),
        user_tag: Some("me".into()),
        assistant_tag: Some("bot".into()),
        ..Columns::default()
    };
    let ex = load_with(Task::Messages, &chat, &columns).unwrap();
    assert_eq!(
        ex[0].messages,
        vec![
            Message::new(Role::User, "Hi?"),
            Message::new(Role::Assistant, "Hello.")
        ]
    );
    // The same through the command line.
    let (code, out, err) = run(&[
        "data",
        "check",
        "--format",
        "alpaca",
        &alpaca.display().to_string(),
        "--column",
        "prompt=question",
        "--column",
        "response=answer",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("records  1"), "{out}");
}

#[test]
fn data_check_prints_each_fixture_with_its_tokens_and_trained_spans() {
    for (format, file) in [
        ("alpaca", "alpaca.json"),
        ("sharegpt", "sharegpt.json"),
        ("messages", "messages.jsonl"),
        ("text", "text.txt"),
        ("messages", "messages.parquet"),
    ] {
        let path = fixture(file).display().to_string();
        let (code, out, err) = run(&[
            "data",
            "check",
            "--format",
            format,
            &path,
            "--template",
            "chatml",
            "--cutoff-len",
            "400",
        ]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(out.contains(&format!("task     {format}")), "{out}");
        assert!(out.contains("tokens   min "), "{out}");
        assert!(out.contains("exceed cutoff_len 400"), "{out}");
        assert!(out.contains("first row, trained spans in ⟦…⟧:"), "{out}");
        assert!(out.contains('⟦'), "{file}: {out}");
    }
    // Assistant turns only: the first messages record's trained span is
    // exactly the answer and its end-of-turn markup.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[train]\ntrain_on_inputs = false\n").unwrap();
    let (code, out, err) = run(&[
        "data",
        "check",
        "--format",
        "messages",
        &fixture("messages.jsonl").display().to_string(),
        "--template",
        "chatml",
        "--cutoff-len",
        "400",
        "--config",
        &cfg.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n⟦The capital of France is Paris.<|im_end|>\n⟧\n"
        ),
        "{out}"
    );
}

#[test]
fn synth_writes_every_general_format_and_it_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for task in [Task::Alpaca, Task::ShareGpt, Task::Messages, Task::Text] {
        let out = dir.path().join(task.name());
        let (code, said, err) = run(&[
            "data",
            "synth",
            "--task",
            task.name(),
            "--entities",
            "12",
            "--seed",
            "4",
            "--out",
            &out.display().to_string(),
        ]);
        assert_eq!(code, 0, "{err}");
        let (train_name, test_name) = meft::data::synth::file_names(task);
        let train = load(task, &out.join(train_name)).unwrap();
        let test = load(task, &out.join(test_name)).unwrap();
        assert!(
            said.contains(&format!("{} train records", train.len())),
            "{said}"
        );
        assert!(!test.is_empty());
        // Each record read back is what the file says, field for field.
        let text = std::fs::read_to_string(out.join(train_name)).unwrap();
        let value: serde_json::Value = match task {
            Task::Messages | Task::Text => {
                serde_json::from_str(text.lines().next().unwrap()).unwrap()
            }
            _ => serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone(),
        };
        let first = &train[0];
        match task {
            Task::Alpaca => {
                assert_eq!(value["instruction"], first.instruction.as_str());
                assert_eq!(value["output"], first.target.as_str());
            }
            Task::Messages => {
                assert_eq!(
                    value["messages"],
                    serde_json::to_value(&first.messages).unwrap()
                );
            }
            Task::ShareGpt => {
                assert_eq!(value["system"], first.messages[0].content.as_str());
                let turns = value["conversations"].as_array().unwrap();
                assert_eq!(turns.len() + 1, first.messages.len());
                for (t, m) in turns.iter().zip(&first.messages[1..]) {
                    assert_eq!(t["value"], m.content.as_str());
                }
            }
            _ => assert_eq!(value["text"], first.target.as_str()),
        }
    }
}

#[test]
fn a_validation_split_is_seeded_and_disjoint() {
    let ex = load(Task::Messages, &fixture("messages.jsonl")).unwrap();
    let many: Vec<Example> = (0..40)
        .map(|i| Example {
            id: format!("r{i}"),
            ..ex[i % 3].clone()
        })
        .collect();
    let (train, val) = meft::data::spec::split_off(many.clone(), 0.1, 7).unwrap();
    assert_eq!((train.len(), val.len()), (36, 4));
    let (train2, val2) = meft::data::spec::split_off(many.clone(), 0.1, 7).unwrap();
    assert_eq!(val, val2);
    assert_eq!(train, train2);
    assert!(val.iter().all(|v| train.iter().all(|t| t.id != v.id)));
    let (_, other) = meft::data::spec::split_off(many.clone(), 0.1, 8).unwrap();
    assert_ne!(val, other);
    assert!(meft::data::spec::split_off(many[..1].to_vec(), 0.5, 7).is_err());
}

#[test]
fn bad_general_records_are_one_line_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good = r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#;
    let role = w(
        "role.jsonl",
        &format!(
            "{good}\n{}\n",
            r#"{"messages": [{"role": "robot", "content": "q"}]}"#
        ),
    );
    one_line_exit_2(
        &["data", "check", "--format", "messages", &role],
        &["role.jsonl:2:", "turn 1: unknown role \"robot\""],
    );
    let empty = w("empty.jsonl", "{\"messages\": []}\n");
    one_line_exit_2(
        &["data", "check", "--format", "messages", &empty],
        &["empty.jsonl:1:", "empty conversation"],
    );
    let unanswered = w(
        "open.jsonl",
        r#"{"messages": [{"role": "user", "content": "q"}]}"#,
    );
    one_line_exit_2(
        &["data", "check", "--format", "messages", &unanswered],
        &["open.jsonl:1:", "does not end with an assistant turn"],
    );
    let sharegpt = w(
        "sg.json",
        "[\n{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]},\n{\"conversations\": [{\"from\": \"bard\", \"value\": \"q\"}]}\n]",
    );
    one_line_exit_2(
        &["data", "check", "--format", "sharegpt", &sharegpt],
        &[
            "sg.json:3:",
            "unknown role \"bard\" (expected one of: human, user, gpt, assistant, system)",
        ],
    );
    let twice = w(
        "twice.jsonl",
        &format!(
            "{good}\n{}\n",
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]}"#
        ),
    );
    one_line_exit_2(
        &[
            "data",
            "check",
            "--format",
            "messages",
            &twice,
            "--template",
            "gemma",
            "--cutoff-len",
            "400",
        ],
        &["twice.jsonl:2:", "Conversation roles must alternate"],
    );
    let alpaca = w("a.jsonl", "{\"question\": \"q\", \"output\": \"a\"}\n");
    one_line_exit_2(
        &[
            "data",
            "check",
            "--format",
            "alpaca",
            &alpaca,
            "--column",
            "prompt=query_text",
        ],
        &[
            "a.jsonl:1:",
            "missing column \"query_text\" (data.columns.prompt)",
        ],
    );
    one_line_exit_2(
        &["data", "check", "--format", "alpaca", &alpaca],
        &["a.jsonl:1:", "missing field `instruction`"],
    );
    // A Parquet file of another format's columns is refused by its schema.
    one_line_exit_2(
        &[
            "data",
            "check",
            "--format",
            "sharegpt",
            &fixture("messages.parquet").display().to_string(),
        ],
        &[
            "messages.parquet: the Parquet schema has no column \"conversations\"",
            "its columns are: messages",
        ],
    );
    let not_parquet = w("fake.parquet", "{\"text\": \"a\"}\n");
    one_line_exit_2(
        &["data", "check", "--format", "text", &not_parquet],
        &["fake.parquet:1:", "not a readable Parquet file"],
    );
    // The model's own template, which fails to render.
    let model = d.join("hf");
    std::fs::create_dir_all(&model).unwrap();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny.join(f), model.join(f)).unwrap();
    }
    std::fs::write(
        model.join("chat_template.jinja"),
        "{% for m in messages %}{{ m.content | shout }}{% endfor %}",
    )
    .unwrap();
    one_line_exit_2(
        &[
            "data",
            "check",
            "--format",
            "messages",
            &fixture("messages.jsonl").display().to_string(),
            "--model",
            &format!("hf:{}", model.display()),
            "--template",
            "model",
        ],
        &["messages.jsonl:1:", "chat template", "shout"],
    );
    // Settings.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");
    for (set, says) in [
        (
            "data.validation=\"split:1.5\"",
            "data.validation: split:F needs a share F strictly between 0 and 1, got \"1.5\"",
        ),
        (
            "train.eval_every=10",
            "train.eval_every: needs validation rows",
        ),
        (
            "data.columns.prompt=\"q\"",
            "data.columns: column names map the general formats",
        ),
    ] {
        one_line_exit_2(&["plan", example, "--set", set], &[says]);
    }
}
