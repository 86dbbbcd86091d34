//! One layer's host store: the key and value rows, their gradient
//! accumulators between optimizer steps, and their AdamW moments with the
//! host optimizer's step over them.

use super::{HostOptimizer, HostRows};
use crate::optim::moments::{MomentDtype, MomentRows};
use crate::optim::{adamw_row, AdamWConfig};
use candle_core::Result;

const NO_SLOT: u32 = u32::MAX;

/// One layer's rows in host memory, their gradient accumulators and their
/// AdamW moments (allocated per row on first update when lazy).
pub struct HostStore {
    pub m: usize,
    pub d: usize,
    /// M × d, row j is neuron j's key.
    pub keys: HostRows,
    /// M × d, row j is neuron j's value.
    pub values: HostRows,
    acc_slot: Vec<u32>,
    acc_rows: Vec<u32>,
    /// Per accumulator slot: the key row's gradient then the value row's (2·d).
    acc: Vec<f32>,
    mom_slot: Vec<u32>,
    /// Row of each moment slot, in slot order.
    mom_rows: Vec<u32>,
    /// Per moment slot: m and v of the key row, then of the value row.
    moments: MomentRows,
    /// Per-row update count for bias correction.
    pub row_steps: Vec<u32>,
}

impl HostStore {
    pub fn new(m: usize, d: usize, keys: Vec<f32>, values: Vec<f32>) -> Self {
        Self::with_moments(m, d, keys, values, MomentDtype::F32)
    }

    pub fn with_moments(
        m: usize,
        d: usize,
        keys: impl Into<HostRows>,
        values: impl Into<HostRows>,
        moments: MomentDtype,
    ) -> Self {
        Self {
            m,
            d,
            keys: keys.into(),
            values: values.into(),
            acc_slot: vec![NO_SLOT; m],
            acc_rows: Vec::new(),
            acc: Vec::new(),
            mom_slot: vec![NO_SLOT; m],
            mom_rows: Vec::new(),
            moments: MomentRows::new(moments, d, m),
            row_steps: vec![0; m],
        }
    }

    /// What a layer holds while a host worker has its store: no rows.
    pub(super) fn placeholder(moments: MomentDtype) -> Self {
        Self::with_moments(0, 0, Vec::<f32>::new(), Vec::<f32>::new(), moments)
    }

    pub fn key_row(&self, j: usize) -> &[f32] {
        &self.keys[j * self.d..(j + 1) * self.d]
    }

    /// Rows with an accumulated gradient since the last optimizer step.
    pub fn touched(&self) -> &[u32] {
        &self.acc_rows
    }

    /// Rows that have AdamW moments.
    pub fn rows_with_moments(&self) -> usize {
        self.mom_rows.len()
    }

    pub fn moment_dtype(&self) -> MomentDtype {
        self.moments.dtype()
    }

