//! `meft chat`: through a pipe on a tiny MEFT run (two turns, /reset, the
//! end of input), the replies are `meft generate --run`'s; a conversation
//! under a chat template keeps its turns and streams each reply in pieces
//! as it is decoded.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::config::Template;
use meft::model::converse::Conversation;
use meft::model::generate::GenerateOptions;
use std::io::Write;

#[test]
fn chat_through_a_pipe_answers_as_generate_does() {
    let root = tempfile::tempdir().unwrap();
    let dir = common::tiny_run(root.path(), "meft");
    let d = dir.display().to_string();
    let questions = ["where was Tova Renn born", "what does Tova Renn play"];
    let mut child = common::meft_bin()
        .args(["chat", &d, "--max-new-tokens", "16"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        "{}\n/reset\n{}\n/system be brief",
        questions[0], questions[1]
    )
    .unwrap();
    // Closing the input is Ctrl-D: the chat ends, exit status 0.
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (said, err) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{err}");
    assert!(err.contains("at step 12 (meft on embedded:tiny)"), "{err}");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 4, "{said}");
    assert_eq!(lines[1], "(the conversation starts again)");
    assert!(lines[3].contains("asks each message alone"), "{}", lines[3]);
    for (q, got) in questions.iter().zip([lines[0], lines[2]]) {
        let prompt = meft::data::prompt::eval_prompt(Template::Plain, q, None);
        let (code, want, err) = common::run(&[
            "generate",
            "--run",
            &d,
            "--prompt",
            &prompt,
            "--max-new-tokens",
            "16",
        ]);
        assert_eq!(code, 0, "{err}");
        // generate prints the whole continuation; chat ends the reply
        // where the model goes on with a next question.
        let want = want.trim_end_matches('\n');
        let want = want.split("\nQ:").next().unwrap();
        assert_eq!(got, want, "{q}");
    }
}

#[test]
fn a_chat_template_keeps_the_turns_and_streams_the_reply() {
    let loaded = meft::model::load_model(
        &meft::model::ModelRef::parse("embedded:tiny").unwrap(),
        &meft::model::Device::Cpu,
    )
    .unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 12,
        ..Default::default()
    };
    let mut hooks = meft::model::NoHooks;
    let mut conv = Conversation::new(
        &loaded.model,
        &loaded.tokenizer,
        &mut hooks,
        Template::Chatml,
        opts,
    )
    .unwrap();
    assert!(conv.keeps_turns());
    let mut pieces = Vec::new();
    let reply = conv
        .say("where was Tova Renn born", &mut |p| {
            pieces.push(p.to_string())
        })
        .unwrap();
    // Shown piece by piece while it was decoded, and nothing else.
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(pieces.concat(), reply);
    assert_eq!(conv.turns().len(), 2);
    assert_eq!(conv.turns()[1].content, reply);
    conv.set_system(Some("be brief".into()));
    conv.say("and where does she work", &mut |_| {}).unwrap();
    assert_eq!(conv.turns().len(), 4);
    assert_eq!(conv.system(), Some("be brief"));
    conv.reset();
    assert!(conv.turns().is_empty());
    assert_eq!(conv.system(), Some("be brief"));
}
