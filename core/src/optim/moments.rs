//! AdamW moments of the MEFT host store, kept per row in a chosen dtype:
//! `f32` (exact), `bf16` (half the bytes) or `q8`, 8-bit block-wise
//! quantisation in the manner of bitsandbytes' 8-bit Adam (about a quarter
//! of the bytes). A row's state is four blocks of `d` values — m and v of
//! its key, then m and v of its value — and each q8 block keeps its own
//! absolute maximum and codes on a logarithmic grid below it, so small
//! second moments keep their relative precision (a linear grid would round
//! them to zero and blow the update up).

use half::bf16;

pub use crate::config::MomentDtype;

impl MomentDtype {
    /// Bytes of one row's state (4 blocks of `d`), scales included.
    pub fn row_bytes(self, d: usize) -> u64 {
        let d = d as u64;
        match self {
            MomentDtype::F32 => 16 * d,
            MomentDtype::Bf16 => 8 * d,
            MomentDtype::Q8 => 4 * d + 4 * 4,
        }
    }
}

/// Blocks per row: m and v of the key row, m and v of the value row.
pub const BLOCKS: usize = 4;

/// The signed grid (first moments) spans this many decades below a block's
/// absmax in 127 steps; the unsigned grid (second moments, which are squares)
/// spans twice as many in 255 steps.
const SIGNED_DECADES: f32 = 6.0;
const UNSIGNED_DECADES: f32 = 12.0;

/// The value of every code, per grid: index 0 is zero, the top code is 1.
struct Grid {
    values: [f32; 256],
    levels: u32,
    decades: f32,
}

impl Grid {
    fn new(levels: u32, decades: f32) -> Self {
        let mut values = [0f32; 256];
        for (c, v) in values
            .iter_mut()
            .enumerate()
            .take(levels as usize + 1)
            .skip(1)
        {
            let below = (levels - c as u32) as f32 / (levels - 1) as f32;
            *v = 10f32.powf(-decades * below);
        }
        Self {
            values,
            levels,
            decades,
        }
    }

    /// The code nearest (in log scale) to `r` ∈ [0, 1].
    fn encode(&self, r: f32) -> u32 {
        if r <= 0.0 {
            return 0;
        }
        let pos = (r.log10() / self.decades + 1.0) * (self.levels - 1) as f32 + 1.0;
        // Below half a step under the smallest level, zero is nearer.
        if pos < 0.5 {
            return 0;
        }
        (pos.round() as u32).clamp(1, self.levels)
    }
}

fn signed_grid() -> &'static Grid {
    static G: std::sync::OnceLock<Grid> = std::sync::OnceLock::new();
    G.get_or_init(|| Grid::new(127, SIGNED_DECADES))
}

fn unsigned_grid() -> &'static Grid {
    static G: std::sync::OnceLock<Grid> = std::sync::OnceLock::new();
    G.get_or_init(|| Grid::new(255, UNSIGNED_DECADES))
}

/// Quantise one block; returns its scale (absmax).
fn q8_encode(block: &[f32], signed: bool, codes: &mut [u8]) -> f32 {
    let scale = block.iter().fold(0f32, |m, x| m.max(x.abs()));
    if scale == 0.0 || !scale.is_finite() {
        codes.fill(0);
        return if scale.is_finite() { 0.0 } else { scale };
    }
    let inv = 1.0 / scale;
    if signed {
        let g = signed_grid();
        for (c, &x) in codes.iter_mut().zip(block) {
            let mag = g.encode(x.abs() * inv) as u8;
            *c = if x < 0.0 && mag != 0 { mag | 0x80 } else { mag };
        }
    } else {
        let g = unsigned_grid();
        for (c, &x) in codes.iter_mut().zip(block) {
            *c = g.encode(x.max(0.0) * inv) as u8;
        }
    }
    scale
}

fn q8_decode(codes: &[u8], scale: f32, signed: bool, out: &mut [f32]) {
    if signed {
        let g = signed_grid();
        for (o, &c) in out.iter_mut().zip(codes) {
            let v = g.values[(c & 0x7f) as usize] * scale;
            *o = if c & 0x80 != 0 { -v } else { v };
        }
    } else {
        let g = unsigned_grid();
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = g.values[c as usize] * scale;
        }
    }
}

/// Block b of a row is a first moment (signed) when b is even.
fn signed_block(b: usize) -> bool {
    b.is_multiple_of(2)
}

