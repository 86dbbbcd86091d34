//! Runs in a process of their own: `meft run --detach` returns once the run
//! trains, commands dropped through the run directory (pause, checkpoint,
//! evaluate, resume) are events at the next step boundary, a viewer follows
//! the log as it grows, and `meft stop` ends it with a checkpoint at the
//! step it reached.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run;
use meft::event::Event;
use meft::train::{remote, Control};
use std::path::Path;
use std::time::Duration;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/example.toml");

/// The run's events so far.
fn events(dir: &Path) -> Vec<Event> {
    meft::event::read_events(dir).unwrap_or_default()
}

/// Wait (at most a minute) until `what` holds of the run's events.
fn wait_until(dir: &Path, what: &str, holds: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    for _ in 0..1200 {
        let ev = events(dir);
        if holds(&ev) {
            return ev;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: never happened");
}

fn count(ev: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    ev.iter().filter(|e| f(e)).count()
}

#[test]
fn a_detached_run_takes_commands_through_its_directory_and_stops_safely() {
    let out = tempfile::tempdir().unwrap();
    let (code, said, err) = run(&[
        "run",
        EXAMPLE,
        "--set",
        "train.steps=100000",
        "--set",
        "train.checkpoint_every=100000",
        "--set",
        "train.schedule=\"constant_with_warmup\"",
        "--set",
        "train.warmup_ratio=0.0",
        "--out",
        &out.path().display().to_string(),
        "--detach",
    ]);
    assert_eq!(code, 0, "{err}");
    let dir = std::path::PathBuf::from(said.trim());
    assert!(dir.starts_with(out.path()), "{said}");
    assert!(err.contains("meft attach"), "{err}");
    assert!(remote::is_training(&dir));
    // A viewer follows the log from its first event.
    let viewer = remote::attach(&dir).unwrap();
    let first = viewer.events.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(matches!(first, Event::RunStarted { .. }), "{first:?}");

    wait_until(&dir, "a first step", |ev| {
        count(ev, |e| matches!(e, Event::Step(_))) >= 1
    });
    // Through the viewer's handle, as the dashboard sends them.
    viewer.control.send(Control::Pause).unwrap();
    let ev = wait_until(&dir, "paused", |ev| {
        ev.iter().any(|e| matches!(e, Event::Paused { .. }))
    });
    let paused_at = ev
        .iter()
        .find_map(|e| match e {
            Event::Paused { step } => Some(*step),
            _ => None,
        })
        .unwrap();
    // While paused, a checkpoint and an evaluation are made at that step,
    // and no step is trained.
    remote::send(&dir, Control::Checkpoint).unwrap();
    remote::send(&dir, Control::EvalNow).unwrap();
    let ev = wait_until(&dir, "checkpoint and eval", |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::Checkpoint { step, .. } if *step == paused_at))
            && ev
                .iter()
                .any(|e| matches!(e, Event::Eval(x) if x.step == paused_at))
    });
    assert_eq!(
        count(&ev, |e| matches!(e, Event::Step(_))) as u64,
        paused_at
    );
    remote::send(&dir, Control::Resume).unwrap();
    wait_until(&dir, "resumed and trained on", |ev| {
        ev.iter().any(|e| matches!(e, Event::Resumed { .. }))
            && count(ev, |e| matches!(e, Event::Step(_))) as u64 > paused_at + 2
    });
    // The viewer saw the same events, in order.
    let mut seen = Vec::new();
    while let Ok(e) = viewer.events.recv_timeout(Duration::from_millis(500)) {
        seen.push(e);
        if seen.iter().any(|e| matches!(e, Event::Resumed { .. })) {
            break;
        }
    }
    assert!(seen
        .iter()
        .any(|e| matches!(e, Event::Paused { step } if *step == paused_at)));

    // The learning rate doubled from the next step, said in the log.
    let base_lr = meft::config::Experiment::load(&dir.join("config.toml"))
        .unwrap()
        .train
        .lr;
    remote::send(&dir, Control::ScaleLr { up: true }).unwrap();
    let doubled = |ev: &[Event]| {
        ev.iter()
            .any(|e| matches!(e, Event::Step(s) if s.lr == 2.0 * base_lr))
    };
    let ev = wait_until(&dir, "a step at twice the learning rate", doubled);
    assert!(ev.iter().any(
        |e| matches!(e, Event::Message { text } if text.starts_with("learning rate × 2 from step"))
    ));
    let lrs_of = |ev: &[Event]| -> Vec<f64> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some(s.lr),
                _ => None,
            })
            .collect()
    };
    let lrs = lrs_of(&ev);
    let first_doubled = lrs.iter().position(|&l| l == 2.0 * base_lr).unwrap();
    assert!(
        lrs[..first_doubled].iter().all(|&l| l == base_lr),
        "{lrs:?}"
    );

    let (code, said, err) = run(&["stop", &dir.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let ev = events(&dir);
    let steps = count(&ev, |e| matches!(e, Event::Step(_))) as u64;
    assert!(said.contains(&format!("stopped at step {steps}")), "{said}");
    let (last, _) = meft::checkpoint::latest(&dir.join("checkpoints")).unwrap();
    assert_eq!(last, steps);
    let stopped = ev
        .iter()
        .position(|e| matches!(e, Event::Stopped { step } if *step == steps))
        .expect("a stopped event");
    assert!(ev[stopped..]
        .iter()
        .any(|e| matches!(e, Event::Finished { .. })));
    assert!(!remote::is_training(&dir));
    assert!(dir.join("run.log").is_file());
    // Resumed (detached too), it goes on at the scaled rate.
    let before = lrs_of(&ev).len();
    let (code, _, err) = run(&["run", "--resume", &dir.display().to_string(), "--detach"]);
    assert_eq!(code, 0, "{err}");
    let ev = wait_until(&dir, "a resumed step", |ev| lrs_of(ev).len() > before);
    assert_eq!(lrs_of(&ev)[before], 2.0 * base_lr);
    let (code, _, err) = run(&["stop", &dir.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    // Nothing trains it now: attach and stop say so.
    for cmd in ["attach", "stop"] {
        let (code, _, err) = run(&[cmd, &dir.display().to_string()]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("no process is training this run"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn a_detached_run_that_cannot_start_says_why_and_leaves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let (code, said, err) = run(&[
        "run",
        EXAMPLE,
        "--set",
        "model.reference=\"hf:/nonexistent\"",
        "--out",
        &out.path().display().to_string(),
        "--detach",
    ]);
    assert_eq!(code, 2, "{said}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
