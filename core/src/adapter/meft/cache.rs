//! A bounded device-side cache of one layer's rows across the micro-batches
//! of one optimizer step (beyond the paper). The rows do not change until
//! the host optimizer runs, so a row that an earlier micro-batch brought up
//! need not cross again, and its gradient sums on the device and crosses
//! back once, when the step's micro-batches are done.
//!
//! A row enters the cache at its first touch in a step, while there is room,
//! or not at all in that step (nothing is evicted). So every row's gradient
//! is summed in the same order as without the cache, starting from zero,
//! and a run with the cache is the same bit for bit as one without.

pub use crate::event::CacheCounts;
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;

/// One layer's cache.
pub struct RowCache {
    capacity: usize,
    /// Floats per row: the key then the value (2d).
    width: usize,
    slot_of: HashMap<u32, u32>,
    /// Row id of each filled slot, in admission order.
    ids: Vec<u32>,
    /// capacity × 2d on the device, allocated on first use.
    rows: Option<Tensor>,
    /// The filled slots' summed gradients, capacity × 2d, zero at a step's
    /// start.
    grads: Option<Tensor>,
    pub counts: CacheCounts,
}

/// Where one micro-batch's union rows come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Union positions whose rows are in the cache (hits and rows admitted
    /// now), and their slots.
    pub cached_pos: Vec<u32>,
    pub cached_slots: Vec<u32>,
    /// Union positions whose rows cross this micro-batch: first the rows
    /// admitted now (their slots are `first_new..`), then the rows that stay
    /// out of the cache (no room).
    pub miss_pos: Vec<u32>,
    pub admitted: usize,
    pub first_new: usize,
}

impl Placement {
    /// Union positions whose rows are not cached (gradients cross at once).
    pub fn direct_pos(&self) -> &[u32] {
        &self.miss_pos[self.admitted..]
    }
}

