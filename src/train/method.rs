//! The trainable part of a run, whichever method the config names, behind
//! one type that the loop drives: hooks for the forward pass, device
//! variables for the device optimizer, and the MEFT host store.

use crate::adapter::lora::Lora;
use crate::adapter::meft::{HostOptimizer, MeftAdapter, MeftShape, Routing};
use crate::adapter::parallel::ParallelAdapter;
use crate::config::Experiment;
use crate::model::{Hooks, Model, Proj};
use crate::optim::moments::MomentDtype;
use candle_core::{Result, Tensor, Var};

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
        Ok(match exp.method.kind.as_str() {
            "none" => (Method::None, Vec::new()),
            "full" => {
                let vars = model.make_trainable(true)?;
                (Method::Full, vars)
            }
            "meft" => {
                let m = &exp.method.meft;
                let layers = m.layers.resolve(cfg.num_layers)?;
                let shape = MeftShape {
                    d,
                    neurons: m.neurons,
                    top_k: m.top_k,
                    experts: m.resolved_experts(),
                    probe: m.probe,
                    routing: if m.routing == "full" {
                        Routing::Full
                    } else {
                        Routing::KeyExperts
                    },
                };
                let host = if m.host_optimizer == "dense" {
                    HostOptimizer::Dense
                } else {
                    HostOptimizer::Lazy
                };
                let moments = MomentDtype::parse(&m.moments).ok_or_else(|| {
                    anyhow::anyhow!(
                        "method.meft.moments: expected one of {}, got {:?}",
                        MomentDtype::NAMES.join(", "),
                        m.moments
                    )
                })?;
                let ad =
                    MeftAdapter::new(shape, &layers, cfg.num_layers, seed, host, moments, &dev)?;
                let vars = ad.device_vars();
                (Method::Meft(Box::new(ad)), vars)
            }
            "parallel" => {
                let layers = exp.method.meft.layers.resolve(cfg.num_layers)?;
                let p = ParallelAdapter::new(exp.method.parallel.size, d, &layers, seed, &dev)?;
                let vars = p.vars();
                (Method::Parallel(p), vars)
            }
            "lora" => {
                let l = &exp.method.lora;
                let targets: Vec<Proj> = l
                    .targets
                    .iter()
                    .filter_map(|t| Proj::ALL.into_iter().find(|p| p.name() == t))
                    .collect();
                let q = cfg.num_heads * cfg.head_dim;
                let kv = cfg.num_kv_heads * cfg.head_dim;
                let f = cfg.intermediate_size;
                let dims = |p: Proj| match p {
                    Proj::QProj => (d, q),
                    Proj::KProj | Proj::VProj => (d, kv),
                    Proj::OProj => (q, d),
                    Proj::GateProj | Proj::UpProj => (d, f),
                    Proj::DownProj => (f, d),
                };
                let lora = Lora::new(
                    l.rank,
                    l.alpha,
                    l.dropout,
                    &targets,
                    cfg.num_layers,
                    dims,
                    seed,
                    &dev,
                )?;
                let vars = lora.vars();
                (Method::Lora(lora), vars)
            }
            other => anyhow::bail!("method.kind: unknown method {other:?}"),
        })
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

    /// Training mode (LoRA dropout on) or evaluation mode.
    pub fn set_train(&mut self, train: bool) {
        match self {
            Method::Lora(l) => l.train = train,
            Method::Meft(m) => m.training = train,
            _ => {}
        }
    }

    /// One line describing the adapter.
    pub fn describe(exp: &Experiment) -> String {
        let m = &exp.method.meft;
        match exp.method.kind.as_str() {
            "meft" => format!(
                "MEFT M {} K {} E {} P {}{}",
                m.neurons,
                m.top_k,
                m.resolved_experts(),
                m.probe,
                if m.routing == "full" {
                    " full-scan"
                } else {
                    ""
                }
            ),
            "parallel" => format!("Parallel Adapter {}", exp.method.parallel.size),
            "lora" => format!(
                "LoRA r {} α {} on {}",
                exp.method.lora.rank,
                exp.method.lora.alpha,
                exp.method.lora.targets.join(",")
            ),
            "full" => "full fine-tuning".into(),
            _ => "frozen base".into(),
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
