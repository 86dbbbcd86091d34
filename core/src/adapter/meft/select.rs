//! The host's half of routing: score the probed experts' keys (or all of
//! them), keep each token's top-K, and gather the union's rows.

use super::lanes::Lanes;
use super::{HostStore, MeftShape, Routing};
use rayon::prelude::*;

/// The row id of a slot left empty (fewer candidates than K): the largest,
/// so that it sorts after every row.
const NO_ROW: u32 = u32::MAX;

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
    // Each token's kept (row, score) pairs in its K slots.
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
    let (union, map) = union_and_map(&kept);
    let scores = kept
        .iter()
        .map(|&(j, o)| if j == NO_ROW { 0.0 } else { o })
        .collect();
    Selection { union, map, scores }
}

/// The sorted distinct rows of `kept` and each slot's index into them, from
/// one sort of (row, slot) pairs: walking them in row order, a slot's index
/// is the number of distinct rows before its own. Empty slots sort last, so
/// they come when the union is whole and get its length. Slots are u32, as
/// the map's entries are.
fn union_and_map(kept: &[(u32, f32)]) -> (Vec<u32>, Vec<u32>) {
    let mut by_row: Vec<u64> = kept
        .iter()
        .zip(0u32..)
        .map(|(&(j, _), slot)| (u64::from(j) << 32) | u64::from(slot))
        .collect();
    by_row.sort_unstable();
    let mut union: Vec<u32> = Vec::new();
    // Every slot is in `by_row` once, so each entry is written below.
    let mut map = vec![0u32; kept.len()];
    for key in by_row {
        let (j, slot) = ((key >> 32) as u32, key as u32 as usize);
        if j != NO_ROW && union.last() != Some(&j) {
            union.push(j);
        }
        map[slot] = match j == NO_ROW {
            true => union.len() as u32,
            false => union.len() as u32 - 1,
        };
    }
    (union, map)
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

#[cfg(test)]
mod tests {
    use super::{union_and_map, NO_ROW};

    #[test]
    fn each_slot_indexes_its_row_in_the_union() {
        let kept = [
            (7, 0.5),
            (3, 0.1),
            (NO_ROW, 0.0),
            (7, 0.2),
            (9, 0.3),
            (NO_ROW, 0.0),
        ];
        let (union, map) = union_and_map(&kept);
        assert_eq!(union, vec![3, 7, 9]);
        assert_eq!(map, vec![1, 0, 3, 1, 2, 3]);
        assert_eq!(union_and_map(&[]), (vec![], vec![]));
    }
}