/// Bytes one page of rows takes at most: growing allocates a page at a time
/// and never moves what is there, so memory is what the rows need plus at
/// most one part-used page per store.
pub const PAGE_BYTES: u64 = 4 << 20;

/// Rows of `width` values in fixed-size pages.
#[derive(Debug, Clone)]
pub struct Pages<T> {
    width: usize,
    rows_per_page: usize,
    pages: Vec<Vec<T>>,
    rows: usize,
}

impl<T: Copy + Default> Pages<T> {
    pub fn new(width: usize, rows_per_page: usize) -> Self {
        Self {
            width,
            rows_per_page: rows_per_page.max(1),
            pages: Vec::new(),
            rows: 0,
        }
    }

    /// `rows` default rows, as a restore fills them.
    pub fn with_rows(width: usize, rows_per_page: usize, rows: usize) -> Self {
        let mut p = Self::new(width, rows_per_page);
        for _ in 0..rows {
            p.push_default_row();
        }
        p
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push_default_row(&mut self) {
        if self.rows == self.pages.len() * self.rows_per_page {
            self.pages
                .push(vec![T::default(); self.rows_per_page * self.width]);
        }
        self.rows += 1;
    }

    fn at(&self, row: usize) -> (usize, usize) {
        let off = (row % self.rows_per_page) * self.width;
        (row / self.rows_per_page, off)
    }

    pub fn row(&self, row: usize) -> &[T] {
        let (p, o) = self.at(row);
        &self.pages[p][o..o + self.width]
    }

    pub fn row_mut(&mut self, row: usize) -> &mut [T] {
        let (p, o) = self.at(row);
        let w = self.width;
        &mut self.pages[p][o..o + w]
    }

    /// Bytes allocated, part-used last page included.
    pub fn bytes(&self) -> u64 {
        (self.pages.len() * self.rows_per_page * self.width * std::mem::size_of::<T>()) as u64
    }

    /// The rows in order, as one slice per page.
    pub fn pieces(&self) -> Vec<&[T]> {
        let mut left = self.rows * self.width;
        self.pages
            .iter()
            .map(|p| {
                let n = left.min(p.len());
                left -= n;
                &p[..n]
            })
            .collect()
    }

    pub fn pieces_mut(&mut self) -> Vec<&mut [T]> {
        let mut left = self.rows * self.width;
        self.pages
            .iter_mut()
            .map(|p| {
                let n = left.min(p.len());
                left -= n;
                &mut p[..n]
            })
            .collect()
    }
}

impl MomentDtype {
    /// Rows per page of this dtype's state for a store of `m` rows of
    /// width `d`: a page's worth, or the whole store when it is smaller.
    pub fn rows_per_page(self, d: usize, m: usize) -> usize {
        ((PAGE_BYTES / self.row_bytes(d).max(1)) as usize).clamp(1, m.max(1))
    }

