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
    /// The model the weights start from: `embedded:tiny-random` (seeded
    /// weights) for a base from scratch, or a base to train further.
    pub from: String,
    pub entities: usize,
    /// ToolBench requests of the base's own world (its own tool catalogue)
    /// added to the questions: their answers copy tool names out of the
    /// request, which questions about people never ask for.
    pub tools: usize,
    pub seed: u64,
    pub steps: usize,
    pub lr: f64,
    pub batch: usize,
    pub cutoff_len: usize,
    /// Where the base is written (model.safetensors, tokenizer.json, pretrain.toml).
    pub out: PathBuf,
    /// Where the run directory goes.
    pub runs: PathBuf,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            from: "embedded:tiny-random".into(),
            entities: 100,
            tools: 0,
            seed: 11,
            steps: 3000,
            lr: 3e-3,
            batch: 32,
            cutoff_len: 96,
            out: PathBuf::from("assets/tiny"),
            runs: PathBuf::from("runs"),
        }
    }
}

/// Catalogue size of the pretraining world's tools: many more than a
/// preset's, so copying a name is learnt rather than a list of names.
const PRETRAIN_TOOLS_POOL: usize = 200;

/// The pretraining world's question files: every template (train ∪ test) in
/// one file for training, with `opts.tools` ToolBench requests of the same
/// world written as questions whose answer is the request's target; the
/// held-out template alone for scoring.
pub fn world_files(opts: &PretrainOptions) -> Result<(PathBuf, PathBuf)> {
    let spec = crate::data::synth::WorldSpec {
        entities: opts.entities,
        seed: opts.seed,
        namespace: PRETRAIN_NAMESPACE,
        ..Default::default()
    };
    let mut name = format!("pretrain-e{}-s{}", opts.entities, opts.seed);
    if opts.tools > 0 {
        name.push_str(&format!("-t{}", opts.tools));
    }
    let dir = crate::data::spec::cache_dir().join("data").join(name);
    crate::data::synth::write(crate::data::Task::Nq, &spec, &dir)?;
    let train = std::fs::read_to_string(dir.join("train.jsonl"))?;
    let test = std::fs::read_to_string(dir.join("test.jsonl"))?;
    let mut all = format!("{train}{test}");
    if opts.tools > 0 {
        let tools = crate::data::synth::WorldSpec {
            entities: opts.tools,
            pool: PRETRAIN_TOOLS_POOL,
            ..spec
        };
        let tools_dir = dir.join("tools");
        let report = crate::data::synth::write(crate::data::Task::ToolBench, &tools, &tools_dir)?;
        for ex in crate::data::load(crate::data::Task::ToolBench, &report.train)? {
            let row = serde_json::json!({ "question": ex.instruction, "answer": [ex.target] });
            all.push_str(&serde_json::to_string(&row)?);
            all.push('\n');
        }
    }
    let all_path = dir.join("all.jsonl");
    crate::fsx::write_atomic(&all_path, all.as_bytes())?;
    Ok((all_path, dir.join("test.jsonl")))
}

pub fn experiment(opts: &PretrainOptions) -> Result<Experiment> {
    let (all, test) = world_files(opts)?;
    let mut exp = Experiment {
        name: "pretrain-tiny".into(),
        ..Default::default()
    };
    exp.model.reference = opts.from.clone();
    exp.data.task = crate::config::Task::Nq;
    exp.data.train = all.display().to_string();
    exp.data.eval = test.display().to_string();
    exp.data.template = crate::config::Template::Plain;
    exp.method.kind = crate::config::MethodKind::Full;
    exp.train.lr = opts.lr;
    exp.train.batch = opts.batch;
    exp.train.micro_batch = opts.batch;
    exp.train.steps = opts.steps;
    exp.train.cutoff_len = opts.cutoff_len;
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
