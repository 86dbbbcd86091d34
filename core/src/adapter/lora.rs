//! LoRA on selected projections: delta = dropout(x) Aᵀ Bᵀ · α/r, with A
//! Kaiming-uniform and B = 0 so training starts from the base model.

use crate::model::{Hooks, Proj};
use candle_core::{DType, Device, Result, Tensor, Var};

pub struct LoraPair {
    pub layer: usize,
    pub proj: Proj,
    /// r × in
    pub a: Var,
    /// out × r
    pub b: Var,
}

pub struct Lora {
    pub pairs: Vec<LoraPair>,
    pub scale: f64,
    pub dropout: f64,
    /// Seeds dropout masks; the trainer sets it per micro-batch so a resumed
    /// run draws the same masks.
    pub mask_seed: u64,
    pub train: bool,
    calls: u64,
}

impl Lora {
    /// `dims(proj)` gives (in, out) of a projection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rank: usize,
        alpha: f64,
        dropout: f64,
        targets: &[Proj],
        layers: usize,
        dims: impl Fn(Proj) -> (usize, usize),
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut rng = crate::rng::seeded(seed);
        for layer in 0..layers {
            for &proj in targets {
                let (fan_in, out) = dims(proj);
                // Kaiming-uniform with a = √5 (PyTorch's Linear default): bound = 1/√fan_in.
                let bound = 1.0 / (fan_in as f32).sqrt();
                let a = crate::rng::uniform_vec(&mut rng, rank * fan_in, bound);
                let a = Var::from_tensor(&Tensor::from_vec(a, (rank, fan_in), device)?)?;
                let b = Var::zeros((out, rank), DType::F32, device)?;
                pairs.push(LoraPair { layer, proj, a, b });
            }
        }
        Ok(Self {
            pairs,
            scale: alpha / rank as f64,
            dropout,
            mask_seed: seed,
            train: true,
            calls: 0,
        })
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        self.pairs
            .iter()
            .flat_map(|p| {
                let n = format!("lora.{}.{}", p.layer, p.proj.name());
                [
                    (format!("{n}.a"), p.a.clone()),
                    (format!("{n}.b"), p.b.clone()),
                ]
            })
            .collect()
    }

    /// Restart the dropout stream for a micro-batch.
    pub fn reseed(&mut self, seed: u64) {
        self.mask_seed = seed;
        self.calls = 0;
    }
}

impl Hooks for Lora {
    fn proj(&mut self, layer: usize, proj: Proj, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(p) = self
            .pairs
            .iter()
            .find(|p| p.layer == layer && p.proj == proj)
        else {
            return Ok(None);
        };
        let x = if self.train && self.dropout > 0.0 {
            self.calls += 1;
            let mut rng =
                crate::rng::seeded(self.mask_seed.wrapping_mul(31).wrapping_add(self.calls));
            let keep = 1.0 - self.dropout;
            let mask: Vec<f32> = (0..x.elem_count())
                .map(|_| {
                    if rand::Rng::random::<f64>(&mut rng) < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
            (x * mask)?
        } else {
            x.clone()
        };
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, dims[dims.len() - 1]))?;
        let h = x2.matmul(&p.a.as_tensor().t()?)?;
        let y = h.matmul(&p.b.as_tensor().t()?)?;
        let mut out_dims = dims[..dims.len() - 1].to_vec();
        out_dims.push(y.dim(1)?);
        Ok(Some((y * self.scale)?.reshape(out_dims)?))
    }
}
