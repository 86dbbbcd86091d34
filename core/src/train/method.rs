//! The trainable part of a run, whichever method the config names, behind
//! one type that the loop drives: hooks for the forward pass, device
//! variables for the device optimizer, and whatever the method keeps on the
//! host (MEFT's store and its optimizer) with its checkpoint, ledger and
//! statistics. The loop never looks inside a method.

use crate::adapter::lora::Lora;
use crate::adapter::meft::StepStats;
use crate::adapter::meft::{MeftAdapter, MeftShape};
use crate::adapter::parallel::ParallelAdapter;
use crate::checkpoint::{CheckpointReader, CheckpointWriter};
use crate::config::{Experiment, MethodKind, Routing};
use crate::event::{HistogramEvent, Ledger};
use crate::model::{Hooks, Model, Proj};
use crate::optim::AdamWConfig;
use candle_core::{Result, Tensor, Var};

/// MEFT's shape on `model` and the layers it attaches to.
fn meft_shape(exp: &Experiment, model: &Model) -> anyhow::Result<(MeftShape, Vec<usize>)> {
    let m = &exp.method.meft;
    let layers = m.resolve_layers(model.config.num_layers)?;
    let shape = MeftShape {
        d: model.config.hidden_size,
        neurons: m.neurons,
        top_k: m.top_k,
        experts: m.resolved_experts(),
        probe: m.probe,
        routing: m.routing,
    };
    Ok((shape, layers))
}

pub enum Method {
    None,
    Full,
    Meft(Box<MeftAdapter>),
    Parallel(ParallelAdapter),
    Lora(Lora),
}

impl Method {
    /// Build the method of `exp` on `model` (full fine-tuning turns the
    /// model's weights into variables). Returns the device variables too.
    pub fn build(
        exp: &Experiment,
        model: &mut Model,
    ) -> anyhow::Result<(Self, Vec<(String, Var)>)> {
        let cfg = &model.config;
        let d = cfg.hidden_size;
        let seed = exp.train.seed;
        let dev = model.device.clone();
        Ok(match exp.method.kind {
            MethodKind::None => (Method::None, Vec::new()),
            MethodKind::Full => {
                let vars = model.make_trainable(true)?;
                (Method::Full, vars)
            }
            MethodKind::Meft => {
                let m = &exp.method.meft;
                let (shape, layers) = meft_shape(exp, model)?;
                let ad = MeftAdapter::new(
                    shape,
                    &layers,
                    cfg.num_layers,
                    seed,
                    m.host_optimizer,
                    m.moments,
                    &dev,
                )?
                .with_row_cache(m.row_cache)
                .with_overlap(m.pre_retrieval, m.async_host_optim)
                .with_device_path(
                    m.composed_on(&exp.model.device),
                    m.resolved_row_dtype(exp.model.dtype).dtype(),
                )?;
                let vars = ad.device_vars();
                (Method::Meft(Box::new(ad)), vars)
            }
            MethodKind::Parallel => {
                let layers = exp.method.meft.layers.resolve(cfg.num_layers)?;
                let p = ParallelAdapter::new(exp.method.parallel.size, d, &layers, seed, &dev)?;
                let vars = p.vars();
                (Method::Parallel(p), vars)
            }
            MethodKind::Lora => {
                let l = &exp.method.lora;
                let dims = |p: Proj| {
                    let (i, o) = cfg.projection_shape(p);
                    (i as usize, o as usize)
                };
                let lora = Lora::new(
                    l.rank,
                    l.alpha,
                    l.dropout,
                    &l.targets,
                    cfg.num_layers,
                    dims,
                    seed,
                    &dev,
                )?;
                let vars = lora.vars();
                (Method::Lora(lora), vars)
            }
        })
    }

    /// The method of `exp` on `model` for decoding only, its weights from
    /// `file` (a checkpoint, or a `meft` export with no optimizer state):
    /// MEFT's rows mapped from the file rather than read into memory, the
    /// device variables read; evaluation mode.
    pub fn for_decoding(
        exp: &Experiment,
        model: &mut Model,
        file: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let mut r = CheckpointReader::open(file)?;
        let mut method = match exp.method.kind {
            MethodKind::Meft => {
                let m = &exp.method.meft;
                let (shape, layers) = meft_shape(exp, model)?;
                let ad = MeftAdapter::mapped(
                    shape,
                    &layers,
                    model.config.num_layers,
                    &model.device,
                    &r,
                )?
                .with_device_path(
                    m.composed_on(&exp.model.device),
                    m.resolved_row_dtype(exp.model.dtype).dtype(),
                )?;
                crate::optim::restore_vars(&ad.device_vars(), &mut r)?;
                Method::Meft(Box::new(ad))
            }
            _ => {
                let (method, vars) = Self::build(exp, model)?;
                crate::optim::restore_vars(&vars, &mut r)?;
                method
            }
        };
        method.set_train(false);
        Ok(method)
    }

    pub fn meft(&self) -> Option<&MeftAdapter> {
        match self {
            Method::Meft(m) => Some(m),
            _ => None,
        }
    }

    pub fn meft_mut(&mut self) -> Option<&mut MeftAdapter> {
        match self {
            Method::Meft(m) => Some(m),
            _ => None,
        }
    }

    /// Before each optimizer step's first micro-batch: MEFT starts counting
    /// unions afresh, and pick statistics for the histograms when `stats`.
    pub fn begin_step(&mut self, stats: bool) -> Result<()> {
        if let Method::Meft(m) = self {
            m.collect_stats = stats;
            m.union_log.clear();
            m.discard_pending()?;
        }
        Ok(())
    }

