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

/// Build an offloaded adapter and its dense twin holding the same numbers,
/// the offloaded one on a device path: the composed kernel or the fused
/// one, rows on the device in `row_dtype`.
fn twins_on(
    shape: &MeftShape,
    seed: u64,
    composed: bool,
    row_dtype: DType,
) -> (MeftAdapter, DenseMeft) {
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
    .unwrap()
    .with_device_path(composed, row_dtype)
    .unwrap();
    let keys = randn(seed + 1, m * d, 0.5);
    let values = randn(seed + 2, m * d, 0.5);
    ad.layers[0].store.keys = keys.clone().into();
    ad.layers[0].store.values = values.clone().into();
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

/// M 256 in 16 experts of 16 keys, K 8, P 4, at width `d`.
fn small_shape(d: usize) -> MeftShape {
    MeftShape {
        d,
        neurons: 256,
        top_k: 8,
        experts: 16,
        probe: 4,
        routing: Routing::KeyExperts,
    }
}

/// An adapter over `layers` of the 4-layer tiny model (seed 5, lazy f32
/// host moments) on a device path.
fn tiny_adapter(shape: MeftShape, layers: &[usize], composed: bool, dtype: DType) -> MeftAdapter {
    MeftAdapter::new(
        shape,
        layers,
        4,
        5,
        HostOptimizer::Lazy,
        MomentDtype::F32,
        &Device::Cpu,
    )
    .unwrap()
    .with_device_path(composed, dtype)
    .unwrap()
}

#[test]
fn offloaded_layer_equals_dense_reference() {
    // The fused CPU kernel and the composed (GPU) path in f32 within 1e-5;
    // rows and the adapter's compute in bf16 or f16 within 1e-2.
    for (composed, dtype, tol) in [
        (false, DType::F32, 1e-5),
        (true, DType::F32, 1e-5),
        (true, DType::BF16, 1e-2),
        (true, DType::F16, 1e-2),
        (false, DType::BF16, 1e-2),
    ] {
        offloaded_layer_matches(composed, dtype, tol);
    }
}

fn offloaded_layer_matches(composed: bool, dtype: DType, tol: f64) {
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
        let (mut ad, mut dense) = twins_on(&shape, 100 + i as u64, composed, dtype);
        let qv = randn(7 + i as u64, n * d, 1.0);
        let w = Tensor::from_vec(randn(9 + i as u64, n * d, 1.0), (1, n, d), &dev).unwrap();
        let q1 = Var::from_vec(qv.clone(), (1, n, d), &dev).unwrap();
        let q2 = Var::from_vec(qv, (1, n, d), &dev).unwrap();

        let out1 = ad.ffn(0, q1.as_tensor()).unwrap().unwrap();
        let loss1 = (&out1 * &w).unwrap().sum_all().unwrap();
        let g1 = loss1.backward().unwrap();
        ad.collect_grads().unwrap();

        let out2 = dense.ffn(0, q2.as_tensor()).unwrap().unwrap();
        let loss2 = (&out2 * &w).unwrap().sum_all().unwrap();
        let g2 = loss2.backward().unwrap();

        let path = if composed { "composed" } else { "fused" };
        let tag = format!("case {i} (M {m} E {e} K {k} P {p} N {n} {routing:?}, {path} {dtype:?})");
        assert!(
            rel(&flat(&out1), &flat(&out2)) <= tol,
            "{tag}: outputs differ by {}",
            rel(&flat(&out1), &flat(&out2))
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
            rel(&hk, &dk) <= tol,
            "{tag}: key grads rel {}",
            rel(&hk, &dk)
        );
        assert!(
            rel(&hv, &dv) <= tol,
            "{tag}: value grads rel {}",
            rel(&hv, &dv)
        );
        if let (Some(r1), Some(r2)) = (&ad.layers[0].router, &l.router) {
            let a = flat(g1.get(r1.as_tensor()).unwrap());
            let b = flat(g2.get(r2.as_tensor()).unwrap());
            assert!(
                rel(&a, &b) <= tol,
                "{tag}: router grads rel {}",
                rel(&a, &b)
            );
        }
        let a = flat(g1.get(q1.as_tensor()).unwrap());
        let b = flat(g2.get(q2.as_tensor()).unwrap());
        assert!(rel(&a, &b) <= tol, "{tag}: input grads rel {}", rel(&a, &b));
    }
}

