//! Seeded random numbers. candle's CPU generator cannot be seeded, so every
//! initial weight and every sampled index in this crate comes from here.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub type SeededRng = ChaCha8Rng;

pub fn seeded(seed: u64) -> SeededRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` samples of N(0, std²) by the Box–Muller transform.
pub fn normal_vec(rng: &mut SeededRng, n: usize, std: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32 * std);
        out.push((r * a.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

/// `n` samples of U(-bound, bound).
pub fn uniform_vec(rng: &mut SeededRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
        .collect()
}
