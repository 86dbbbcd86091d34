//! The paper's overlap knobs: the host optimizer behind the next forward
//! pass changes nothing bit for bit; pre-retrieval picks layer i's rows by
//! layer i − p's input, computes with layer i's own, and the planner counts
//! the queries that cross for it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{Device, Tensor};
use common::{all_events, trainer};
use meft::adapter::meft::{
    device_output, gather_kv, select, HostOptimizer, MeftAdapter, MeftShape, Routing,
};
use meft::config::Experiment;
use meft::event::{Event, StepEvent};
use meft::model::Hooks;
use meft::optim::moments::MomentDtype;
use std::sync::mpsc::Receiver;

fn tiny(steps: usize) -> Experiment {
    let mut e = common::tiny("meft", steps);
    e.train.micro_batch = 4;
    e.eval.limit = 2;
    e.eval.max_new_tokens = 3;
    e
}

fn step_events(rx: &Receiver<Event>) -> Vec<StepEvent> {
    rx.try_iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Every host tensor of a trainer's adapter, settled.
fn host_state(t: &mut meft::train::trainer::Trainer) -> Vec<Vec<f32>> {
    t.method.settle().unwrap();
    let m = t.method.meft().unwrap();
    let mut out = Vec::new();
    for l in &m.layers {
        out.push(l.store.keys.to_vec());
        out.push(l.store.values.to_vec());
        out.push(l.store.row_steps.iter().map(|&s| s as f32).collect());
        let (rows, moments) = l.store.moments();
        out.push(rows.iter().map(|&r| r as f32).collect());
        out.push((0..rows.len()).flat_map(|s| moments.decoded(s)).collect());
    }
    out
}

#[test]
fn the_host_optimizer_behind_the_next_forward_pass_is_the_same_run_bit_for_bit() {
    // Each host optimizer; and with pre-retrieval on in both runs, over
    // adapter layers listed out of order, with the row cache.
    for (mode, early) in [
        (HostOptimizer::Lazy, false),
        (HostOptimizer::Dense, false),
        (HostOptimizer::Lazy, true),
    ] {
        let mut exp = tiny(5);
        exp.method.meft.host_optimizer = mode;
        if early {
            exp.method.meft.pre_retrieval = 1;
            exp.method.meft.layers = meft::config::Layers::List(vec![3, 1, 2]);
            exp.method.meft.row_cache = 256;
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut off, rx_off) = trainer(&exp, &dir.path().join("off"));
        exp.method.meft.async_host_optim = true;
        let (mut on, rx_on) = trainer(&exp, &dir.path().join("on"));
        for step in 1..=5 {
            off.train_step().unwrap();
            on.train_step().unwrap();
            // A checkpoint and an evaluation between steps wait for the
            // updates still running.
            if step == 2 {
                off.checkpoint().unwrap();
                on.checkpoint().unwrap();
            }
            if step == 3 {
                off.evaluate().unwrap();
                on.evaluate().unwrap();
            }
        }
        let (a, b) = (step_events(&rx_off), step_events(&rx_on));
        assert_eq!(a.len(), 5);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                x.loss.to_bits(),
                y.loss.to_bits(),
                "{mode:?} step {}",
                x.step
            );
            assert_eq!(x.grad_norm.to_bits(), y.grad_norm.to_bits(), "{mode:?}");
            assert_eq!(x.rows_updated, y.rows_updated, "{mode:?}");
            assert_eq!(x.traffic, y.traffic, "{mode:?}");
        }
        assert_eq!(host_state(&mut off), host_state(&mut on), "{mode:?}");
        for ((na, va), (_, vb)) in off.opt.vars.iter().zip(&on.opt.vars) {
            let (x, y): (Vec<f32>, Vec<f32>) = (
                va.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                vb.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(x, y, "{mode:?} {na}");
        }
        // The checkpoints written at step 2 are the same bytes.
        let ck = |run: &str| {
            std::fs::read(
                dir.path()
                    .join(run)
                    .join("checkpoints/step-0000002.safetensors"),
            )
            .unwrap()
        };
        assert!(ck("off") == ck("on"), "{mode:?}: checkpoints differ");
    }
}

