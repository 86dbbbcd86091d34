//! The dense Parallel Adapter baseline: Adapter(u) = SiLU(u Kᵀ) V with all
//! parameters on the device, same placement and initialisation as MEFT.

use crate::model::Hooks;
use candle_core::{Device, Result, Tensor, Var};

pub struct ParallelAdapter {
    pub layers: Vec<(usize, Var, Var)>,
    pub size: usize,
}

impl ParallelAdapter {
    pub fn new(
        size: usize,
        d: usize,
        layers: &[usize],
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut out = Vec::with_capacity(layers.len());
        for &l in layers {
            let mut rng =
                crate::rng::seeded(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(l as u64 + 1)));
            let keys = crate::rng::normal_vec(&mut rng, size * d, 0.02);
            let k = Var::from_tensor(&Tensor::from_vec(keys, (size, d), device)?)?;
            let v = Var::zeros((size, d), candle_core::DType::F32, device)?;
            out.push((l, k, v));
        }
        Ok(Self { layers: out, size })
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .flat_map(|(l, k, v)| {
                [
                    (format!("parallel.{l}.keys"), k.clone()),
                    (format!("parallel.{l}.values"), v.clone()),
                ]
            })
            .collect()
    }
}

impl Hooks for ParallelAdapter {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        let Some((_, k, v)) = self.layers.iter().find(|(l, _, _)| *l == layer) else {
            return Ok(None);
        };
        let (b, s, d) = u.dims3()?;
        let u2 = u.reshape((b * s, d))?;
        let a = crate::model::ops::silu(&u2.matmul(&k.as_tensor().t()?)?)?;
        Ok(Some(a.matmul(v.as_tensor())?.reshape((b, s, d))?))
    }
}
