//! The trainer through the library: it learns, resumes exactly, writes
//! checkpoints atomically, and its planner agrees with what the Link counted.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{all_events, tiny, trainer};
use meft::config::Experiment;
use meft::event::{Event, StepEvent, Summary};

/// Run to the end; every event in order.
fn run(exp: Experiment, dir: &std::path::Path, resume: bool) -> Vec<Event> {
    let events = all_events(meft::train::start(exp, dir.to_path_buf(), resume).unwrap());
    if let Some(e) = events
        .iter()
        .find(|e| matches!(e, Event::Failed { .. } | Event::Diverged { .. }))
    {
        panic!("run failed: {e:?}");
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
    // A held-out share scored every other step: the resumed run must hold
    // out the same rows (its losses and validation losses are the same).
    exp.data.validation = "split:0.2".into();
    exp.train.eval_every = 2;
    let whole = tempfile::tempdir().unwrap();
    let whole_events = run(exp.clone(), whole.path(), false);
    let uninterrupted: Vec<f64> = steps(&whole_events).iter().map(|s| s.loss).collect();
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
    let steps_logged: Vec<u64> = steps(&logged).iter().map(|s| s.step).collect();
    assert_eq!(steps_logged, (1..=8).collect::<Vec<_>>());
    let validations = |events: &[Event]| -> Vec<(u64, Option<f64>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Eval(e) if e.split == meft::event::EvalSplit::Validation => {
                    Some((e.step, e.loss))
                }
                _ => None,
            })
            .collect()
    };
    let want = validations(&whole_events);
    assert_eq!(
        want.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![2, 4, 6, 8]
    );
    assert!(want.iter().all(|v| v.1.is_some_and(f64::is_finite)));
    assert_eq!(validations(&logged), want);
}

