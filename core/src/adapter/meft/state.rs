//! What the MEFT adapter owns beyond its forward pass: its host state in a
//! checkpoint (streamed from the store's buffers and read straight back into
//! them, every tensor's shape and dtype checked), its share of the host
//! ledger, and the statistics a step reports (traffic, unions, pick
//! histograms).

use super::MeftAdapter;
use crate::checkpoint::{Buffer, CheckpointReader, CheckpointWriter};
use crate::event::{CacheCounts, Category, HistogramEvent, Ledger, Traffic};
use crate::optim::moments::{MomentPieces, MomentPiecesMut, MomentRows, BLOCKS};
use anyhow::{Context, Result};

/// What one optimizer step's forward passes crossed and picked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    pub traffic: Traffic,
    /// Σ |U| per adapter layer over the step's micro-batches.
    pub unions: Vec<u64>,
    /// Σ N·K per adapter layer.
    pub picks: Vec<u64>,
    /// Each adapter layer's largest |U| in the step.
    pub peak_unions: Vec<u64>,
    /// The device row cache's hits and misses (None when it is off).
    pub row_cache: Option<CacheCounts>,
}

/// Steps a pick histogram covers.
pub const HISTOGRAM_WINDOW: u32 = 5;

impl MeftAdapter {
    /// Every layer's keys, values, per-row step counts and AdamW moments,
    /// named `meft.<layer>.*`, borrowed into `w` (nothing is copied).
    /// Fails when a store is with a host worker (settle first) or a worker
    /// failed on it: a checkpoint is only ever of whole stores.
    pub fn save<'a>(&'a self, w: &mut CheckpointWriter<'a>) -> Result<()> {
        if let Some(l) = self.layers.iter().find(|l| !l.is_settled()) {
            anyhow::bail!(
                "adapter layer {}: its rows are not settled; no checkpoint is written",
                l.layer
            );
        }
        let d = self.shape.d;
        for l in &self.layers {
            let p = format!("meft.{}", l.layer);
            let s = &l.store;
            w.add(format!("{p}.keys"), &[s.m, d], Buffer::F32(&s.keys));
            w.add(format!("{p}.values"), &[s.m, d], Buffer::F32(&s.values));
            w.add(format!("{p}.row_steps"), &[s.m], Buffer::U32(&s.row_steps));
            let (rows, moments) = s.moments();
            let n = rows.len();
            w.add(format!("{p}.moment_rows"), &[n], Buffer::U32(rows));
            let shape = [n, BLOCKS * d];
            let name = format!("{p}.moments");
            match moments.pieces() {
                MomentPieces::F32(v) => {
                    w.add_pieces(name, &shape, v.into_iter().map(Buffer::F32).collect())
                }
                MomentPieces::Bf16(v) => {
                    w.add_pieces(name, &shape, v.into_iter().map(Buffer::Bf16).collect())
                }
                MomentPieces::Q8 { codes, scales } => {
                    w.add_pieces(name, &shape, codes.into_iter().map(Buffer::U8).collect());
                    w.add_pieces(
                        format!("{p}.moment_scales"),
                        &[n, BLOCKS],
                        scales.into_iter().map(Buffer::F32).collect(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Read what [`MeftAdapter::save`] wrote straight into the stores.
    pub fn restore(&mut self, r: &mut CheckpointReader) -> Result<()> {
        let d = self.shape.d;
        for l in &mut self.layers {
            let p = format!("meft.{}", l.layer);
            let s = &mut l.store;
            let m_rows = s.m;
            r.read_into(&format!("{p}.keys"), &[m_rows, d], &mut s.keys)?;
            r.read_into(&format!("{p}.values"), &[m_rows, d], &mut s.values)?;
            r.read_into(&format!("{p}.row_steps"), &[m_rows], &mut s.row_steps)?;
            let (_, rows) = r.read_vec::<u32>(&format!("{p}.moment_rows"), &[None])?;
            let n = rows.len();
            let name = format!("{p}.moments");
            let shape = [n, BLOCKS * d];
            // Read straight into the pages the store will keep.
            let mut moments = MomentRows::zeroed(s.moment_dtype(), d, s.m, n);
            match moments.pieces_mut() {
                MomentPiecesMut::F32(mut v) => r.read_into_pieces(&name, &shape, &mut v)?,
                MomentPiecesMut::Bf16(mut v) => r.read_into_pieces(&name, &shape, &mut v)?,
                MomentPiecesMut::Q8 {
                    mut codes,
                    mut scales,
                } => {
                    r.read_into_pieces(&name, &shape, &mut codes)?;
                    r.read_into_pieces(&format!("{p}.moment_scales"), &[n, BLOCKS], &mut scales)?;
                }
            }
            s.set_moments(rows, moments)
                .with_context(|| format!("{}: {name}", r.path().display()))?;
        }
        Ok(())
    }

    /// The host ledger: the store, the moments and the accumulators, as
    /// allocated.
    pub fn host_ledger(&self, accumulators: u64) -> Ledger {
        Ledger::from([
            (Category::Store, self.store_bytes()),
            (Category::Moments, self.moment_bytes()),
            (Category::Accumulators, accumulators),
        ])
    }

    /// Traffic and unions since the last call; the counters restart.
    pub fn take_step_stats(&mut self) -> StepStats {
        let mut traffic = Traffic::default();
        for l in &self.link.take() {
            traffic.add(l);
        }
        let nl = self.layers.len();
        let mut s = StepStats {
            traffic,
            unions: vec![0; nl],
            picks: vec![0; nl],
            peak_unions: vec![0; nl],
            row_cache: self.take_cache_counts(),
        };
        // By slot (the configured layers' order), whatever order the
        // forward passes reached the layers in.
        for (slot, u, p) in self.union_log.drain(..) {
            s.unions[slot] += u;
            s.picks[slot] += p;
            s.peak_unions[slot] = s.peak_unions[slot].max(u);
        }
        s
    }

    /// Each layer's pick counts (hot → cold, in 48 bins) and kept
    /// activation values (in 24 bins) since the last call.
    pub fn histograms(&mut self, step: u64) -> Vec<HistogramEvent> {
        let mut out = Vec::new();
        for l in &mut self.layers {
            let st = std::mem::take(&mut l.stats);
            if st.counts.is_empty() {
                continue;
            }
            let mut sorted = st.counts.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let bins = 48.min(sorted.len()).max(1);
            let per = sorted.len().div_ceil(bins);
            let picks_sorted = sorted
                .chunks(per)
                .map(|c| c.iter().sum::<u32>() as f32 / c.len() as f32)
                .collect();
            let distinct = st.counts.iter().filter(|&&c| c > 0).count() as u64;
            let hi = st
                .act_values
                .iter()
                .copied()
                .fold(0f32, f32::max)
                .max(1e-12);
            let mut act_bins = vec![0u32; 24];
            for v in &st.act_values {
                let b = ((v / hi) * 23.999) as usize;
                act_bins[b.min(23)] += 1;
            }
            out.push(HistogramEvent {
                step,
                layer: l.layer as u32,
                window: HISTOGRAM_WINDOW,
                picks_sorted,
                distinct,
                neurons: st.counts.len() as u64,
                act_bins,
                act_lo: 0.0,
                act_hi: hi,
            });
        }
        out
    }
}