    /// Add gradients for `rows`: `kv` holds, per row, the key row's gradient
    /// then the value row's (rows.len() × 2d). When nothing is accumulated
    /// yet and the rows are distinct, the buffer itself becomes the
    /// accumulator, so one micro-batch per step costs no second copy.
    /// Fails, accumulating nothing, when `kv` is not rows.len() × 2d or a
    /// row is not one of the store's M.
    pub fn accumulate(&mut self, rows: &[u32], kv: Vec<f32>) -> Result<()> {
        let w = 2 * self.d;
        if kv.len() != rows.len() * w {
            candle_core::bail!(
                "row gradients: {} values for {} rows of {w}",
                kv.len(),
                rows.len()
            );
        }
        if let Some(r) = rows.iter().find(|&&r| r as usize >= self.m) {
            candle_core::bail!("row gradients: row {r} of a store of {} rows", self.m);
        }
        if self.acc_rows.is_empty() && rows.windows(2).all(|p| p[0] < p[1]) {
            for (i, &r) in rows.iter().enumerate() {
                self.acc_slot[r as usize] = i as u32;
            }
            self.acc_rows = rows.to_vec();
            self.acc = kv;
            return Ok(());
        }
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            let mut slot = self.acc_slot[r];
            if slot == NO_SLOT {
                slot = self.acc_rows.len() as u32;
                self.acc_slot[r] = slot;
                self.acc_rows.push(r as u32);
                self.acc.resize(self.acc.len() + w, 0.0);
            }
            let s = slot as usize * w;
            for (a, g) in self.acc[s..s + w].iter_mut().zip(&kv[i * w..(i + 1) * w]) {
                *a += g;
            }
        }
        Ok(())
    }

    pub fn accumulator_bytes(&self) -> u64 {
        4 * self.acc.len() as u64
    }

    pub fn moment_bytes(&self) -> u64 {
        self.moments.bytes()
    }

    /// Σ g² over the accumulated gradients (for global-norm clipping),
    /// summed row by row in row order, so it does not depend on the order
    /// in which rows were first touched.
    pub fn grad_sq_norm(&self) -> f64 {
        let mut rows = self.acc_rows.clone();
        rows.sort_unstable();
        let w = 2 * self.d;
        rows.iter()
            .map(|&r| {
                let s = self.acc_slot[r as usize] as usize * w;
                self.acc[s..s + w]
                    .iter()
                    .map(|&g| g as f64 * g as f64)
                    .sum::<f64>()
            })
            .sum()
    }

    /// The accumulated gradient of row `r` (keys, values), if any.
    pub fn accumulated(&self, r: usize) -> Option<(&[f32], &[f32])> {
        let slot = self.acc_slot[r];
        (slot != NO_SLOT).then(|| {
            let s = slot as usize * 2 * self.d;
            self.acc[s..s + 2 * self.d].split_at(self.d)
        })
    }

    fn moment_slot(&mut self, r: usize) -> usize {
        if self.mom_slot[r] == NO_SLOT {
            self.mom_slot[r] = self.mom_rows.len() as u32;
            self.mom_rows.push(r as u32);
            self.moments.push_zero_row();
        }
        self.mom_slot[r] as usize
    }

    /// The rows a step of `mode` updates, in the order it updates them.
    fn step_rows(&self, mode: HostOptimizer) -> Vec<usize> {
        match mode {
            HostOptimizer::Lazy => self.acc_rows.iter().map(|&r| r as usize).collect(),
            HostOptimizer::Dense => (0..self.m).collect(),
        }
    }

    /// Give every row the next step of `mode` updates its moments now, in
    /// the order the step would, so the store's size after the step is
    /// known before the step runs (elsewhere); returns the rows it updates.
    pub fn prepare_step(&mut self, mode: HostOptimizer) -> usize {
        let rows = self.step_rows(mode);
        for &r in &rows {
            self.moment_slot(r);
        }
        rows.len()
    }

    /// One AdamW step; returns how many rows were updated. Accumulators are
    /// cleared afterwards.
    pub fn step(&mut self, mode: HostOptimizer, lr: f64, scale: f32, cfg: &AdamWConfig) -> usize {
        let d = self.d;
        let zeros = vec![0f32; 2 * d];
        let rows = self.step_rows(mode);
        let mut scratch = Vec::new();
        for &r in &rows {
            let slot = self.moment_slot(r);
            self.row_steps[r] += 1;
            let step = match cfg.global_step {
                Some(t) => t.min(u32::MAX as u64) as u32,
                None => self.row_steps[r],
            };
            let acc = self.acc_slot[r];
            let g = if acc == NO_SLOT {
                &zeros[..]
            } else {
                let s = acc as usize * 2 * d;
                &self.acc[s..s + 2 * d]
            };
            let (gk, gv) = g.split_at(d);
            let key = &mut self.keys[r * d..(r + 1) * d];
            let value = &mut self.values[r * d..(r + 1) * d];
            self.moments.update(slot, &mut scratch, |mom| {
                let (mk, rest) = mom.split_at_mut(d);
                let (vk, rest) = rest.split_at_mut(d);
                let (mv, vv) = rest.split_at_mut(d);
                adamw_row(key, gk, mk, vk, step, lr, scale, cfg);
                adamw_row(value, gv, mv, vv, step, lr, scale, cfg);
            });
        }
        self.clear_grads();
        rows.len()
    }

    pub fn clear_grads(&mut self) {
        for &r in &self.acc_rows {
            self.acc_slot[r as usize] = NO_SLOT;
        }
        self.acc_rows.clear();
        self.acc = Vec::new();
    }

    /// Which row each moment slot belongs to, and the slots' state as stored.
    pub fn moments(&self) -> (&[u32], &MomentRows) {
        (&self.mom_rows, &self.moments)
    }

    /// Replace the moments with `rows` (slot order) and their state.
    pub fn set_moments(&mut self, rows: Vec<u32>, moments: MomentRows) -> Result<()> {
        if moments.rows() != rows.len() {
            candle_core::bail!("{} moment rows for {} row ids", moments.rows(), rows.len());
        }
        let mut slot = vec![NO_SLOT; self.m];
        for (i, &r) in rows.iter().enumerate() {
            match slot.get_mut(r as usize) {
                Some(s) if *s == NO_SLOT => *s = i as u32,
                _ => candle_core::bail!("moment row id {r} is out of range or repeated"),
            }
        }
        self.mom_slot = slot;
        self.mom_rows = rows;
        self.moments = moments;
        Ok(())
    }
}
