//! The host's half of routing: score the probed experts' keys (or all of
//! them), keep each token's top-K, and gather the union's rows.

use super::lanes::Lanes;
use super::{HostStore, MeftShape, Routing};
use rayon::prelude::*;

/// What the host selected for one micro-batch at one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Sorted distinct row ids kept by any token (the union U).
    pub union: Vec<u32>,
    /// N × K indices into `union`; `union.len()` marks an empty slot (fewer
    /// than K candidates), which the device maps to a zero row.
    pub map: Vec<u32>,
    /// The kept scores o_tj, N × K, aligned with `map` (0 for empty slots).
    pub scores: Vec<f32>,
}

/// Per token, the top-K rows by score among the candidates, on the host.
/// `gates` (N × P) and `experts` (N × P) describe Key-Experts routing; with
/// `Routing::Full` both are empty and every key is a candidate.
pub fn select(
    store: &HostStore,
    shape: &MeftShape,
    queries: &[f32],
    experts: &[u32],
    gates: &[f32],
) -> Selection {
    let d = shape.d;
    let n = queries.len() / d.max(1);
    let (k, p, kpe) = (shape.top_k, shape.probe, shape.keys_per_expert());
    let candidates = match shape.routing {
        Routing::KeyExperts => p * kpe,
        Routing::Full => store.m,
    };
    // Each token's kept (row, score) pairs in its K slots; a row id of
    // NO_ROW marks a slot left empty (fewer candidates than K).
    const NO_ROW: u32 = u32::MAX;
    let mut kept = vec![(NO_ROW, 0f32); n * k];
    kept.par_chunks_mut(k.max(1)).enumerate().for_each_init(
        || Vec::with_capacity(candidates),
        |cand: &mut Vec<(u32, f32)>, (t, out)| {
            cand.clear();
            let q = &queries[t * d..(t + 1) * d];
            let mut score_rows = |lo: usize, hi: usize, gate: f32| {
                for j in lo..hi {
                    cand.push((j as u32, gate * f32::dot(q, store.key_row(j))));
                }
            };
            match shape.routing {
                Routing::KeyExperts => {
                    for i in 0..p {
                        let e = experts[t * p + i] as usize;
                        score_rows(e * kpe, (e + 1) * kpe, gates[t * p + i]);
                    }
                }
                Routing::Full => score_rows(0, store.m, 1.0),
            }
            if cand.len() > k {
                cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                cand.truncate(k);
            }
            for (o, c) in out.iter_mut().zip(cand.iter()) {
                *o = *c;
            }
        },
    );
    let mut union: Vec<u32> = kept.iter().map(|c| c.0).filter(|&j| j != NO_ROW).collect();
    union.sort_unstable();
    union.dedup();
    let empty = union.len() as u32;
    let (map, scores) = kept
        .iter()
        .map(|&(j, o)| match j {
            NO_ROW => (empty, 0.0),
            _ => (union.binary_search(&j).unwrap_or(0) as u32, o),
        })
        .unzip();
    Selection { union, map, scores }
}

/// Rows `ids` of the store as one |U| × 2d buffer, each row's key then its
/// value, copied in parallel.
pub fn gather_kv(store: &HostStore, ids: &[u32]) -> Vec<f32> {
    let d = store.d.max(1);
    let mut out = vec![0f32; ids.len() * 2 * d];
    out.par_chunks_mut(2 * d)
        .zip(ids.par_iter())
        .for_each(|(dst, &j)| {
            let j = j as usize;
            dst[..d].copy_from_slice(&store.keys[j * d..(j + 1) * d]);
            dst[d..].copy_from_slice(&store.values[j * d..(j + 1) * d]);
        });
    out
}