impl RowCache {
    pub fn new(capacity: usize, d: usize) -> Self {
        Self {
            capacity,
            width: 2 * d,
            slot_of: HashMap::new(),
            ids: Vec::new(),
            rows: None,
            grads: None,
            counts: CacheCounts::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the cache holds on the device (rows and their gradients).
    pub fn device_bytes(&self) -> u64 {
        let t = |t: &Option<Tensor>| {
            t.as_ref()
                .map_or(0, |t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        };
        t(&self.rows) + t(&self.grads)
    }

    /// Place a micro-batch's union (sorted row ids): hits, rows admitted
    /// while there is room, the rest uncached. Counts hits and misses.
    pub fn place(&mut self, union: &[u32]) -> Placement {
        let mut p = Placement {
            first_new: self.ids.len(),
            ..Placement::default()
        };
        let mut direct = Vec::new();
        for (pos, &r) in union.iter().enumerate() {
            if let Some(&s) = self.slot_of.get(&r) {
                p.cached_pos.push(pos as u32);
                p.cached_slots.push(s);
            } else if self.ids.len() < self.capacity {
                let s = self.ids.len() as u32;
                self.slot_of.insert(r, s);
                self.ids.push(r);
                p.cached_pos.push(pos as u32);
                p.cached_slots.push(s);
                p.miss_pos.push(pos as u32);
                p.admitted += 1;
            } else {
                direct.push(pos as u32);
            }
        }
        p.miss_pos.extend(direct);
        self.counts.hits += (p.cached_pos.len() - p.admitted) as u64;
        self.counts.misses += p.miss_pos.len() as u64;
        p
    }

    /// Rows in `dtype` (the rows' on the device), summed gradients in f32.
    fn ensure(&mut self, device: &Device, dtype: DType) -> Result<()> {
        if self.rows.as_ref().is_some_and(|r| r.dtype() != dtype) {
            self.rows = None;
        }
        if self.rows.is_none() {
            self.rows = Some(Tensor::zeros((self.capacity, self.width), dtype, device)?);
        }
        if self.grads.is_none() {
            self.grads = Some(Tensor::zeros(
                (self.capacity, self.width),
                DType::F32,
                device,
            )?);
        }
        Ok(())
    }

    /// The union's rows (|U| × 2d, in `crossed`'s dtype) from the cache and `crossed` (the
    /// rows of `p.miss_pos`, in that order, already on the device); the
    /// admitted ones are written into their slots. `slots` and `order` are
    /// the index vectors the host sends: the cached positions' slots, and
    /// for each union position where it sits in [cached ; uncached].
    pub fn assemble(
        &mut self,
        p: &Placement,
        crossed: &Tensor,
        slots: &Tensor,
        order: &Tensor,
    ) -> Result<Tensor> {
        self.ensure(&crossed.device().clone(), crossed.dtype())?;
        let Some(rows) = &self.rows else {
            candle_core::bail!("row cache: not allocated");
        };
        if p.admitted > 0 {
            rows.slice_set(&crossed.narrow(0, 0, p.admitted)?, 0, p.first_new)?;
        }
        let mut parts = Vec::with_capacity(2);
        if !p.cached_pos.is_empty() {
            parts.push(rows.index_select(slots, 0)?);
        }
        let uncached = crossed.dim(0)? - p.admitted;
        if uncached > 0 {
            parts.push(crossed.narrow(0, p.admitted, uncached)?);
        }
        match parts.len() {
            0 => Tensor::zeros((0, self.width), crossed.dtype(), crossed.device()),
            1 => parts[0].index_select(order, 0),
            _ => Tensor::cat(&parts, 0)?.index_select(order, 0),
        }
    }

    /// Add the cached positions' gradients (a device tensor of |cached| ×
    /// 2d rows, in `p.cached_pos` order) into their slots.
    pub fn add_grads(&mut self, slots: &Tensor, g: &Tensor) -> Result<()> {
        let Some(acc) = &self.grads else {
            candle_core::bail!("row cache: gradients before rows");
        };
        self.grads = Some(acc.index_add(slots, g, 0)?);
        Ok(())
    }

    /// Forget every row (their gradients too).
    pub fn clear(&mut self) {
        self.slot_of.clear();
        self.ids.clear();
        if let Some(g) = self.grads.take() {
            self.grads = g.zeros_like().ok();
        }
    }

    /// At the end of a step's micro-batches: the filled slots' row ids and
    /// summed gradients (still on the device), and the cache emptied for the
    /// next step (the host optimizer is about to change the rows).
    pub fn drain(&mut self) -> Result<Option<(Vec<u32>, Tensor)>> {
        let n = self.ids.len();
        self.slot_of.clear();
        let ids = std::mem::take(&mut self.ids);
        let Some(acc) = self.grads.take() else {
            return Ok(None);
        };
        if n == 0 {
            self.grads = Some(acc);
            return Ok(None);
        }
        let g = acc.narrow(0, 0, n)?.copy()?;
        self.grads = Some(acc.zeros_like()?);
        Ok(Some((ids, g)))
    }
}

/// For a placement: the slot index vector (one per cached position) and the
/// order vector (per union position, where its row sits in [cached rows ;
/// uncached rows]).
pub fn index_vectors(p: &Placement, union_len: usize) -> (Vec<u32>, Vec<u32>) {
    let mut order = vec![0u32; union_len];
    for (i, &pos) in p.cached_pos.iter().enumerate() {
        order[pos as usize] = i as u32;
    }
    let base = p.cached_pos.len();
    for (i, &pos) in p.direct_pos().iter().enumerate() {
        order[pos as usize] = (base + i) as u32;
    }
    (p.cached_slots.clone(), order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_admits_until_full_then_passes_rows_through() {
        let mut c = RowCache::new(3, 1);
        let p = c.place(&[2, 5]);
        assert_eq!(p.cached_pos, vec![0, 1]);
        assert_eq!(p.cached_slots, vec![0, 1]);
        assert_eq!((p.admitted, p.first_new), (2, 0));
        assert_eq!(p.miss_pos, vec![0, 1]);
        // 5 is a hit; 7 takes the last slot; 9 finds no room.
        let p = c.place(&[5, 7, 9]);
        assert_eq!(p.cached_pos, vec![0, 1]);
        assert_eq!(p.cached_slots, vec![1, 2]);
        assert_eq!((p.admitted, p.first_new), (1, 2));
        assert_eq!(p.miss_pos, vec![1, 2]);
        assert_eq!(p.direct_pos(), &[2]);
        assert_eq!(c.counts, CacheCounts { hits: 1, misses: 4 });
        let (slots, order) = index_vectors(&p, 3);
        assert_eq!(slots, vec![1, 2]);
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn assemble_puts_every_row_in_union_order_and_drain_sums() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = RowCache::new(2, 1);
        // Rows r have the value [r, -r].
        let row = |r: u32| [r as f32, -(r as f32)];
        let crossed = |ids: &[u32]| {
            let v: Vec<f32> = ids.iter().flat_map(|&r| row(r)).collect();
            Tensor::from_vec(v, (ids.len(), 2), &dev)
        };
        let run = |c: &mut RowCache, union: &[u32]| -> Result<(Placement, Tensor)> {
            let p = c.place(union);
            let miss: Vec<u32> = p.miss_pos.iter().map(|&i| union[i as usize]).collect();
            let (slots, order) = index_vectors(&p, union.len());
            let slots = Tensor::new(slots.as_slice(), &dev)?;
            let order = Tensor::new(order.as_slice(), &dev)?;
            let out = c.assemble(&p, &crossed(&miss)?, &slots, &order)?;
            Ok((p, out))
        };
        let (_, out) = run(&mut c, &[3, 4])?;
        assert_eq!(out.to_vec2::<f32>()?, vec![row(3), row(4)]);
        let (p, out) = run(&mut c, &[1, 4, 8])?;
        // 1 and 8 cross uncached (no room), 4 comes from the cache.
        assert_eq!(p.direct_pos(), &[0, 2]);
        assert_eq!(out.to_vec2::<f32>()?, vec![row(1), row(4), row(8)]);
        let slots = Tensor::new(&[1u32], &dev)?;
        c.add_grads(&slots, &Tensor::new(&[[0.5f32, 1.0]], &dev)?)?;
        c.add_grads(&slots, &Tensor::new(&[[0.25f32, 1.0]], &dev)?)?;
        let Some((ids, g)) = c.drain()? else {
            unreachable!("two rows were cached")
        };
        assert_eq!(ids, vec![3, 4]);
        assert_eq!(g.to_vec2::<f32>()?, vec![[0.0, 0.0], [0.75, 2.0]]);
        assert!(c.drain()?.is_none());
        Ok(())
    }
}