#[test]
fn a_run_with_the_host_optimizer_behind_resumes_like_one_without() {
    // Off: 4 steps straight. On: 2 steps, a checkpoint, and a fresh trainer
    // that restores it and trains 2 more. The same losses and state.
    let exp = tiny(4);
    let dir = tempfile::tempdir().unwrap();
    let (mut off, rx_off) = trainer(&exp, &dir.path().join("off"));
    for _ in 0..4 {
        off.train_step().unwrap();
    }
    let want: Vec<u64> = step_events(&rx_off)
        .iter()
        .map(|s| s.loss.to_bits())
        .collect();
    let mut on_exp = exp.clone();
    on_exp.method.meft.async_host_optim = true;
    let on_dir = dir.path().join("on");
    let (mut a, rx_a) = trainer(&on_exp, &on_dir);
    a.train_step().unwrap();
    a.train_step().unwrap();
    a.checkpoint().unwrap();
    let (_, path) = meft::checkpoint::latest(&on_dir.join("checkpoints")).unwrap();
    let (mut b, rx_b) = trainer(&on_exp, &on_dir);
    assert_eq!(b.restore(&path).unwrap(), 2);
    b.train_step().unwrap();
    b.train_step().unwrap();
    let got: Vec<u64> = step_events(&rx_a)
        .iter()
        .chain(&step_events(&rx_b))
        .map(|s| s.loss.to_bits())
        .collect();
    assert_eq!(got, want);
    assert_eq!(host_state(&mut b), host_state(&mut off));
}

#[test]
fn a_worker_that_fails_on_a_store_stops_the_layer_for_good() {
    let dev = Device::Cpu;
    let mut ad = two_layers(1);
    // Too few keys: the selection on the worker panics.
    let short = ad.layers[1].store.keys[..8].to_vec();
    ad.layers[1].store.keys = short.into();
    let u = Tensor::from_vec(
        meft::rng::normal_vec(&mut meft::rng::seeded(1), 3 * 8, 1.0),
        (1, 3, 8),
        &dev,
    )
    .unwrap();
    ad.ffn(0, &u).unwrap();
    let err = ad.ffn(1, &u).unwrap_err().to_string();
    assert!(err.contains("adapter layer 1"), "{err}");
    // The layer has its store back, and every later use fails: no pass
    // goes on with an empty one, and no checkpoint is written of it.
    assert_eq!(ad.layers[1].store.m, 64);
    assert!(ad.ffn(0, &u).is_err());
    assert!(ad.ffn(1, &u).is_err());
    assert!(ad.settle().is_err());
    let mut w = meft::checkpoint::CheckpointWriter::new();
    assert!(ad.save(&mut w).is_err());
}

/// A two-layer adapter with full routing over small random rows.
fn two_layers(pre_retrieval: usize) -> MeftAdapter {
    let shape = MeftShape {
        d: 8,
        neurons: 64,
        top_k: 4,
        experts: 1,
        probe: 1,
        routing: Routing::Full,
    };
    let mut ad = MeftAdapter::new(
        shape,
        &[0, 1],
        2,
        3,
        HostOptimizer::Lazy,
        MomentDtype::F32,
        &Device::Cpu,
    )
    .unwrap()
    .with_overlap(pre_retrieval, false);
    for (i, l) in ad.layers.iter_mut().enumerate() {
        l.store.keys =
            meft::rng::normal_vec(&mut meft::rng::seeded(10 + i as u64), 64 * 8, 0.5).into();
        l.store.values =
            meft::rng::normal_vec(&mut meft::rng::seeded(20 + i as u64), 64 * 8, 0.5).into();
    }
    ad.training = false;
    ad
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn pre_retrieval_picks_by_the_earlier_input_and_computes_with_its_own() {
    let dev = Device::Cpu;
    let u0v = meft::rng::normal_vec(&mut meft::rng::seeded(1), 3 * 8, 1.0);
    let u1v = meft::rng::normal_vec(&mut meft::rng::seeded(2), 3 * 8, 1.0);
    let u0 = Tensor::from_vec(u0v.clone(), (1, 3, 8), &dev).unwrap();
    let u1 = Tensor::from_vec(u1v.clone(), (1, 3, 8), &dev).unwrap();

    let mut ad = two_layers(1);
    let out0 = ad.ffn(0, &u0).unwrap().unwrap();
    let out1 = ad.ffn(1, &u1).unwrap().unwrap();

    // By hand: layer 1's rows are those the scores of u0 pick among its
    // keys; its output is u1 over those rows.
    let store1 = &ad.layers[1].store;
    let sel = select(store1, &ad.shape, &u0v, &[], &[]);
    assert_eq!(ad.layers[1].last_union(), sel.union.len());
    let u_len = sel.union.len();
    let kv = Tensor::from_vec(gather_kv(store1, &sel.union), (u_len, 16), &dev).unwrap();
    let map = Tensor::from_vec(sel.map.clone(), 3 * 4, &dev).unwrap();
    let want = device_output(
        &u1.reshape((3, 8)).unwrap(),
        &kv.narrow(1, 0, 8).unwrap(),
        &kv.narrow(1, 8, 8).unwrap(),
        &map,
        &Tensor::ones((3, 4), candle_core::DType::F32, &dev).unwrap(),
        4,
    )
    .unwrap();
    let (got, want) = (flat(&out1), flat(&want));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
    }
    // Had layer 1 picked by its own input, its rows would differ here.
    assert_ne!(select(store1, &ad.shape, &u1v, &[], &[]).union, sel.union);

    // Layer 0 has no earlier layer: it picks by its own input, as with
    // the knob off, bit for bit.
    let mut plain = two_layers(0);
    assert_eq!(flat(&out0), flat(&plain.ffn(0, &u0).unwrap().unwrap()));
    // And with the same input at both layers, nothing changes at all.
    let mut ad = two_layers(1);
    ad.ffn(0, &u0).unwrap();
    let early = flat(&ad.ffn(1, &u0).unwrap().unwrap());
    plain.ffn(0, &u0).unwrap();
    assert_eq!(early, flat(&plain.ffn(1, &u0).unwrap().unwrap()));
}

