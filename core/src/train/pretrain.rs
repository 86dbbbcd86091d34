//! Pretraining the embedded tiny base: full fine-tuning from seeded weights on
//! a synthetic world of its own (namespace [`PRETRAIN_NAMESPACE`]), every
//! question template included, so the base speaks the format and knows those
//! facts — and nothing about the worlds the presets inject later.

use crate::config::Experiment;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Presets draw their facts from namespace 0; the base's own facts live here.
pub const PRETRAIN_NAMESPACE: u64 = 1;

#[derive(Debug, Clone)]
pub struct PretrainOptions {
    pub entities: usize,
    pub seed: u64,
    pub steps: usize,
    pub lr: f64,
    pub batch: usize,
    /// Where the base is written (model.safetensors, tokenizer.json, pretrain.toml).
    pub out: PathBuf,
    /// Where the run directory goes.
    pub runs: PathBuf,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            entities: 100,
            seed: 11,
            steps: 3000,
            lr: 3e-3,
            batch: 32,
            out: PathBuf::from("assets/tiny"),
            runs: PathBuf::from("runs"),
        }
    }
}

/// The pretraining world's question files: every template (train ∪ test) in
/// one file for training, the held-out template alone for scoring.
pub fn world_files(opts: &PretrainOptions) -> Result<(PathBuf, PathBuf)> {
    let spec = crate::data::synth::WorldSpec {
        entities: opts.entities,
        seed: opts.seed,
        namespace: PRETRAIN_NAMESPACE,
        ..Default::default()
    };
    let dir = crate::data::spec::cache_dir()
        .join("data")
        .join(format!("pretrain-e{}-s{}", opts.entities, opts.seed));
    crate::data::synth::write(crate::data::Task::Nq, &spec, &dir)?;
    let train = std::fs::read_to_string(dir.join("train.jsonl"))?;
    let test = std::fs::read_to_string(dir.join("test.jsonl"))?;
    let all = dir.join("all.jsonl");
    crate::fsx::write_atomic(&all, format!("{train}{test}").as_bytes())?;
    Ok((all, dir.join("test.jsonl")))
}

pub fn experiment(opts: &PretrainOptions) -> Result<Experiment> {
    let (all, test) = world_files(opts)?;
    let mut exp = Experiment {
        name: "pretrain-tiny".into(),
        ..Default::default()
    };
    exp.model.reference = "embedded:tiny-random".into();
    exp.data.task = crate::config::Task::Nq;
    exp.data.train = all.display().to_string();
    exp.data.eval = test.display().to_string();
    exp.data.template = crate::config::Template::Plain;
    exp.method.kind = crate::config::MethodKind::Full;
    exp.train.lr = opts.lr;
    exp.train.batch = opts.batch;
    exp.train.micro_batch = opts.batch;
    exp.train.steps = opts.steps;
    exp.train.cutoff_len = 96;
    exp.train.seed = opts.seed;
    exp.train.checkpoint_every = 0;
    exp.eval.limit = 0;
    exp.eval.max_new_tokens = 24;
    exp.validate()?;
    Ok(exp)
}

/// Copy the base weights out of a full fine-tuning checkpoint into `out`.
pub fn export_base(run_dir: &Path, out: &Path, exp: &Experiment) -> Result<PathBuf> {
    let (_, ckpt) = crate::checkpoint::latest(&run_dir.join("checkpoints"))
        .with_context(|| format!("{}: no checkpoint to export", run_dir.display()))?;
    let mut r = crate::checkpoint::CheckpointReader::open(&ckpt)?;
    let names: Vec<String> = r
        .names()
        .filter(|n| n.starts_with("model.") || *n == "lm_head.weight")
        .map(str::to_string)
        .collect();
    let mut tensors = std::collections::HashMap::new();
    for name in names {
        let rank = r.info(&name)?.shape.len();
        let (shape, values) = r.read_vec::<f32>(&name, &vec![None; rank])?;
        let t = candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?;
        tensors.insert(name, t);
    }
    anyhow::ensure!(
        !tensors.is_empty(),
        "{}: no base weights in the checkpoint",
        ckpt.display()
    );
    std::fs::create_dir_all(out)?;
    let weights = out.join("model.safetensors");
    let tmp = out.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &weights)?;
    let tok = crate::model::Tokenizer::tiny(&[])?;
    crate::fsx::write_atomic(&out.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    // A Hugging Face config too, so the directory also loads as `hf:DIR`.
    let c = crate::model::load::tiny_config(tok.vocab_size());
    let config = crate::model::load::hf_config_json(&c, tok.bos_id, tok.eos_id);
    crate::fsx::write_atomic(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    exp.save(&out.join("pretrain.toml"))?;
    Ok(weights)
}
