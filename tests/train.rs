//! The trainer through the library: it learns, resumes exactly, writes
//! checkpoints atomically, and its planner agrees with what the Link counted.

use meft::config::Experiment;
use meft::train::event::{Event, StepEvent, Summary};

fn tiny(kind: &str, steps: usize) -> Experiment {
    let mut e = Experiment {
        name: format!("test-{kind}"),
        ..Default::default()
    };
    e.model.reference = "embedded:tiny-random".into();
    e.data.train = "synth:entities=30,seed=5".into();
    e.method.kind = kind.into();
    e.method.meft.neurons = 1024;
    e.method.meft.top_k = 16;
    e.method.meft.probe = 4;
    e.method.parallel.size = 1024;
    e.train.steps = steps;
    e.train.batch = 8;
    e.train.micro_batch = 8;
    e.train.lr = 1e-2;
    e.train.cutoff_len = 48;
    e.train.checkpoint_every = 0;
    e.eval.limit = 4;
    e.eval.max_new_tokens = 4;
    e
}

/// Run to the end; every event in order.
fn run(exp: Experiment, dir: &std::path::Path, resume: bool) -> Vec<Event> {
    let mut h = meft::train::start(exp, dir.to_path_buf(), resume).unwrap();
    let events: Vec<Event> = h.events.iter().collect();
    if let Some(t) = h.thread.take() {
        t.join().unwrap();
    }
    if let Some(Event::Failed { error, .. }) =
        events.iter().find(|e| matches!(e, Event::Failed { .. }))
    {
        panic!("run failed: {error}");
    }
    events
}

fn steps(events: &[Event]) -> Vec<&StepEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn summary(events: &[Event]) -> &Summary {
    events
        .iter()
        .find_map(|e| match e {
            Event::Finished { summary } => Some(summary),
            _ => None,
        })
        .expect("a Finished event")
}

fn mean_loss(s: &[&StepEvent]) -> f64 {
    s.iter().map(|x| x.loss).sum::<f64>() / s.len() as f64
}

#[test]
fn meft_parallel_and_lora_learn() {
    // The pretrained base speaks the format but has never seen these 30
    // people (180 facts); only the adapter trains.
    for (kind, want_ratio) in [("meft", 0.5), ("parallel", 0.5), ("lora", 1.0)] {
        let dir = tempfile::tempdir().unwrap();
        let mut exp = tiny(kind, 60);
        exp.model.reference = "embedded:tiny".into();
        let ev = run(exp, dir.path(), false);
        let s = steps(&ev);
        assert_eq!(s.len(), 60);
        let first = mean_loss(&s[..3]);
        let last = mean_loss(&s[s.len() - 3..]);
        eprintln!("{kind}: loss {first:.3} → {last:.3} ({:.2}×)", last / first);
        assert!(last < first * want_ratio, "{kind}: {first} → {last}");
    }
}

#[test]
fn resume_reproduces_the_loss_sequence() {
    let mut exp = tiny("meft", 8);
    exp.train.batch = 4;
    exp.train.micro_batch = 2; // two micro-batches per step
    exp.eval.limit = 1;
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted: Vec<f64> = steps(&run(exp.clone(), whole.path(), false))
        .iter()
        .map(|s| s.loss)
        .collect();
    assert_eq!(uninterrupted.len(), 8);

    // Stop after step 3, then resume from the checkpoint written at the stop.
    let part = tempfile::tempdir().unwrap();
    let mut h = meft::train::start(exp.clone(), part.path().to_path_buf(), false).unwrap();
    let mut first = Vec::new();
    for ev in h.events.iter() {
        if let Event::Step(s) = &ev {
            first.push(s.loss);
            if s.step == 3 {
                h.control.send(meft::train::Control::Stop).unwrap();
            }
        }
    }
    h.thread.take().unwrap().join().unwrap();
    let stopped_at = first.len();
    assert!(
        (3..8).contains(&stopped_at),
        "stopped after {stopped_at} steps"
    );
    let rest: Vec<f64> = steps(&run(exp, part.path(), true))
        .iter()
        .map(|s| s.loss)
        .collect();
    let mut resumed = first.clone();
    resumed.extend(rest);
    assert_eq!(resumed, uninterrupted, "stopped after {stopped_at}");
    // The run directory's log holds both parts, in order.
    let logged = meft::train::read_events(part.path()).unwrap();
    let logged: Vec<u64> = steps(&logged).iter().map(|s| s.step).collect();
    assert_eq!(logged, (1..=8).collect::<Vec<_>>());
}

#[test]
fn an_interrupted_checkpoint_write_leaves_the_previous_one() {
    use meft::train::checkpoint::{latest, load, save, CheckpointData};
    let dir = tempfile::tempdir().unwrap();
    let mut data = CheckpointData::default();
    data.f32s.insert("w".into(), (vec![2], vec![1.0, 2.0]));
    data.meta.insert("step".into(), "10".into());
    save(dir.path(), 10, &data).unwrap();
    // A write of step 20 that died half way: only its temporary file exists.
    let full = std::fs::read(dir.path().join("step-0000010.safetensors")).unwrap();
    std::fs::write(
        dir.path().join(".step-0000020.safetensors.tmp123-0"),
        &full[..full.len() / 2],
    )
    .unwrap();
    let (step, path) = latest(dir.path()).unwrap();
    assert_eq!(step, 10);
    let back = load(&path).unwrap();
    assert_eq!(back.f32s["w"].1, vec![1.0, 2.0]);
    assert_eq!(back.meta["step"], "10");
}

#[test]
fn planner_matches_the_link_and_the_ledger() {
    let mut exp = tiny("meft", 4);
    exp.train.batch = 8;
    exp.train.micro_batch = 4;
    let dir = tempfile::tempdir().unwrap();
    let ev = run(exp, dir.path(), false);
    let s = summary(&ev);
    let p = &s.predicted;
    eprintln!(
        "measured H→D {} D→H {} peak ledger {} · planned H→D {} D→H {} ledger {}",
        s.h2d_per_step,
        s.d2h_per_step,
        s.peak_device_ledger,
        p["h2d_per_step"],
        p["d2h_per_step"],
        p["device_ledger"]
    );
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs();
    assert!(s.h2d_per_step > 0.0);
    assert!(close(p["h2d_per_step"], s.h2d_per_step, 0.01));
    assert!(close(p["d2h_per_step"], s.d2h_per_step, 0.01));
    assert!(close(p["device_ledger"], s.peak_device_ledger as f64, 0.10));
}

#[test]
fn resume_after_a_crash_retrains_the_lost_steps_once() {
    let mut exp = tiny("meft", 5);
    exp.train.checkpoint_every = 2;
    exp.eval.limit = 1;
    let dir = tempfile::tempdir().unwrap();
    let original: Vec<f64> = steps(&run(exp.clone(), dir.path(), false))
        .iter()
        .map(|s| s.loss)
        .collect();
    // A crash after step 5 but before its checkpoint: only steps 2 and 4 were saved.
    std::fs::remove_file(dir.path().join("checkpoints/step-0000005.safetensors")).unwrap();
    let again: Vec<f64> = steps(&run(exp, dir.path(), true))
        .iter()
        .map(|s| s.loss)
        .collect();
    assert_eq!(again, original[4..].to_vec());
    let logged = meft::train::read_events(dir.path()).unwrap();
    let logged: Vec<u64> = steps(&logged).iter().map(|s| s.step).collect();
    assert_eq!(logged, vec![1, 2, 3, 4, 5]);
}