#[test]
fn an_interrupted_checkpoint_write_leaves_the_previous_one() {
    use meft::checkpoint::{latest, Buffer, CheckpointReader, CheckpointWriter};
    let dir = tempfile::tempdir().unwrap();
    let mut data = CheckpointWriter::new();
    data.add("w", &[2], Buffer::F32(&[1.0, 2.0]));
    data.meta.insert("step".into(), "10".into());
    data.save(dir.path(), 10).unwrap();
    // A write of step 20 that died half way: only its temporary file exists.
    let full = std::fs::read(dir.path().join("step-0000010.safetensors")).unwrap();
    std::fs::write(
        dir.path().join(".step-0000020.safetensors.tmp123-0"),
        &full[..full.len() / 2],
    )
    .unwrap();
    let (step, path) = latest(dir.path()).unwrap();
    assert_eq!(step, 10);
    let mut back = CheckpointReader::open(&path).unwrap();
    assert_eq!(
        back.read_vec::<f32>("w", &[Some(2)]).unwrap().1,
        vec![1.0, 2.0]
    );
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

/// Base bytes in the last device ledger of a run.
fn ledger_base(events: &[Event]) -> u64 {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Ledger(l) => l.device.get(&meft::event::Category::Base).copied(),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_half_precision_base_trains_and_halves_the_base_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = tiny("meft", 8);
    let f32_run = run(exp.clone(), &dir.path().join("f32"), false);
    let f32_base = ledger_base(&f32_run);
    let f32_last = steps(&f32_run)[7].loss;
    for dtype in ["bf16", "f16"] {
        exp.model.dtype = dtype.parse().unwrap();
        let ev = run(exp.clone(), &dir.path().join(dtype), false);
        assert_eq!(2 * ledger_base(&ev), f32_base, "{dtype}");
        let s = steps(&ev);
        assert_eq!(s.len(), 8);
        // From ln(vocab) ≈ 5.56 down as in f32 (4.434 at step 8): bf16
        // reached 4.449, f16 4.434.
        assert!(
            s[7].loss < 0.85 * s[0].loss,
            "{dtype}: {} → {}",
            s[0].loss,
            s[7].loss
        );
        assert!(
            (s[7].loss / f32_last - 1.0).abs() < 0.02,
            "{dtype}: {} vs f32 {f32_last}",
            s[7].loss
        );
        assert!(s.iter().all(|x| x.loss.is_finite()));
    }
}

#[test]
fn a_checkpoint_round_trips_every_tensor_in_each_moment_dtype() {
    for moments in ["f32", "bf16", "q8"] {
        let dir = tempfile::tempdir().unwrap();
        let mut exp = tiny("meft", 3);
        exp.method.meft.moments = moments.parse().unwrap();
        let (mut a, _rx) = trainer(&exp, dir.path());
        for _ in 0..3 {
            a.train_step().unwrap();
        }
        a.checkpoint().unwrap();
        let (_, path) = meft::checkpoint::latest(&dir.path().join("checkpoints")).unwrap();
        let (mut b, _rx2) = trainer(&exp, dir.path());
        assert_eq!(b.restore(&path).unwrap(), 3);
        let (ma, mb) = (a.method.meft().unwrap(), b.method.meft().unwrap());
        assert_eq!(ma.layers.len(), 4);
        for (la, lb) in ma.layers.iter().zip(&mb.layers) {
            assert_eq!(la.store.keys, lb.store.keys, "{moments}");
            assert_eq!(la.store.values, lb.store.values, "{moments}");
            assert_eq!(la.store.row_steps, lb.store.row_steps, "{moments}");
            let (ra, sa) = la.store.moments();
            let (rb, sb) = lb.store.moments();
            assert!(!ra.is_empty());
            assert_eq!(ra, rb, "{moments}");
            assert_eq!(sa.bytes(), sb.bytes(), "{moments}");
            for slot in [0, ra.len() - 1] {
                assert_eq!(sa.decoded(slot), sb.decoded(slot), "{moments}");
            }
        }
        for ((na, va), (nb, vb)) in a.opt.vars.iter().zip(&b.opt.vars) {
            assert_eq!(na, nb);
            let (x, y): (Vec<f32>, Vec<f32>) = (
                va.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                vb.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(x, y, "{na}");
        }
        assert_eq!(a.opt.step, b.opt.step);
    }
}

#[test]
fn a_checkpoint_of_another_shape_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let exp = tiny("meft", 1);
    let (mut a, _rx) = trainer(&exp, dir.path());
    a.train_step().unwrap();
    a.checkpoint().unwrap();
    let (_, path) = meft::checkpoint::latest(&dir.path().join("checkpoints")).unwrap();
    let mut other = exp.clone();
    // Same router (128 experts), twice the neurons.
    other.method.meft.neurons = 2048;
    other.method.meft.experts = 128;
    let (mut b, _rx2) = trainer(&other, dir.path());
    let e = meft::fsx::error_line(&b.restore(&path).unwrap_err());
    assert_eq!(e.lines().count(), 1);
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(
        e.contains(
            "tensor meft.0.keys: the run expects [2048, 128] F32, the file has [1024, 128] F32"
        ),
        "{e}"
    );
    // Moments in another dtype than the run's are refused too.
    let mut q8 = exp.clone();
    q8.method.meft.moments = meft::config::MomentDtype::Q8;
    let (mut c, _rx3) = trainer(&q8, dir.path());
    let e = meft::fsx::error_line(&c.restore(&path).unwrap_err());
    assert!(e.contains("tensor meft.0.moments: the run expects"), "{e}");
    assert!(
        e.contains(", 512] U8, the file has [") && e.ends_with(", 512] F32"),
        "{e}"
    );
}

#[test]
fn a_run_whose_data_will_not_load_reports_it_and_leaves_no_directory() {
    // The watcher (the setup screen, say) gets the reason as an event; the
    // run directory goes, since nothing in it was trained.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let mut exp = tiny("meft", 2);
    exp.data.train = root.path().join("absent.jsonl").display().to_string();
    let events = all_events(meft::train::start(exp, dir.clone(), false).unwrap());
    let error = events
        .iter()
        .find_map(|e| match e {
            Event::Failed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap();
    assert!(error.contains("absent.jsonl"), "{error}");
    assert!(
        !dir.exists(),
        "{:?}",
        std::fs::read_dir(&dir).map(|d| d.count())
    );
}

#[test]
fn weight_decay_reaches_the_optimizers_and_stays_out_of_the_config_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = common::tiny("meft", 1);
    assert!(!exp.to_toml().unwrap().contains("weight_decay"));
    exp.train.weight_decay = 1e-6;
    let text = exp.to_toml().unwrap();
    assert!(text.contains("weight_decay = "), "{text}");
    assert_eq!(Experiment::from_toml(&text, "t").unwrap(), exp);
    let (t, _rx) = common::trainer(&exp, dir.path());
    // The trainer hands this one config to the device optimizer and to the
    // host rows' step alike.
    assert_eq!(t.opt.cfg.weight_decay, 1e-6);
}

#[test]
fn global_bias_correction_is_a_setting_the_host_step_follows() {
    // After step 1 every row has been updated once under either count, so
    // the runs agree; at step 2 rows first touched then are corrected as at
    // step 2 under `global` and as at step 1 under `row`: the runs part.
    let mut row = common::tiny("meft", 2);
    assert!(!row.to_toml().unwrap().contains("bias_correction"));
    let mut global = row.clone();
    global.method.meft.bias_correction = meft::config::BiasCorrection::Global;
    let text = global.to_toml().unwrap();
    assert!(text.contains("bias_correction = \"global\""), "{text}");
    assert_eq!(Experiment::from_toml(&text, "t").unwrap(), global);
    // Few rows per token out of many, so step 2 reaches rows step 1 did not.
    for e in [&mut row, &mut global] {
        e.method.meft.neurons = 16384;
        e.method.meft.top_k = 4;
    }
    let rows = |exp: &Experiment| {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _rx) = common::trainer(exp, dir.path());
        let mut after = Vec::new();
        for _ in 0..2 {
            t.train_step().unwrap();
            let m = t.method.meft().unwrap();
            let st = &m.layers[0].store;
            after.push((st.keys.to_vec(), st.values.to_vec()));
        }
        after
    };
    let (a, b) = (rows(&row), rows(&global));
    assert_eq!(a[0], b[0]);
    assert_ne!(a[1], b[1]);
}

#[test]
fn bf16_and_q8_moments_train_as_f32_moments_do() {
    // The tiny nq preset at M 1024, batch 8, 300 steps: the loss at the end
    // (the mean of the last 20 steps') with half-precision or 8-bit host
    // moments is within 2 % of exact f32 moments'.
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/nq.toml");
    let mut exp = Experiment::load(std::path::Path::new(preset)).unwrap();
    exp.method.meft.neurons = 1024;
    exp.train.batch = 8;
    exp.train.micro_batch = 8;
    exp.train.checkpoint_every = 0;
    exp.eval.limit = 0;
    assert_eq!(exp.train.steps, 300);
    let end_loss = |moments: meft::config::MomentDtype| {
        let mut e = exp.clone();
        e.method.meft.moments = moments;
        let dir = tempfile::tempdir().unwrap();
        let ev = run(e, dir.path(), false);
        let s: Vec<f64> = steps(&ev).iter().map(|s| s.loss).collect();
        assert_eq!(s.len(), 300);
        (s[280..].iter().sum::<f64>() / 20.0, s)
    };
    use meft::config::MomentDtype;
    let (f32_end, f32_curve) = end_loss(MomentDtype::F32);
    assert!(
        f32_end < 0.5 * f32_curve[0],
        "{f32_end} vs {}",
        f32_curve[0]
    );
    for m in [MomentDtype::Bf16, MomentDtype::Q8] {
        let (end, curve) = end_loss(m);
        let off = (end - f32_end).abs() / f32_end;
        assert!(
            off <= 0.02,
            "{m:?}: {end} vs f32 {f32_end} ({:.2} %)",
            100.0 * off
        );
        // The moments are really stored otherwise: the runs part somewhere.
        assert_ne!(curve, f32_curve, "{m:?}");
    }
}
