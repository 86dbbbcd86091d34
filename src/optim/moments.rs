//! AdamW moments of the MEFT host store, kept per row in a chosen dtype:
//! `f32` (exact), `bf16` (half the bytes) or `q8`, 8-bit block-wise
//! quantisation in the manner of bitsandbytes' 8-bit Adam (about a quarter
//! of the bytes). A row's state is four blocks of `d` values — m and v of
//! its key, then m and v of its value — and each q8 block keeps its own
//! absolute maximum and codes on a logarithmic grid below it, so small
//! second moments keep their relative precision (a linear grid would round
//! them to zero and blow the update up).

use half::bf16;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentDtype {
    F32,
    Bf16,
    Q8,
}

impl MomentDtype {
    pub const NAMES: [&'static str; 3] = ["f32", "bf16", "q8"];

    pub fn name(self) -> &'static str {
        match self {
            MomentDtype::F32 => "f32",
            MomentDtype::Bf16 => "bf16",
            MomentDtype::Q8 => "q8",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(MomentDtype::F32),
            "bf16" => Some(MomentDtype::Bf16),
            "q8" => Some(MomentDtype::Q8),
            _ => None,
        }
    }

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

/// Rows of moment state in one dtype, addressed by slot.
#[derive(Debug, Clone)]
pub enum MomentRows {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    Q8 { codes: Vec<u8>, scales: Vec<f32> },
}

impl MomentRows {
    pub fn new(dtype: MomentDtype) -> Self {
        match dtype {
            MomentDtype::F32 => MomentRows::F32(Vec::new()),
            MomentDtype::Bf16 => MomentRows::Bf16(Vec::new()),
            MomentDtype::Q8 => MomentRows::Q8 {
                codes: Vec::new(),
                scales: Vec::new(),
            },
        }
    }

    pub fn dtype(&self) -> MomentDtype {
        match self {
            MomentRows::F32(_) => MomentDtype::F32,
            MomentRows::Bf16(_) => MomentDtype::Bf16,
            MomentRows::Q8 { .. } => MomentDtype::Q8,
        }
    }

    /// Rows held, given the row width `d`.
    pub fn rows(&self, d: usize) -> usize {
        let w = BLOCKS * d.max(1);
        match self {
            MomentRows::F32(v) => v.len() / w,
            MomentRows::Bf16(v) => v.len() / w,
            MomentRows::Q8 { codes, .. } => codes.len() / w,
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            MomentRows::F32(v) => 4 * v.len() as u64,
            MomentRows::Bf16(v) => 2 * v.len() as u64,
            MomentRows::Q8 { codes, scales } => codes.len() as u64 + 4 * scales.len() as u64,
        }
    }

    /// Append one zeroed row.
    pub fn push_zero_row(&mut self, d: usize) {
        let w = BLOCKS * d;
        match self {
            MomentRows::F32(v) => v.resize(v.len() + w, 0.0),
            MomentRows::Bf16(v) => v.resize(v.len() + w, 0),
            MomentRows::Q8 { codes, scales } => {
                codes.resize(codes.len() + w, 0);
                scales.resize(scales.len() + BLOCKS, 0.0);
            }
        }
    }

    /// Run `f` on slot `slot`'s state as f32 (4·d values: m_k, v_k, m_v,
    /// v_v). `scratch` holds the decoded copy for the compact dtypes.
    pub fn update(
        &mut self,
        slot: usize,
        d: usize,
        scratch: &mut Vec<f32>,
        f: impl FnOnce(&mut [f32]),
    ) {
        let w = BLOCKS * d;
        match self {
            MomentRows::F32(v) => f(&mut v[slot * w..(slot + 1) * w]),
            MomentRows::Bf16(v) => {
                let src = &mut v[slot * w..(slot + 1) * w];
                scratch.clear();
                scratch.extend(src.iter().map(|&b| bf16::from_bits(b).to_f32()));
                f(scratch);
                for (dst, &x) in src.iter_mut().zip(scratch.iter()) {
                    *dst = bf16::from_f32(x).to_bits();
                }
            }
            MomentRows::Q8 { codes, scales } => {
                scratch.resize(w, 0.0);
                for b in 0..BLOCKS {
                    let c = &codes[slot * w + b * d..slot * w + (b + 1) * d];
                    q8_decode(
                        c,
                        scales[slot * BLOCKS + b],
                        signed_block(b),
                        &mut scratch[b * d..(b + 1) * d],
                    );
                }
                f(scratch);
                for b in 0..BLOCKS {
                    let c = &mut codes[slot * w + b * d..slot * w + (b + 1) * d];
                    scales[slot * BLOCKS + b] =
                        q8_encode(&scratch[b * d..(b + 1) * d], signed_block(b), c);
                }
            }
        }
    }

    /// Slot `slot`'s state decoded to f32 (for tests and inspection).
    pub fn decoded(&self, slot: usize, d: usize) -> Vec<f32> {
        let mut copy = self.clone();
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        copy.update(slot, d, &mut scratch, |s| out = s.to_vec());
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
        let mut q = MomentRows::new(MomentDtype::Q8);
        q.push_zero_row(128);
        q.push_zero_row(128);
        assert_eq!(q.bytes(), 2 * 528);
        assert_eq!(q.rows(128), 2);
    }

    #[test]
    fn update_round_trips_through_each_dtype() {
        let d = 3;
        for dtype in [MomentDtype::F32, MomentDtype::Bf16, MomentDtype::Q8] {
            let mut rows = MomentRows::new(dtype);
            rows.push_zero_row(d);
            let mut scratch = Vec::new();
            rows.update(0, d, &mut scratch, |s| {
                for (i, x) in s.iter_mut().enumerate() {
                    *x = (i + 1) as f32 * 0.125;
                }
            });
            let back = rows.decoded(0, d);
            for (i, y) in back.iter().enumerate() {
                let x = (i + 1) as f32 * 0.125;
                assert!((y - x).abs() <= x * 0.06, "{dtype:?}: {x} → {y}");
            }
        }
    }
}
