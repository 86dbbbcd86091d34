//! Retrieval: finding each token's top-K neurons by a full scan of all M
//! keys against Key-Experts (router logits, the top-P experts, then only
//! their keys), per token, as M grows.

use super::{growth_exponent, time, Options, Section};
use crate::adapter::meft::{select, HostStore, MeftShape, Routing};
use crate::config::MeftSection;
use candle_core::{Device, Tensor, D};

const TOKENS: usize = 256;
const TOP_K: usize = 64;
const PROBE: usize = 8;

/// (per-token seconds of the full scan, of Key-Experts) at one (d, M).
fn point(d: usize, m: usize, reps: usize) -> anyhow::Result<(f64, f64, usize)> {
    let mut rng = crate::rng::seeded(m as u64 ^ (d as u64) << 32);
    let keys = crate::rng::normal_vec(&mut rng, m * d, 0.02);
    let queries = crate::rng::normal_vec(&mut rng, TOKENS * d, 1.0);
    let cfg = MeftSection {
        neurons: m,
        ..Default::default()
    };
    let experts = cfg.resolved_experts();
    let kpe = m / experts;
    // The router as the adapter initialises it: 50 × each expert's mean key.
    let mut router = vec![0f32; experts * d];
    for (e, row) in router.chunks_mut(d).enumerate() {
        for j in e * kpe..(e + 1) * kpe {
            for (r, k) in row.iter_mut().zip(&keys[j * d..(j + 1) * d]) {
                *r += k;
            }
        }
        row.iter_mut().for_each(|r| *r *= 50.0 / kpe as f32);
    }
    // Values are not read by retrieval; zeroed pages cost nothing.
    let store = HostStore::new(m, d, keys, vec![0f32; m * d]);
    let shape = |routing| MeftShape {
        d,
        neurons: m,
        top_k: TOP_K,
        experts,
        probe: PROBE,
        routing,
    };
    let full = shape(Routing::Full);
    let t_full = time(0, reps, || Ok(select(&store, &full, &queries, &[], &[])))?;
    let ke = shape(Routing::KeyExperts);
    let q = Tensor::from_vec(queries.clone(), (TOKENS, d), &Device::Cpu)?;
    let g = Tensor::from_vec(router, (experts, d), &Device::Cpu)?;
    let t_ke = time(1, reps.max(3), || {
        let logits = q.matmul(&g.t()?)?;
        let top = logits
            .arg_sort_last_dim(false)?
            .narrow(D::Minus1, 0, PROBE)?
            .contiguous()?;
        let gates: Vec<f32> = logits.gather(&top, D::Minus1)?.flatten_all()?.to_vec1()?;
        let ids: Vec<u32> = top.flatten_all()?.to_vec1()?;
        Ok(select(&store, &ke, &queries, &ids, &gates))
    })?;
    let per = TOKENS as f64;
    Ok((t_full.median / per, t_ke.median / per, experts))
}

pub fn section(opts: &Options) -> anyhow::Result<Section> {
    let mut s = Section::new(&format!(
        "Retrieval: full key scan vs Key-Experts ({TOKENS} tokens, K {TOP_K}, P {PROBE}, E = the divisor of M nearest 4√M), per token"
    ));
    let grid: Vec<(usize, Vec<usize>)> = if opts.quick {
        vec![(576, vec![4096, 16_384, 65_536])]
    } else {
        vec![
            (576, vec![4096, 16_384, 65_536, 262_144, 1_048_576]),
            (4096, vec![4096, 16_384, 65_536, 262_144]),
        ]
    };
    for (d, ms) in grid {
        let (mut full, mut ke) = (Vec::new(), Vec::new());
        for &m in &ms {
            let reps = if m >= 262_144 { 1 } else { 3 };
            let (tf, tk, e) = point(d, m, reps)?;
            full.push((m as f64, tf));
            ke.push((m as f64, tk));
            s.row(
                format!("d {d}, M {m} (E {e})"),
                format!(
                    "full {:>9.1} µs · Key-Experts {:>7.1} µs · {:>6.1}×",
                    tf * 1e6,
                    tk * 1e6,
                    tf / tk
                ),
                "measured",
            );
            s.figure(&format!("d{d}_m{m}_full_us"), tf * 1e6);
            s.figure(&format!("d{d}_m{m}_key_experts_us"), tk * 1e6);
        }
        let (ef, ek) = (growth_exponent(&full), growth_exponent(&ke));
        s.row(
            format!("d {d}: growth exponent in M"),
            format!("full {ef:.2} · Key-Experts {ek:.2}"),
            "fitted to the points above",
        );
        s.figure(&format!("d{d}_exponent_full"), ef);
        s.figure(&format!("d{d}_exponent_key_experts"), ek);
        s.check(
            format!("d {d}: Key-Experts grows with exponent ≤ 0.5"),
            ek <= 0.5,
        );
        if let (Some(f), Some(k)) = (full.last(), ke.last()) {
            if f.0 >= 1_048_576.0 {
                s.check(
                    format!("d {d}: Key-Experts ≥ 100× faster than the full scan at M 1,048,576"),
                    f.1 / k.1 >= 100.0,
                );
            }
        }
    }
    if !opts.quick {
        s.row(
            "d 4096, M 1,048,576",
            "not run: the keys alone take 16 GiB",
            "skipped",
        );
    }
    Ok(s)
}
