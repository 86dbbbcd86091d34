//! The offloaded MEFT path equals the dense reference (all M keys, masks),
//! the Link counts exactly MEFT.md's closed form, and the host optimizer
//! behaves as specified.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use meft::adapter::meft::{HostOptimizer, HostStore, MeftAdapter, MeftShape, Routing};
use meft::adapter::reference::{DenseMeft, DenseMeftLayer};
use meft::model::{load_model, Hooks, Input, ModelRef};
use meft::optim::moments::MomentDtype;
use meft::optim::AdamWConfig;

fn randn(seed: u64, n: usize, std: f32) -> Vec<f32> {
    meft::rng::normal_vec(&mut meft::rng::seeded(seed), n, std)
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Build an offloaded adapter and its dense twin holding the same numbers.
fn twins(shape: &MeftShape, seed: u64) -> (MeftAdapter, DenseMeft) {
    let dev = Device::Cpu;
    let (m, d) = (shape.neurons, shape.d);
    let mut ad = MeftAdapter::new(
        shape.clone(),
        &[0],
        1,
        seed,
        HostOptimizer::Lazy,
        MomentDtype::F32,
        &dev,
    )
    .unwrap();
    let keys = randn(seed + 1, m * d, 0.5);
    let values = randn(seed + 2, m * d, 0.5);
    ad.layers[0].store.keys = keys.clone();
    ad.layers[0].store.values = values.clone();
    let router = match shape.routing {
        Routing::KeyExperts => {
            let g = randn(seed + 3, shape.experts * d, 0.5);
            let r = ad.layers[0].router.as_ref().unwrap();
            r.set(&Tensor::from_vec(g.clone(), (shape.experts, d), &dev).unwrap())
                .unwrap();
            Some(Var::from_vec(g, (shape.experts, d), &dev).unwrap())
        }
        Routing::Full => None,
    };
    let dense = DenseMeft {
        shape: shape.clone(),
        layers: vec![DenseMeftLayer {
            layer: 0,
            keys: Var::from_vec(keys, (m, d), &dev).unwrap(),
            values: Var::from_vec(values, (m, d), &dev).unwrap(),
            router,
        }],
    };
    (ad, dense)
}

#[test]
fn offloaded_layer_equals_dense_reference() {
    let dev = Device::Cpu;
    // (M, E, K, P, N, d, routing); the second keeps more than the 2·8
    // candidates its probed experts offer.
    let cases = [
        (64, 8, 4, 2, 6, 16, Routing::KeyExperts),
        (96, 12, 40, 2, 5, 8, Routing::KeyExperts),
        (128, 16, 8, 3, 10, 32, Routing::KeyExperts),
        (256, 64, 16, 8, 3, 12, Routing::KeyExperts),
        (64, 8, 6, 8, 7, 16, Routing::Full),
        (48, 6, 48, 6, 4, 8, Routing::Full),
    ];
    for (i, &(m, e, k, p, n, d, routing)) in cases.iter().enumerate() {
        let shape = MeftShape {
            d,
            neurons: m,
            top_k: k,
            experts: e,
            probe: p,
            routing,
        };
        let (mut ad, mut dense) = twins(&shape, 100 + i as u64);
        let qv = randn(7 + i as u64, n * d, 1.0);
        let w = Tensor::from_vec(randn(9 + i as u64, n * d, 1.0), (1, n, d), &dev).unwrap();
        let q1 = Var::from_vec(qv.clone(), (1, n, d), &dev).unwrap();
        let q2 = Var::from_vec(qv, (1, n, d), &dev).unwrap();

        let out1 = ad.ffn(0, q1.as_tensor()).unwrap().unwrap();
        let loss1 = (&out1 * &w).unwrap().sum_all().unwrap();
        let g1 = loss1.backward().unwrap();
        ad.collect_grads(&g1).unwrap();

        let out2 = dense.ffn(0, q2.as_tensor()).unwrap().unwrap();
        let loss2 = (&out2 * &w).unwrap().sum_all().unwrap();
        let g2 = loss2.backward().unwrap();

        let tag = format!("case {i} (M {m} E {e} K {k} P {p} N {n} {routing:?})");
        assert!(
            rel(&flat(&out1), &flat(&out2)) <= 1e-5,
            "{tag}: outputs differ"
        );
        let l = &dense.layers[0];
        let dk = flat(g2.get(l.keys.as_tensor()).unwrap());
        let dv = flat(g2.get(l.values.as_tensor()).unwrap());
        // Scatter the host accumulators into M × d to compare with the dense grads.
        let store = &ad.layers[0].store;
        let (mut hk, mut hv) = (vec![0f32; m * d], vec![0f32; m * d]);
        for r in 0..m {
            if let Some((gk, gv)) = store.accumulated(r) {
                hk[r * d..(r + 1) * d].copy_from_slice(gk);
                hv[r * d..(r + 1) * d].copy_from_slice(gv);
            }
        }
        assert!(dk.iter().any(|x| *x != 0.0), "{tag}: trivial key gradient");
        assert!(
            rel(&hk, &dk) <= 1e-5,
            "{tag}: key grads rel {}",
            rel(&hk, &dk)
        );
        assert!(
            rel(&hv, &dv) <= 1e-5,
            "{tag}: value grads rel {}",
            rel(&hv, &dv)
        );
        if let (Some(r1), Some(r2)) = (&ad.layers[0].router, &l.router) {
            let a = flat(g1.get(r1.as_tensor()).unwrap());
            let b = flat(g2.get(r2.as_tensor()).unwrap());
            assert!(
                rel(&a, &b) <= 1e-5,
                "{tag}: router grads rel {}",
                rel(&a, &b)
            );
        }
        let a = flat(g1.get(q1.as_tensor()).unwrap());
        let b = flat(g2.get(q2.as_tensor()).unwrap());
        assert!(
            rel(&a, &b) <= 1e-5,
            "{tag}: input grads rel {}",
            rel(&a, &b)
        );
    }
}

#[test]
fn whole_tiny_model_same_loss_and_row_gradients() {
    let dev = Device::Cpu;
    let loaded = load_model(&ModelRef::TinyRandom, &dev).unwrap();
    let model = &loaded.model;
    let d = model.config.hidden_size;
    let shape = MeftShape {
        d,
        neurons: 256,
        top_k: 8,
        experts: 16,
        probe: 4,
        routing: Routing::KeyExperts,
    };
    let layers = [1usize, 3];
    let mut ad = MeftAdapter::new(
        shape.clone(),
        &layers,
        4,
        5,
        HostOptimizer::Lazy,
        MomentDtype::F32,
        &dev,
    )
    .unwrap();
    let mut dense_layers = Vec::new();
    for (slot, &l) in layers.iter().enumerate() {
        // Non-zero values so the adapter changes the loss.
        let values = randn(40 + l as u64, 256 * d, 0.05);
        ad.layers[slot].store.values = values.clone();
        let keys = ad.layers[slot].store.keys.clone();
        let router = ad.layers[slot]
            .router
            .as_ref()
            .unwrap()
            .as_tensor()
            .copy()
            .unwrap();
        dense_layers.push(DenseMeftLayer {
            layer: l,
            keys: Var::from_vec(keys, (256, d), &dev).unwrap(),
            values: Var::from_vec(values, (256, d), &dev).unwrap(),
            router: Some(Var::from_tensor(&router).unwrap()),
        });
    }
    let mut dense = DenseMeft {
        shape,
        layers: dense_layers,
    };
    let tok = &loaded.tokenizer;
    let ids = tok
        .encode("Q: what town is Gifil Kutax from\nA: Gefuvale")
        .unwrap();
    let mask = vec![1u8; ids.len()];
    let input = Input {
        ids: &ids,
        pad_mask: &mask,
        batch: 1,
        seq: ids.len(),
    };
    let targets = Tensor::new(&ids[1..], &dev).unwrap();
    let loss_of = |hooks: &mut dyn Hooks| {
        let logits = model.forward(&input, None, hooks, false).unwrap();
        let logits = logits
            .squeeze(0)
            .unwrap()
            .narrow(0, 0, ids.len() - 1)
            .unwrap();
        candle_nn::loss::cross_entropy(&logits, &targets).unwrap()
    };
    let l1 = loss_of(&mut ad);
    let g1 = l1.backward().unwrap();
    ad.collect_grads(&g1).unwrap();
    let l2 = loss_of(&mut dense);
    let g2 = l2.backward().unwrap();
    let (a, b) = (
        l1.to_scalar::<f32>().unwrap(),
        l2.to_scalar::<f32>().unwrap(),
    );
    eprintln!("tiny model loss: offloaded {a} dense {b}");
    assert!(((a - b) / b).abs() <= 1e-5);
    for (slot, l) in dense.layers.iter().enumerate() {
        let store = &ad.layers[slot].store;
        let dk = flat(g2.get(l.keys.as_tensor()).unwrap());
        let dv = flat(g2.get(l.values.as_tensor()).unwrap());
        let (mut hk, mut hv) = (vec![0f32; 256 * d], vec![0f32; 256 * d]);
        for r in 0..256 {
            if let Some((gk, gv)) = store.accumulated(r) {
                hk[r * d..(r + 1) * d].copy_from_slice(gk);
                hv[r * d..(r + 1) * d].copy_from_slice(gv);
            }
        }
        assert!(
            rel(&hk, &dk) <= 1e-5,
            "layer {}: keys rel {}",
            l.layer,
            rel(&hk, &dk)
        );
        assert!(
            rel(&hv, &dv) <= 1e-5,
            "layer {}: values rel {}",
            l.layer,
            rel(&hv, &dv)
        );
    }
}

#[test]
fn link_counts_the_closed_form() {
    // M 16 in E 4 experts of 4 keys, P 4 probed, K 16: every token keeps all
    // 16 neurons, so |U| = 16 and no slot is empty. N 6 tokens, d 8.
    let dev = Device::Cpu;
    let shape = MeftShape {
        d: 8,
        neurons: 16,
        top_k: 16,
        experts: 4,
        probe: 4,
        routing: Routing::KeyExperts,
    };
    let (mut ad, _) = twins(&shape, 1);
    let q = Tensor::from_vec(randn(2, 6 * 8, 1.0), (1, 6, 8), &dev).unwrap();
    let out = ad.ffn(0, &q).unwrap().unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    ad.collect_grads(&g).unwrap();
    let t = ad.link.take();
    let t = &t[0];
    assert_eq!(ad.union_log, vec![(16, 96)]);
    assert_eq!(t[meft::event::Kind::Queries], 6 * 8 * 4); // N·d f32 = 192
    assert_eq!(t[meft::event::Kind::Routing], 6 * 4 * 4 + 6 * 4 * 4); // N·P ids + N·P gates = 192
    assert_eq!(t[meft::event::Kind::Rows], 16 * 2 * 8 * 4); // |U|·2d f32 = 1024
    assert_eq!(t[meft::event::Kind::Ids], 16 * 4); // |U| u32 = 64
    assert_eq!(t[meft::event::Kind::Map], 6 * 16 * 4); // N·K u32 = 384
    assert_eq!(t[meft::event::Kind::Grads], 16 * 2 * 8 * 4); // |U|·2d f32 = 1024
    assert_eq!(t.h2d(), 1024 + 64 + 384);
    assert_eq!(t.d2h(), 192 + 192 + 1024);
}

#[test]
fn lazy_and_dense_host_adamw_agree_when_every_row_is_touched() {
    let (m, d) = (5, 3);
    let init = randn(1, m * d, 1.0);
    let mut lazy = HostStore::new(m, d, init.clone(), init.clone());
    let mut dense = HostStore::new(m, d, init.clone(), init.clone());
    let cfg = AdamWConfig::default();
    let rows: Vec<u32> = (0..m as u32).collect();
    for step in 0..3 {
        let g = randn(10 + step, m * 2 * d, 1.0);
        lazy.accumulate(&rows, g.clone());
        dense.accumulate(&rows, g);
        assert_eq!(lazy.step(HostOptimizer::Lazy, 0.01, 1.0, &cfg), m);
        assert_eq!(dense.step(HostOptimizer::Dense, 0.01, 1.0, &cfg), m);
    }
    assert_eq!(lazy.keys, dense.keys);
    assert_eq!(lazy.values, dense.values);
    assert_ne!(lazy.keys, init);
}

#[test]
fn lazy_host_adamw_touches_only_the_union() {
    let (m, d) = (6, 2);
    let init = randn(3, m * d, 1.0);
    let mut store = HostStore::new(m, d, init.clone(), init.clone());
    store.accumulate(&[1, 4], vec![1.0; 8]);
    store.accumulate(&[4], vec![1.0; 4]);
    // Row 4 was accumulated twice: its key gradient is 2, row 1's is 1.
    assert_eq!(
        store.accumulated(4).map(|g| g.0.to_vec()),
        Some(vec![2.0; 2])
    );
    assert_eq!(
        store.accumulated(1).map(|g| g.1.to_vec()),
        Some(vec![1.0; 2])
    );
    assert_eq!(store.accumulator_bytes(), 2 * 2 * 2 * 4);
    assert_eq!(store.touched(), &[1, 4]);
    let updated = store.step(HostOptimizer::Lazy, 0.1, 1.0, &AdamWConfig::default());
    assert_eq!(updated, 2);
    assert_eq!(store.rows_with_moments(), 2);
    for r in 0..m {
        let same = store.keys[r * d..(r + 1) * d] == init[r * d..(r + 1) * d];
        assert_eq!(same, r != 1 && r != 4, "row {r}");
    }
    // Adam's first step moves each touched weight by lr (gradient sign +).
    assert!((store.keys[2] - (init[2] - 0.1)).abs() < 1e-5);
    // Dense moves every row, including the untouched ones once they have momentum.
    let mut dense = HostStore::new(m, d, init.clone(), init.clone());
    assert_eq!(
        dense.step(HostOptimizer::Dense, 0.1, 1.0, &AdamWConfig::default()),
        m
    );
    let _ = DType::F32;
}

#[test]
fn fused_kernel_equals_composed_ops() {
    use meft::adapter::meft::{device_output, fused_output};
    let dev = Device::Cpu;
    let (n, k, u, d) = (7, 5, 9, 6);
    let q = Var::from_vec(randn(1, n * d, 1.0), (n, d), &dev).unwrap();
    let kv = Var::from_vec(randn(2, u * 2 * d, 1.0), (u, 2 * d), &dev).unwrap();
    let g = Var::from_vec(randn(3, n * k, 1.0), (n, k), &dev).unwrap();
    // Slot value u marks an empty slot.
    let map: Vec<u32> = (0..n * k).map(|i| ((i * 7 + 3) % (u + 1)) as u32).collect();
    let w = Tensor::from_vec(randn(4, n * d, 1.0), (n, d), &dev).unwrap();
    let fused = fused_output(
        q.as_tensor(),
        kv.as_tensor(),
        g.as_tensor(),
        std::sync::Arc::new(map.clone()),
        k,
    )
    .unwrap();
    let gf = (&fused * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let q2 = Var::from_tensor(q.as_tensor()).unwrap();
    let kv2 = Var::from_tensor(kv.as_tensor()).unwrap();
    let g2 = Var::from_tensor(g.as_tensor()).unwrap();
    let map_t = Tensor::from_vec(map, n * k, &dev).unwrap();
    let rk = kv2.as_tensor().narrow(1, 0, d).unwrap();
    let rv = kv2.as_tensor().narrow(1, d, d).unwrap();
    let composed = device_output(q2.as_tensor(), &rk, &rv, &map_t, g2.as_tensor(), k).unwrap();
    let gc = (&composed * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(rel(&flat(&fused), &flat(&composed)) <= 1e-6);
    for (a, b, what) in [(&q, &q2, "q"), (&kv, &kv2, "rows"), (&g, &g2, "gates")] {
        let x = flat(gf.get(a.as_tensor()).unwrap());
        let y = flat(gc.get(b.as_tensor()).unwrap());
        assert!(x.iter().any(|v| *v != 0.0), "{what}: trivial gradient");
        assert!(rel(&x, &y) <= 1e-6, "{what}: rel {}", rel(&x, &y));
    }
}

#[test]
fn composed_path_builds_nothing_of_size_n_k_d() {
    use meft::adapter::meft::device_output_traced;
    let dev = Device::Cpu;
    let (n, k, u, d) = (16, 8, 10, 12);
    let q = Tensor::from_vec(randn(1, n * d, 1.0), (n, d), &dev).unwrap();
    let rk = Tensor::from_vec(randn(2, u * d, 1.0), (u, d), &dev).unwrap();
    let rv = Tensor::from_vec(randn(3, u * d, 1.0), (u, d), &dev).unwrap();
    let g = Tensor::from_vec(randn(4, n * k, 1.0), (n, k), &dev).unwrap();
    let map: Vec<u32> = (0..n * k).map(|i| ((i * 7 + 3) % (u + 1)) as u32).collect();
    let map = Tensor::from_vec(map, n * k, &dev).unwrap();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    let out =
        device_output_traced(&q, &rk, &rv, &map, &g, k, &mut |s| shapes.push(s.to_vec())).unwrap();
    assert_eq!(out.dims(), &[n, d]);
    assert!(shapes.len() >= 8, "{shapes:?}");
    // Last comes the N × d output; before it, the largest thing built is
    // the N × |U| score matrix: 16 × 10. No copy of the rows (|U| × d) is made.
    let (last, inner) = shapes.split_last().unwrap();
    assert_eq!(last, &[n, d]);
    let largest = inner.iter().map(|s| s.iter().product::<usize>()).max();
    assert_eq!(largest, Some(160), "{shapes:?}");
    assert!(
        !inner.iter().any(|s| s == &[u, d] || s == &[u + 1, d]),
        "{shapes:?}"
    );
    assert!(shapes
        .iter()
        .all(|s| s.iter().product::<usize>() < n * k * d));
}

#[test]
fn decoding_keeps_no_state_per_forward_pass() {
    use meft::model::generate::{generate, GenerateOptions};
    let dev = Device::Cpu;
    let loaded = load_model(&ModelRef::TinyRandom, &dev).unwrap();
    let model = &loaded.model;
    let shape = MeftShape {
        d: model.config.hidden_size,
        neurons: 256,
        top_k: 8,
        experts: 16,
        probe: 4,
        routing: Routing::KeyExperts,
    };
    let mut ad = MeftAdapter::new(
        shape,
        &[0, 1, 2, 3],
        4,
        5,
        HostOptimizer::Lazy,
        MomentDtype::F32,
        &dev,
    )
    .unwrap();
    let prompts = vec![vec![1u32, 40, 41, 42], vec![1u32, 50, 51]];
    let opts = |beams| GenerateOptions {
        max_new_tokens: 12,
        beams,
        repetition_penalty: 1.0,
    };
    // A training forward keeps one entry per adapter layer for its backward.
    let input = Input {
        ids: &[1, 40, 41, 42],
        pad_mask: &[1, 1, 1, 1],
        batch: 1,
        seq: 4,
    };
    model.forward(&input, None, &mut ad, false).unwrap();
    assert_eq!(ad.pending_len(), 4);
    assert_eq!(ad.union_log.len(), 4);
    ad.discard_pending().unwrap();
    ad.union_log.clear();
    // Evaluation: 12 new tokens greedily, then with 3 beams, keep nothing.
    ad.training = false;
    for beams in [1, 3] {
        let out = generate(model, &prompts, &opts(beams), &[], 0, &mut ad).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 12);
        assert_eq!(ad.pending_len(), 0);
        assert!(ad.union_log.is_empty());
    }
}