#[test]
fn whole_tiny_model_same_loss_and_row_gradients() {
    // Through the whole model's backward pass, each layer's row gradients
    // streamed to the host as that layer's backward makes them. Rows in
    // half precision: f16 (10 mantissa bits), and bf16 rows under the fused
    // kernel's f32 compute, within 1e-2. With the compute in bf16 too
    // (8 bits) the adapter's outputs round at 2^-9 and the key gradients
    // (sums of v·δ with much cancellation) come within 5e-2; one layer on
    // its own holds 1e-2 (offloaded_layer_equals_dense_reference).
    for (composed, dtype, tol) in [
        (false, DType::F32, 1e-5),
        (true, DType::F32, 1e-5),
        (true, DType::F16, 1e-2),
        (false, DType::BF16, 1e-2),
        (true, DType::BF16, 5e-2),
    ] {
        whole_tiny_model_matches(composed, dtype, tol);
    }
}

fn whole_tiny_model_matches(composed: bool, dtype: DType, tol: f64) {
    let dev = Device::Cpu;
    let loaded = load_model(&ModelRef::TinyRandom, &dev).unwrap();
    let model = &loaded.model;
    let d = model.config.hidden_size;
    let shape = small_shape(d);
    let layers = [1usize, 3];
    let mut ad = tiny_adapter(shape.clone(), &layers, composed, dtype);
    let mut dense_layers = Vec::new();
    for (slot, &l) in layers.iter().enumerate() {
        // Non-zero values so the adapter changes the loss.
        let values = randn(40 + l as u64, 256 * d, 0.05);
        ad.layers[slot].store.values = values.clone().into();
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
            keys: Var::from_vec(keys.to_vec(), (256, d), &dev).unwrap(),
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
    let _grads = l1.backward().unwrap();
    ad.collect_grads().unwrap();
    let l2 = loss_of(&mut dense);
    let g2 = l2.backward().unwrap();
    let (a, b) = (
        l1.to_scalar::<f32>().unwrap(),
        l2.to_scalar::<f32>().unwrap(),
    );
    eprintln!("tiny model loss ({dtype:?}, composed {composed}): offloaded {a} dense {b}");
    assert!(((a - b) / b).abs() as f64 <= tol);
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
        assert!(dv.iter().any(|x| *x != 0.0), "layer {}: trivial", l.layer);
        assert!(
            rel(&hk, &dk) <= tol,
            "layer {}: keys rel {}",
            l.layer,
            rel(&hk, &dk)
        );
        assert!(
            rel(&hv, &dv) <= tol,
            "layer {}: values rel {}",
            l.layer,
            rel(&hv, &dv)
        );
    }
}

