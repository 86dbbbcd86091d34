//! Each general format trains: 100 MEFT steps of the embedded tiny model on
//! a synthetic world written in that format lower the loss, and the held-out
//! rows score above the untrained base (token F1, ROUGE-L and BLEU-4 for
//! answers; the held-out loss for raw text). A validation split is scored
//! every 50 steps. Ignored by default: about a minute per format on two
//! cores (CI runs it in its ignored pass).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meft::config::{Experiment, Task, Template};
use meft::event::{EvalSplit, Event, Summary};

fn experiment(task: Task, kind: &str, steps: usize) -> Experiment {
    let mut e = common::tiny(kind, steps);
    e.model.reference = "embedded:tiny".into();
    e.data.task = task;
    e.data.train = "synth:entities=16,seed=9".into();
    e.data.template = Template::Plain;
    e.train.train_on_inputs = Some(false);
    e.train.lr = 3e-3;
    e.train.cutoff_len = match task {
        Task::Alpaca => 96,
        Task::Text => 64,
        _ => 256,
    };
    e.eval.limit = 24;
    e.eval.max_new_tokens = 40;
    e.method.meft.neurons = 4096;
    e.method.meft.top_k = 32;
    e
}

fn train(exp: &Experiment) -> (Summary, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, rx) = common::trainer(exp, dir.path());
    let summary = t.run().unwrap();
    (summary, rx.try_iter().collect())
}

#[test]
#[ignore = "trains four formats for 100 steps each; run with --ignored"]
fn every_general_format_learns() {
    for task in [Task::Alpaca, Task::ShareGpt, Task::Messages, Task::Text] {
        let mut exp = experiment(task, "meft", 100);
        exp.data.validation = "split:0.05".into();
        exp.train.eval_every = 50;
        let (trained, events) = train(&exp);
        assert!(
            trained.final_loss < 0.5 * trained.first_loss,
            "{task}: loss {} → {}",
            trained.first_loss,
            trained.final_loss
        );
        let validations: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Eval(e) if e.split == EvalSplit::Validation => {
                    assert!(e.loss.is_some_and(f64::is_finite), "{task}");
                    Some(e.step)
                }
                _ => None,
            })
            .collect();
        assert_eq!(validations, vec![50, 100], "{task}");
        assert_eq!(trained.validation_loss.len(), 2, "{task}");

        let (base, _) = train(&experiment(task, "none", 1));
        if task == Task::Text {
            let (t, b) = (trained.metrics["loss"], base.metrics["loss"]);
            assert!(t < b, "{task}: held-out loss {t} trained, {b} base");
            continue;
        }
        for metric in ["token_f1", "rouge_l", "bleu_4"] {
            let (t, b) = (trained.metrics[metric], base.metrics[metric]);
            assert!(t > b, "{task} {metric}: {t} trained, {b} base");
        }
    }
}

#[test]
#[ignore = "needs SmolLM2: scripts/get-smollm2.sh, then --include-ignored"]
fn smollm2_trains_on_messages_through_its_own_template() {
    let gguf = common::smollm2();
    let root = tempfile::tempdir().unwrap();
    let preset = root.path().join("chat.toml");
    std::fs::write(
        &preset,
        format!(
            r#"name = "chat"
[model]
reference = "gguf:{}"
[data]
task = "messages"
train = "synth:entities=8,seed=2"
template = "model"
[method.meft]
neurons = 2048
top_k = 32
[train]
steps = 30
batch = 4
micro_batch = 4
lr = 2e-3
cutoff_len = 128
train_on_inputs = false
checkpoint_every = 0
[eval]
limit = 6
max_new_tokens = 24
"#,
            gguf.display()
        ),
    )
    .unwrap();
    let out = root.path().join("runs");
    let run = common::meft_bin()
        .args([
            "run",
            &preset.display().to_string(),
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dir = common::the_run_in(&out);
    let eval = common::meft_bin()
        .args(["eval", &dir.display().to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let ev: meft::event::EvalEvent = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(ev.n, 6);
    for m in ["token_f1", "rouge_l", "bleu_4"] {
        assert!(ev.metrics.contains_key(m), "{m}: {:?}", ev.metrics);
    }
    // Decoding started from the template's generation prompt and stopped at
    // its end of turn: the answers are the trained sentences, no markup.
    for (q, pred, _) in &ev.samples {
        assert!(!pred.contains("<|im_"), "{q:?} → {pred:?}");
    }
    assert!(
        ev.metrics["rouge_l"] > 0.3,
        "{:?} {:?}",
        ev.metrics,
        ev.samples
    );
}