#[test]
fn a_forward_pass_that_stops_short_leaves_no_early_rows_for_the_next() {
    let dev = Device::Cpu;
    let u0 = Tensor::from_vec(
        meft::rng::normal_vec(&mut meft::rng::seeded(1), 3 * 8, 1.0),
        (1, 3, 8),
        &dev,
    )
    .unwrap();
    let u1 = Tensor::from_vec(
        meft::rng::normal_vec(&mut meft::rng::seeded(2), 3 * 8, 1.0),
        (1, 3, 8),
        &dev,
    )
    .unwrap();
    let mut ad = two_layers(1);
    // A pass that never reaches layer 1, then a whole one over u1: layer 1
    // picks by this pass's layer-0 input, not the stale one.
    ad.ffn(0, &u0).unwrap();
    ad.ffn(0, &u1).unwrap();
    let got = flat(&ad.ffn(1, &u1).unwrap().unwrap());
    let mut plain = two_layers(0);
    assert_eq!(got, flat(&plain.ffn(1, &u1).unwrap().unwrap()));
}

/// A headless run to its end: its step events and its summary.
fn run(exp: Experiment, dir: &std::path::Path) -> (Vec<StepEvent>, meft::event::Summary) {
    let events = all_events(meft::train::start(exp, dir.to_path_buf(), false).unwrap());
    let mut steps = Vec::new();
    let mut summary = None;
    for e in events {
        match e {
            Event::Step(s) => steps.push(s),
            Event::Finished { summary: s } => summary = Some(s),
            Event::Failed { .. } | Event::Diverged { .. } => panic!("{e:?}"),
            _ => {}
        }
    }
    (steps, summary.unwrap())
}

#[test]
fn pre_retrieval_trains_and_the_planner_counts_its_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = tiny(6);
    let (off, _) = run(exp.clone(), &dir.path().join("off"));
    exp.method.meft.pre_retrieval = 1;
    exp.method.meft.async_host_optim = true;
    let (on, summary) = run(exp, &dir.path().join("on"));
    assert_eq!(on.len(), 6);
    assert!(on[5].loss < on[0].loss, "{} → {}", on[0].loss, on[5].loss);
    // The first step's batches are the same: 4 layers' inputs cross with
    // the knob off; with p = 1 those of layers 0, 1 and 2 (for the
    // selections of layers 0–3), layer 3's never.
    let q = |s: &StepEvent| s.traffic[meft::event::Kind::Queries];
    assert_eq!(4 * q(&on[0]), 3 * q(&off[0]));
    assert_ne!(on[5].loss.to_bits(), off[5].loss.to_bits());
    let p = &summary.predicted;
    let close = |a: f64, b: f64| (a - b).abs() <= 0.01 * b.abs();
    assert!(
        close(p["d2h_per_step"], summary.d2h_per_step),
        "planned {} measured {}",
        p["d2h_per_step"],
        summary.d2h_per_step
    );
    assert!(close(p["h2d_per_step"], summary.h2d_per_step));
}