    /// Wait for the host workers (an optimizer step running behind), so
    /// that the host state can be read whole: before a checkpoint, a check,
    /// an evaluation.
    pub fn settle(&mut self) -> Result<()> {
        match self {
            Method::Meft(m) => m.settle(),
            _ => Ok(()),
        }
    }

    /// Before each micro-batch: LoRA's dropout masks follow `seed`.
    pub fn begin_micro_batch(&mut self, seed: u64) {
        if let Method::Lora(l) = self {
            l.reseed(seed);
        }
    }

    /// After a micro-batch's backward pass: MEFT's row gradients go to the
    /// host accumulators.
    pub fn after_backward(&mut self) -> Result<()> {
        match self {
            Method::Meft(m) => m.collect_grads(),
            _ => Ok(()),
        }
    }

    /// After a step's last micro-batch's backward pass: MEFT's row cache
    /// sends its summed gradients to the host accumulators.
    pub fn end_micro_batches(&mut self) -> Result<()> {
        match self {
            Method::Meft(m) => m.end_micro_batches(),
            _ => Ok(()),
        }
    }

    /// Σ g² of the gradients held on the host (for global-norm clipping).
    pub fn host_grad_sq_norm(&mut self) -> Result<f64> {
        match self {
            Method::Meft(m) => m.host_grad_sq_norm(),
            _ => Ok(0.0),
        }
    }

    /// The host optimizer's step; returns the rows it updated and the bytes
    /// its accumulators held at their fullest.
    pub fn host_step(&mut self, lr: f64, scale: f64, cfg: &AdamWConfig) -> Result<(u64, u64)> {
        match self {
            Method::Meft(m) => {
                m.settle()?;
                let acc = m.accumulator_bytes();
                Ok((m.host_step(lr, scale, cfg)? as u64, acc))
            }
            _ => Ok((0, 0)),
        }
    }

    /// The step's traffic and unions (empty for methods that move nothing).
    pub fn take_step_stats(&mut self) -> StepStats {
        self.meft_mut()
            .map(|m| m.take_step_stats())
            .unwrap_or_default()
    }

    pub fn histograms(&mut self, step: u64) -> Vec<HistogramEvent> {
        self.meft_mut()
            .map(|m| m.histograms(step))
            .unwrap_or_default()
    }

    /// Bytes the method holds in host memory, by category.
    pub fn host_ledger(&self, accumulators: u64) -> Ledger {
        self.meft()
            .map(|m| m.host_ledger(accumulators))
            .unwrap_or_default()
    }

    /// Trainable parameters kept on the host.
    pub fn host_params(&self) -> u64 {
        self.meft().map_or(0, |m| m.store_bytes() / 4)
    }

    /// Rows per layer with host moments (mean over layers), when the method
    /// has any.
    pub fn moment_rows(&self) -> Option<u64> {
        self.meft().map(|m| {
            let rows: usize = m.layers.iter().map(|l| l.rows_with_moments()).sum();
            (rows / m.layers.len().max(1)) as u64
        })
    }

    /// Host state into a checkpoint (device variables are the loop's).
    pub fn save<'a>(&'a self, w: &mut CheckpointWriter<'a>) -> anyhow::Result<()> {
        match self.meft() {
            Some(m) => m.save(w),
            None => Ok(()),
        }
    }

    pub fn restore(&mut self, r: &mut CheckpointReader) -> anyhow::Result<()> {
        match self.meft_mut() {
            Some(m) => {
                m.settle()?;
                m.restore(r)
            }
            None => Ok(()),
        }
    }

    /// Every host-held parameter is finite (after [`Method::settle`]).
    pub fn host_finite(&self) -> bool {
        self.meft().is_none_or(|m| {
            use rayon::prelude::*;
            m.layers.iter().all(|l| {
                let finite = |v: &[f32]| {
                    v.par_chunks(1 << 16)
                        .all(|c| c.iter().all(|x| x.is_finite()))
                };
                finite(&l.store.keys) && finite(&l.store.values)
            })
        })
    }

    /// Training mode (LoRA dropout on) or evaluation mode.
    pub fn set_train(&mut self, train: bool) {
        match self {
            Method::Lora(l) => l.train = train,
            Method::Meft(m) => {
                m.training = train;
                // Decoding's picks are not a training step's.
                m.collect_stats &= train;
            }
            _ => {}
        }
    }

    /// One line describing the adapter.
    pub fn describe(exp: &Experiment) -> String {
        let m = &exp.method.meft;
        match exp.method.kind {
            MethodKind::Meft => format!(
                "MEFT M {} K {} E {} P {}{}",
                m.neurons,
                m.top_k,
                m.resolved_experts(),
                m.probe,
                if m.routing == Routing::Full {
                    " full-scan"
                } else {
                    ""
                }
            ),
            MethodKind::Parallel => format!("Parallel Adapter {}", exp.method.parallel.size),
            MethodKind::Lora => format!(
                "LoRA r {} α {} on {}",
                exp.method.lora.rank,
                exp.method.lora.alpha,
                exp.method
                    .lora
                    .targets
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            MethodKind::Full => "full fine-tuning".into(),
            MethodKind::None => "frozen base".into(),
        }
    }
}

impl Hooks for Method {
    fn ffn(&mut self, layer: usize, u: &Tensor) -> Result<Option<Tensor>> {
        match self {
            Method::Meft(m) => m.ffn(layer, u),
            Method::Parallel(p) => p.ffn(layer, u),
            _ => Ok(None),
        }
    }

    fn proj(&mut self, layer: usize, proj: Proj, x: &Tensor) -> Result<Option<Tensor>> {
        match self {
            Method::Lora(l) => l.proj(layer, proj, x),
            _ => Ok(None),
        }
    }
}