    /// Bytes `rows` rows of state take once paged, in a store of `m` rows.
    pub fn paged_bytes(self, d: usize, m: usize, rows: u64) -> u64 {
        let per = self.rows_per_page(d, m) as u64;
        rows.div_ceil(per)
            .saturating_mul(per)
            .saturating_mul(self.row_bytes(d))
    }
}

/// Rows of moment state in one dtype, addressed by slot.
#[derive(Debug, Clone)]
pub enum MomentRows {
    F32(Pages<f32>),
    Bf16(Pages<bf16>),
    /// Codes (4·d per row) and one scale per block (4 per row).
    Q8 {
        codes: Pages<u8>,
        scales: Pages<f32>,
    },
}

/// A moment store's rows as slices, for streaming them into a file.
pub enum MomentPieces<'a> {
    F32(Vec<&'a [f32]>),
    Bf16(Vec<&'a [bf16]>),
    Q8 {
        codes: Vec<&'a [u8]>,
        scales: Vec<&'a [f32]>,
    },
}

/// The same, writable, for reading a file straight into them.
pub enum MomentPiecesMut<'a> {
    F32(Vec<&'a mut [f32]>),
    Bf16(Vec<&'a mut [bf16]>),
    Q8 {
        codes: Vec<&'a mut [u8]>,
        scales: Vec<&'a mut [f32]>,
    },
}

impl MomentRows {
    /// `rows` zeroed rows of width `d` (4 blocks of d values each) for a
    /// store of `m` rows.
    pub fn zeroed(dtype: MomentDtype, d: usize, m: usize, rows: usize) -> Self {
        let w = BLOCKS * d;
        let per = dtype.rows_per_page(d, m);
        match dtype {
            MomentDtype::F32 => MomentRows::F32(Pages::with_rows(w, per, rows)),
            MomentDtype::Bf16 => MomentRows::Bf16(Pages::with_rows(w, per, rows)),
            MomentDtype::Q8 => MomentRows::Q8 {
                codes: Pages::with_rows(w, per, rows),
                scales: Pages::with_rows(BLOCKS, per, rows),
            },
        }
    }

    pub fn new(dtype: MomentDtype, d: usize, m: usize) -> Self {
        Self::zeroed(dtype, d, m, 0)
    }

    pub fn dtype(&self) -> MomentDtype {
        match self {
            MomentRows::F32(_) => MomentDtype::F32,
            MomentRows::Bf16(_) => MomentDtype::Bf16,
            MomentRows::Q8 { .. } => MomentDtype::Q8,
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        match self {
            MomentRows::F32(v) => v.rows(),
            MomentRows::Bf16(v) => v.rows(),
            MomentRows::Q8 { codes, .. } => codes.rows(),
        }
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> u64 {
        match self {
            MomentRows::F32(v) => v.bytes(),
            MomentRows::Bf16(v) => v.bytes(),
            MomentRows::Q8 { codes, scales } => codes.bytes() + scales.bytes(),
        }
    }

    /// Append one zeroed row.
    pub fn push_zero_row(&mut self) {
        match self {
            MomentRows::F32(v) => v.push_default_row(),
            MomentRows::Bf16(v) => v.push_default_row(),
            MomentRows::Q8 { codes, scales } => {
                codes.push_default_row();
                scales.push_default_row();
            }
        }
    }

    pub fn pieces(&self) -> MomentPieces<'_> {
        match self {
            MomentRows::F32(v) => MomentPieces::F32(v.pieces()),
            MomentRows::Bf16(v) => MomentPieces::Bf16(v.pieces()),
            MomentRows::Q8 { codes, scales } => MomentPieces::Q8 {
                codes: codes.pieces(),
                scales: scales.pieces(),
            },
        }
    }

    pub fn pieces_mut(&mut self) -> MomentPiecesMut<'_> {
        match self {
            MomentRows::F32(v) => MomentPiecesMut::F32(v.pieces_mut()),
            MomentRows::Bf16(v) => MomentPiecesMut::Bf16(v.pieces_mut()),
            MomentRows::Q8 { codes, scales } => MomentPiecesMut::Q8 {
                codes: codes.pieces_mut(),
                scales: scales.pieces_mut(),
            },
        }
    }

    /// Run `f` on slot `slot`'s state as f32 (4·d values: m_k, v_k, m_v,
    /// v_v). `scratch` holds the decoded copy for the compact dtypes.
    pub fn update(&mut self, slot: usize, scratch: &mut Vec<f32>, f: impl FnOnce(&mut [f32])) {
        match self {
            MomentRows::F32(v) => f(v.row_mut(slot)),
            MomentRows::Bf16(v) => {
                let src = v.row_mut(slot);
                scratch.clear();
                scratch.extend(src.iter().map(|b| b.to_f32()));
                f(scratch);
                for (dst, &x) in src.iter_mut().zip(scratch.iter()) {
                    *dst = bf16::from_f32(x);
                }
            }
            MomentRows::Q8 { codes, scales } => {
                let c = codes.row_mut(slot);
                let sc = scales.row_mut(slot);
                let d = c.len() / BLOCKS;
                scratch.resize(c.len(), 0.0);
                for b in 0..BLOCKS {
                    q8_decode(
                        &c[b * d..(b + 1) * d],
                        sc[b],
                        signed_block(b),
                        &mut scratch[b * d..(b + 1) * d],
                    );
                }
                f(scratch);
                for b in 0..BLOCKS {
                    sc[b] = q8_encode(
                        &scratch[b * d..(b + 1) * d],
                        signed_block(b),
                        &mut c[b * d..(b + 1) * d],
                    );
                }
            }
        }
    }

    /// Slot `slot`'s state decoded to f32 (for tests and inspection).
    pub fn decoded(&self, slot: usize) -> Vec<f32> {
        let mut copy = self.clone();
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        copy.update(slot, &mut scratch, |s| out = s.to_vec());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_keeps_relative_precision_across_decades() {
        // A second-moment block whose values span ten decades.
        let block: Vec<f32> = (0..11).map(|i| 10f32.powi(-i)).collect();
        let mut codes = vec![0u8; block.len()];
        let scale = q8_encode(&block, false, &mut codes);
        assert_eq!(scale, 1.0);
        let mut back = vec![0f32; block.len()];
        q8_decode(&codes, scale, false, &mut back);
        for (x, y) in block.iter().zip(&back) {
            // Half a step of the 255-level, 12-decade grid is 10^(6/254) ≈ 1.056.
            assert!((y / x - 1.0).abs() < 0.06, "{x} came back as {y}");
        }
    }

    #[test]
    fn q8_signed_blocks_keep_signs_and_zero() {
        let block = [0.5f32, -0.25, 0.0, -1.0, 1e-9];
        let mut codes = vec![0u8; block.len()];
        let scale = q8_encode(&block, true, &mut codes);
        let mut back = vec![0f32; block.len()];
        q8_decode(&codes, scale, true, &mut back);
        assert_eq!(back[2], 0.0);
        assert_eq!(back[3], -1.0);
        assert!((back[0] - 0.5).abs() < 0.5 * 0.06);
        assert!((back[1] + 0.25).abs() < 0.25 * 0.06);
        // 1e-9 is more than six decades under the absmax: it rounds to zero.
        assert_eq!(back[4], 0.0);
    }

    #[test]
    fn row_bytes_halve_and_quarter() {
        assert_eq!(MomentDtype::F32.row_bytes(128), 2048);
        assert_eq!(MomentDtype::Bf16.row_bytes(128), 1024);
        assert_eq!(MomentDtype::Q8.row_bytes(128), 528);
        // Rows are allocated a page at a time.
        let m = 100_000;
        let mut q = MomentRows::new(MomentDtype::Q8, 128, m);
        assert_eq!(q.bytes(), 0);
        q.push_zero_row();
        q.push_zero_row();
        let per = MomentDtype::Q8.rows_per_page(128, m);
        assert_eq!(per, (4 << 20) / 528);
        assert_eq!(q.bytes(), per as u64 * 528);
        assert_eq!(q.rows(), 2);
        assert_eq!(MomentDtype::Q8.paged_bytes(128, m, 2), per as u64 * 528);
        assert_eq!(
            MomentDtype::Q8.paged_bytes(128, m, per as u64 + 1),
            2 * per as u64 * 528
        );
        // A store smaller than a page takes one page of exactly its size.
        assert_eq!(MomentDtype::F32.rows_per_page(128, 64), 64);
        assert_eq!(MomentDtype::F32.paged_bytes(128, 64, 1), 64 * 2048);
    }

    #[test]
    fn pages_grow_without_moving_rows_and_list_only_used_ones() {
        let mut p = Pages::<u32>::new(2, 3);
        for r in 0..7u32 {
            p.push_default_row();
            p.row_mut(r as usize).copy_from_slice(&[10 * r, 10 * r + 1]);
        }
        assert_eq!(p.rows(), 7);
        // Three pages of three rows of two u32 values.
        assert_eq!(p.bytes(), 3 * 3 * 2 * 4);
        let lens: Vec<usize> = p.pieces().iter().map(|x| x.len()).collect();
        assert_eq!(lens, [6, 6, 2]);
        assert_eq!(p.row(4), &[40, 41]);
        let flat: Vec<u32> = p.pieces().concat();
        assert_eq!(flat[12..], [60, 61]);
        let mut q = Pages::<u32>::with_rows(2, 3, 7);
        for (dst, src) in q.pieces_mut().into_iter().zip(p.pieces()) {
            dst.copy_from_slice(src);
        }
        assert_eq!(q.row(6), &[60, 61]);
    }

    #[test]
    fn update_round_trips_through_each_dtype() {
        let d = 3;
        for dtype in [MomentDtype::F32, MomentDtype::Bf16, MomentDtype::Q8] {
            let mut rows = MomentRows::new(dtype, d, 4);
            rows.push_zero_row();
            let mut scratch = Vec::new();
            rows.update(0, &mut scratch, |s| {
                for (i, x) in s.iter_mut().enumerate() {
                    *x = (i + 1) as f32 * 0.125;
                }
            });
            let back = rows.decoded(0);
            for (i, y) in back.iter().enumerate() {
                let x = (i + 1) as f32 * 0.125;
                assert!((y - x).abs() <= x * 0.06, "{dtype:?}: {x} → {y}");
            }
        }
    }
}
