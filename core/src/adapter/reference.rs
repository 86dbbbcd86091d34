//! The dense reference of a MEFT layer, as the authors' code computes it: all
//! M keys on the device, non-probed experts and non-kept neurons masked out.
//! Kept for the equivalence tests of the offloaded path.

use super::meft::{MeftShape, Routing};
use crate::model::Hooks;
use candle_core::{Result, Tensor, Var, D};

pub struct DenseMeftLayer {
    pub layer: usize,
    /// M × d
    pub keys: Var,
    /// M × d
    pub values: Var,
    /// E × d (Key-Experts routing only)
    pub router: Option<Var>,
}

/// Output of one reference layer for queries `q` (N × d).
pub fn dense_output(shape: &MeftShape, l: &DenseMeftLayer, q: &Tensor) -> Result<Tensor> {
    let (n, _) = q.dims2()?;
    let m = shape.neurons;
    let kpe = shape.keys_per_expert();
    let scores = q.matmul(&l.keys.as_tensor().t()?)?; // N × M
    let o = match (&l.router, shape.routing) {
        (Some(router), Routing::KeyExperts) => {
            let logits = q.matmul(&router.as_tensor().t()?)?; // N × E
            let lv: Vec<Vec<f32>> = logits
                .detach()
                .to_dtype(candle_core::DType::F32)?
                .to_vec2()?;
            let mut probe_mask = vec![0f32; n * m];
            for (t, row) in lv.iter().enumerate() {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                idx.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
                for &e in idx.iter().take(shape.probe) {
                    for j in e * kpe..(e + 1) * kpe {
                        probe_mask[t * m + j] = 1.0;
                    }
                }
            }
            let expert_of: Vec<u32> = (0..m).map(|j| (j / kpe) as u32).collect();
            let expert_of = Tensor::from_vec(expert_of, m, q.device())?;
            let gates = logits.index_select(&expert_of, D::Minus1)?; // N × M
            let mask = Tensor::from_vec(probe_mask, (n, m), q.device())?.to_dtype(q.dtype())?;
            ((gates * scores)? * mask)?
        }
        _ => scores,
    };
    // Top-K of o per token (zeros of non-probed keys may be picked).
    let ov: Vec<Vec<f32>> = o.detach().to_dtype(candle_core::DType::F32)?.to_vec2()?;
    let mut keep = vec![0f32; n * m];
    for (t, row) in ov.iter().enumerate() {
        let mut idx: Vec<usize> = (0..m).collect();
        idx.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
        for &j in idx.iter().take(shape.top_k) {
            keep[t * m + j] = 1.0;
        }
    }
    let keep = Tensor::from_vec(keep, (n, m), q.device())?.to_dtype(q.dtype())?;
    let a = (o.relu()? * keep)?;
    a.matmul(l.values.as_tensor())
}

/// The reference over several layers, as model hooks.
pub struct DenseMeft {
    pub shape: MeftShape,
    pub layers: Vec<DenseMeftLayer>,
}

impl Hooks for DenseMeft {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        let Some(l) = self.layers.iter().find(|l| l.layer == layer) else {
            return Ok(None);
        };
        let (b, s, d) = u.dims3()?;
        let out = dense_output(&self.shape, l, &u.reshape((b * s, d))?)?;
        Ok(Some(out.reshape((b, s, d))?))
    }
}