#[test]
fn link_counts_the_closed_form() {
    // M 16 in E 4 experts of 4 keys, P 4 probed, K 16: every token keeps all
    // 16 neurons, so |U| = 16 and no slot is empty. N 6 tokens, d 8. On
    // either kernel, with the rows and their gradients in f32 (b = 4) or in
    // bf16 (b = 2); queries, routing, ids and the map do not change.
    use meft::event::Kind;
    let dev = Device::Cpu;
    let shape = MeftShape {
        d: 8,
        neurons: 16,
        top_k: 16,
        experts: 4,
        probe: 4,
        routing: Routing::KeyExperts,
    };
    for (composed, dtype) in [
        (false, DType::F32),
        (true, DType::F32),
        (false, DType::BF16),
        (true, DType::BF16),
    ] {
        let tag = format!("composed {composed} {dtype:?}");
        let b = dtype.size_in_bytes() as u64;
        let (mut ad, _) = twins_on(&shape, 1, composed, dtype);
        let q = Tensor::from_vec(randn(2, 6 * 8, 1.0), (1, 6, 8), &dev).unwrap();
        let out = ad.ffn(0, &q).unwrap().unwrap();
        let _grads = out.sum_all().unwrap().backward().unwrap();
        ad.collect_grads().unwrap();
        let t = &ad.link.take()[0];
        assert_eq!(ad.union_log, vec![(0, 16, 96)], "{tag}");
        assert_eq!(t[Kind::Queries], 6 * 8 * 4, "{tag}"); // N·d f32 = 192
        assert_eq!(t[Kind::Routing], 6 * 4 * 4 + 6 * 4 * 4, "{tag}"); // N·P ids + N·P gates = 192
        assert_eq!(t[Kind::Rows], 16 * 2 * 8 * b, "{tag}"); // |U|·2d·b: 1024 in f32, 512 in bf16
        assert_eq!(t[Kind::Ids], 16 * 4, "{tag}"); // |U| u32 = 64
        assert_eq!(t[Kind::Map], 6 * 16 * 4, "{tag}"); // N·K u32 = 384
        assert_eq!(t[Kind::Grads], 16 * 2 * 8 * b, "{tag}"); // |U|·2d·b
        assert_eq!(t.h2d(), 16 * 2 * 8 * b + 64 + 384, "{tag}");
        assert_eq!(t.d2h(), 192 + 192 + 16 * 2 * 8 * b, "{tag}");
        if dtype == DType::BF16 {
            // The accumulated gradients are bf16 values, widened.
            let (gk, gv) = ad.layers[0].store.accumulated(3).unwrap();
            let g: Vec<f32> = gk.iter().chain(gv).copied().collect();
            assert!(g.iter().any(|x| *x != 0.0), "{tag}");
            let t = Tensor::new(g.as_slice(), &dev).unwrap();
            let rounded = flat(
                &t.to_dtype(DType::BF16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap(),
            );
            assert_eq!(rounded, g, "{tag}");
        }
    }
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
        lazy.accumulate(&rows, g.clone()).unwrap();
        dense.accumulate(&rows, g).unwrap();
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
    store.accumulate(&[1, 4], vec![1.0; 8]).unwrap();
    store.accumulate(&[4], vec![1.0; 4]).unwrap();
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
    // Gradients of the wrong size, or for a row the store does not have,
    // are refused and change nothing.
    assert!(store.accumulate(&[2], vec![1.0; 3]).is_err());
    assert!(store.accumulate(&[6], vec![1.0; 4]).is_err());
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
    // Dense steps every row: a row touched once keeps moving by its
    // momentum in a step that does not touch it, where lazy leaves it; a
    // row never touched has no momentum and stays where it was.
    let cfg = AdamWConfig::default();
    let mut lazy = HostStore::new(m, d, init.clone(), init.clone());
    let mut dense = HostStore::new(m, d, init.clone(), init.clone());
    for s in [&mut lazy, &mut dense] {
        s.accumulate(&[1, 4], vec![1.0; 8]).unwrap();
    }
    assert_eq!(lazy.step(HostOptimizer::Lazy, 0.1, 1.0, &cfg), 2);
    assert_eq!(dense.step(HostOptimizer::Dense, 0.1, 1.0, &cfg), m);
    assert_eq!(lazy.keys, dense.keys);
    let after_one = dense.keys.clone();
    for s in [&mut lazy, &mut dense] {
        s.accumulate(&[1], vec![1.0; 4]).unwrap();
    }
    assert_eq!(lazy.step(HostOptimizer::Lazy, 0.1, 1.0, &cfg), 1);
    assert_eq!(dense.step(HostOptimizer::Dense, 0.1, 1.0, &cfg), m);
    let row = |v: &[f32], r: usize| v[r * d..(r + 1) * d].to_vec();
    // Row 4, untouched in step 2: lazy leaves it, dense moves it on (Adam
    // with g = 0: m = 0.09, v ≈ 0.000999; the step is −lr·m̂/√v̂ with
    // m̂ = 0.09/0.19, v̂ = 0.000999/0.001999: about −0.067).
    assert_eq!(row(&lazy.keys, 4), row(&after_one, 4));
    for (now, before) in row(&dense.keys, 4).iter().zip(row(&after_one, 4)) {
        let moved = now - before;
        assert!((moved + 0.067).abs() < 1e-3, "row 4 moved by {moved}");
    }
    // Row 0, never touched: where it started, under both.
    assert_eq!(row(&dense.keys, 0), row(&init, 0));
    assert_eq!(row(&lazy.keys, 0), row(&init, 0));
    let _ = DType::F32;
}

#[test]
fn global_bias_correction_corrects_a_late_row_by_the_run_step() {
    // Row 1 is touched at step 1, row 4 first at step 2, both with
    // gradient 1. Row bias correction treats row 4's first update as a first
    // step (it moves by lr); global correction uses step 2: m = 0.1,
    // v = 0.001, m̂ = 0.1 / (1 − 0.9²) = 0.5263, v̂ = 0.001 / (1 − 0.999²)
    // = 0.50025, so it moves by 0.1 × 0.5263 / √0.50025 = 0.07441.
    let (m, d) = (6, 2);
    let init = vec![0.0f32; m * d];
    let moved = |global: bool| {
        let mut s = HostStore::new(m, d, init.clone(), init.clone());
        for (t, row) in [(1u64, 1u32), (2, 4)] {
            s.accumulate(&[row], vec![1.0; 4]).unwrap();
            let cfg = AdamWConfig {
                global_step: global.then_some(t),
                ..AdamWConfig::default()
            };
            assert_eq!(s.step(HostOptimizer::Lazy, 0.1, 1.0, &cfg), 1);
        }
        (s.keys[4 * d], s.keys[d])
    };
    let (row4, row1) = moved(false);
    assert!((row4 + 0.1).abs() < 1e-6, "{row4}");
    assert!((row1 + 0.1).abs() < 1e-6, "{row1}");
    let (row4, row1) = moved(true);
    assert!((row4 + 0.07441).abs() < 1e-5, "{row4}");
    // Row 1's single update was at step 1 under both.
    assert!((row1 + 0.1).abs() < 1e-6, "{row1}");
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
fn composed_gradients_written_out_equal_autograd() {
    use meft::adapter::meft::{device_output, device_output_grads};
    let dev = Device::Cpu;
    let (n, k, u, d) = (7, 5, 9, 6);
    let q = Var::from_vec(randn(1, n * d, 1.0), (n, d), &dev).unwrap();
    let kv = Var::from_vec(randn(2, u * 2 * d, 1.0), (u, 2 * d), &dev).unwrap();
    let g = Var::from_vec(randn(3, n * k, 1.0), (n, k), &dev).unwrap();
    // Slot value u marks an empty slot.
    let map: Vec<u32> = (0..n * k).map(|i| ((i * 7 + 3) % (u + 1)) as u32).collect();
    let map = Tensor::from_vec(map, n * k, &dev).unwrap();
    let w = Tensor::from_vec(randn(4, n * d, 1.0), (n, d), &dev).unwrap();
    let rk = kv.as_tensor().narrow(1, 0, d).unwrap();
    let rv = kv.as_tensor().narrow(1, d, d).unwrap();
    let out = device_output(q.as_tensor(), &rk, &rv, &map, g.as_tensor(), k).unwrap();
    let auto = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let want = [q.as_tensor(), kv.as_tensor(), g.as_tensor()].map(|t| flat(auto.get(t).unwrap()));
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 1e-2), (DType::F16, 1e-2)] {
        let c = |t: &Tensor| t.to_dtype(dtype).unwrap();
        let (dq, dg, drows) = device_output_grads(
            &c(q.as_tensor()),
            &c(kv.as_tensor()),
            &map,
            &c(g.as_tensor()),
            &c(&w),
            k,
        )
        .unwrap();
        let got = [dq, drows, dg].map(|t| flat(&t.to_dtype(DType::F32).unwrap()));
        for ((x, y), what) in got.iter().zip(&want).zip(["q", "rows", "gates"]) {
            assert!(y.iter().any(|v| *v != 0.0), "{what}: trivial gradient");
            assert!(rel(x, y) <= tol, "{what} {dtype:?}: rel {}", rel(x, y));
        }
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
    assert!(shapes.len() >= 7, "{shapes:?}");
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
    let shape = small_shape(model.config.hidden_size);
    let mut ad = tiny_adapter(shape, &[0, 1, 2, 3], false, DType::F32);
    let prompts = vec![vec![1u32, 40, 41, 42], vec![1u32, 50, 51]];
    let opts = |beams| GenerateOptions {
        max_new_tokens: 12,
        beams,
        ..Default::default()
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

#[test]
fn full_routing_in_the_first_layer_still_gets_row_gradients() {
    // With no router and the adapter in layer 0 alone, nothing before the
    // kernel depends on a trainable value: its node must still be in the
    // graph, or the rows would never get a gradient.
    let dev = Device::Cpu;
    let loaded = load_model(&ModelRef::TinyRandom, &dev).unwrap();
    let model = &loaded.model;
    let shape = MeftShape {
        d: model.config.hidden_size,
        neurons: 64,
        top_k: 8,
        experts: 8,
        probe: 8,
        routing: Routing::Full,
    };
    for composed in [false, true] {
        let mut ad = tiny_adapter(shape.clone(), &[0], composed, DType::F32);
        let ids = [1u32, 40, 41, 42, 43];
        let input = Input {
            ids: &ids,
            pad_mask: &[1; 5],
            batch: 1,
            seq: 5,
        };
        let logits = model.forward(&input, None, &mut ad, false).unwrap();
        logits.sum_all().unwrap().backward().unwrap();
        ad.collect_grads().unwrap();
        let store = &ad.layers[0].store;
        let touched = store.touched().to_vec();
        assert!(!touched.is_empty());
        // Values start at 0, so the keys' gradient is 0; the values' is not.
        let value_grad: f32 = touched
            .iter()
            .map(|&r| {
                store
                    .accumulated(r as usize)
                    .unwrap()
                    .1
                    .iter()
                    .map(|g| g.abs())
                    .sum::<f32>()
            })
            .sum();
        assert!(value_grad > 0.0, "composed {composed}: no value gradient");
    }
}

#[test]
fn step_statistics_land_on_their_layer_whatever_the_order() {
    // Layers listed out of model order: slot 0 is layer 3, slot 1 layer 1,
    // while the forward pass reaches layer 1 first.
    let dev = Device::Cpu;
    let loaded = load_model(&ModelRef::TinyRandom, &dev).unwrap();
    let model = &loaded.model;
    let shape = small_shape(model.config.hidden_size);
    let mut ad = tiny_adapter(shape, &[3, 1], false, DType::F32);
    let ids = [1u32, 40, 41, 42, 43, 44, 45, 46];
    let input = Input {
        ids: &ids,
        pad_mask: &[1; 8],
        batch: 1,
        seq: 8,
    };
    model.forward(&input, None, &mut ad, false).unwrap();
    let own: Vec<u64> = ad.layers.iter().map(|l| l.last_union() as u64).collect();
    assert_ne!(
        own[0], own[1],
        "the two layers' unions must differ for this test to tell"
    );
    let stats = ad.take_step_stats();
    assert_eq!(stats.unions, own);
    assert_eq!(stats.peak_unions, own);
    assert_eq!(stats.picks, vec![8 * 8, 8 * 8]);
}
