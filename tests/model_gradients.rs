//! Gradients through the base reach an adapter at the hook, exactly, and no
//! base weight ever receives one.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use meft::model::{load_model, Hooks, Model, ModelRef};

/// A small dense adapter at one layer's FFN hook: SiLU(u·Kᵀ)·V.
struct DenseAt {
    layer: usize,
    keys: Var,
    values: Var,
}

impl Hooks for DenseAt {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        if layer != self.layer {
            return Ok(None);
        }
        let a = u.broadcast_matmul(&self.keys.as_tensor().t()?)?.silu()?;
        Ok(Some(a.broadcast_matmul(self.values.as_tensor())?))
    }
}

fn loss(model: &Model, hooks: &mut DenseAt, ids: &[u32], weights: &Tensor) -> Result<Tensor> {
    (common::row_forward_with(model, hooks, ids, false) * weights)?.sum_all()
}

#[test]
fn finite_differences_through_three_layers_into_the_hook() {
    let dev = Device::Cpu;
    let loaded = load_model(&ModelRef::TinyRandom, &dev).unwrap();
    let model = loaded.model.to_dtype(DType::F64).unwrap();
    let d = model.config.hidden_size;
    let m = 6;
    let ids = loaded.tokenizer.encode("Marsk 1874").unwrap();
    let mut rng = meft::rng::seeded(3);
    let kv = |rng: &mut meft::rng::SeededRng| {
        let v: Vec<f64> = meft::rng::normal_vec(rng, m * d, 0.5)
            .into_iter()
            .map(f64::from)
            .collect();
        Var::from_vec(v, (m, d), &dev).unwrap()
    };
    let keys = kv(&mut rng);
    let values = kv(&mut rng);
    let v = model.config.vocab_size;
    let w: Vec<f64> = meft::rng::normal_vec(&mut rng, ids.len() * v, 1.0)
        .into_iter()
        .map(f64::from)
        .collect();
    let weights = Tensor::from_vec(w, (1, ids.len(), v), &dev).unwrap();
    // Layer 0: the gradient must pass back through layers 3, 2 and 1 whole.
    let mut hook = DenseAt {
        layer: 0,
        keys: keys.clone(),
        values: values.clone(),
    };
    let l = loss(&model, &mut hook, &ids, &weights).unwrap();
    let grads = l.backward().unwrap();
    for (name, t) in model.named_tensors() {
        assert!(
            grads.get(&t).is_none(),
            "base weight {name} received a gradient"
        );
    }
    let gk: Vec<f64> = grads
        .get(keys.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let gv: Vec<f64> = grads
        .get(values.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();

    let h = 1e-5;
    let mut num = 0f64;
    let mut den = 0f64;
    for (var, analytic) in [(&keys, &gk), (&values, &gv)] {
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for idx in (0..base.len()).step_by(97).take(8) {
            let eval = |delta: f64| {
                let mut p = base.clone();
                p[idx] += delta;
                var.set(&Tensor::from_vec(p, (m, d), &dev).unwrap())
                    .unwrap();
                let mut hk = DenseAt {
                    layer: 0,
                    keys: keys.clone(),
                    values: values.clone(),
                };
                loss(&model, &mut hk, &ids, &weights)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), (m, d), &dev).unwrap())
                .unwrap();
            num += (fd - analytic[idx]).powi(2);
            den += fd.powi(2);
        }
    }
    let rel = (num / den).sqrt();
    eprintln!("relative error of the hook gradient vs finite differences: {rel:e}");
    assert!(den > 0.0);
    assert!(rel <= 1e-5, "relative error {rel}");
}
