//! A run's trained weights out of meft, from one of its checkpoints: LoRA as
//! a PEFT adapter, LoRA or full fine-tuning folded into the base as a Hugging
//! Face directory, and MEFT or the Parallel Adapter as the adapter alone
//! (without its optimizer state). Each export is written into a temporary
//! directory beside the destination and renamed into place, so a failed or
//! interrupted export leaves nothing half-written.

use super::method::Method;
use super::{load_base, Experiment};
use crate::config::{MethodKind, Proj};
use crate::model::{Model, Part, Tokenizer};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::config::{ExportFormat, GgufDtype};

/// A run's base with its method restored from one checkpoint.
pub struct Restored {
    pub exp: Experiment,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub method: Method,
    pub step: u64,
    pub checkpoint: PathBuf,
}

/// The checkpoint of `step` in `run_dir`, or its newest.
pub fn checkpoint_of(run_dir: &Path, step: Option<u64>) -> Result<(u64, PathBuf)> {
    let dir = run_dir.join("checkpoints");
    let Some(step) = step else {
        return crate::checkpoint::latest(&dir)
            .with_context(|| format!("{}: the run has no checkpoint", run_dir.display()));
    };
    let path = dir.join(crate::checkpoint::file_name(step));
    if path.is_file() {
        return Ok((step, path));
    }
    let have: Vec<String> = crate::checkpoint::steps(&dir)
        .iter()
        .map(u64::to_string)
        .collect();
    anyhow::bail!(
        "--step {step}: {} has no checkpoint of that step (it has: {})",
        run_dir.display(),
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        }
    )
}

/// The run's base, its method built as the run built it and restored from
/// the checkpoint of `step` (the newest when None), with `sets` applied to
/// the run's config.
pub fn restore_run(run_dir: &Path, step: Option<u64>, sets: &[String]) -> Result<Restored> {
    let exp = Experiment::load(&run_dir.join("config.toml"))?.apply_sets(sets)?;
    exp.validate()?;
    let (step, checkpoint) = checkpoint_of(run_dir, step)?;
    let crate::model::LoadedModel {
        mut model,
        tokenizer,
        ..
    } = load_base(&exp)?;
    let method = Method::for_decoding(&exp, &mut model, &checkpoint)?;
    Ok(Restored {
        exp,
        model,
        tokenizer,
        method,
        step,
        checkpoint,
    })
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub format: ExportFormat,
    pub out: PathBuf,
    pub step: u64,
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} export of step {} in {}:",
            self.format,
            self.step,
            self.out.display()
        )?;
        for file in &self.files {
            // The files were just written; one gone since reads as empty
            // rather than failing the summary of what was written.
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            write!(
                f,
                "\n  {}  {}",
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                crate::units::bytes(size)
            )?;
        }
        Ok(())
    }
}

/// Why `format` cannot be written for a run of `kind`, if it cannot.
fn refusal(format: ExportFormat, kind: MethodKind) -> Option<String> {
    use ExportFormat::*;
    use MethodKind as K;
    match (format, kind) {
        (Base, _) => None,
        (Peft, K::Lora) | (Merged | Gguf, K::Lora | K::Full) | (Meft, K::Meft | K::Parallel) => {
            None
        }
        (Peft | Merged | Gguf, K::Meft | K::Parallel) => Some(format!(
            "a {kind} adapter is not a low-rank change of the base's weights: it adds its own neurons beside the FFN, so it cannot be folded into the base or written as PEFT; export it with --format meft"
        )),
        (Peft, K::Full) => Some(
            "full fine-tuning changed every weight, which PEFT cannot hold; export it with --format merged".into(),
        ),
        (Meft, K::Lora | K::Full) => Some(format!(
            "this format holds MEFT and Parallel Adapter weights; export {kind} with --format {}",
            if kind == K::Lora { "peft or merged" } else { "merged" }
        )),
        (_, K::None) => Some("the run trained nothing (method.kind = \"none\")".into()),
    }
}

/// `meft export`: the run's weights at `step` (its newest checkpoint when
/// None) in `format` (GGUF's matrices in `gguf`), into `out`, which must not
/// exist or be empty.
pub fn export(
    run_dir: &Path,
    step: Option<u64>,
    format: ExportFormat,
    gguf: GgufDtype,
    out: &Path,
) -> Result<Exported> {
    let exp = Experiment::load(&run_dir.join("config.toml"))?;
    if let Some(why) = refusal(format, exp.method.kind) {
        anyhow::bail!("--format {format}: {why}");
    }
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        anyhow::ensure!(
            empty,
            "--out: {} exists and is not empty; name a new directory",
            out.display()
        );
    }
    // Checked before the base is loaded: a missing step says so at once.
    checkpoint_of(run_dir, step)?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into()),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}", tmp.display()))?;
    let written = write_export(run_dir, step, format, gguf, &tmp);
    let step = match written {
        Ok(step) => step,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("{}", out.display()))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("{}", out.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    Ok(Exported {
        format,
        out: out.to_path_buf(),
        step,
        files,
    })
}

fn write_export(
    run_dir: &Path,
    step: Option<u64>,
    format: ExportFormat,
    gguf: GgufDtype,
    dir: &Path,
) -> Result<u64> {
    match format {
        ExportFormat::Meft => return write_adapter(run_dir, step, dir),
        ExportFormat::Base => {
            let (step, _) = checkpoint_of(run_dir, step)?;
            let exp = Experiment::load(&run_dir.join("config.toml"))?;
            let base = load_base(&exp)?;
            write_hf(&base.model, &base.tokenizer, dir)?;
            return Ok(step);
        }
        _ => {}
    }
    let mut r = restore_run(run_dir, step, &[])?;
    match format {
        ExportFormat::Peft => write_peft(&r, dir)?,
        ExportFormat::Gguf => {
            fold_lora(&mut r)?;
            let (name, dtype) = match gguf {
                GgufDtype::F16 => ("model-f16.gguf", candle_core::quantized::GgmlDType::F16),
                GgufDtype::Q8_0 => ("model-q8_0.gguf", candle_core::quantized::GgmlDType::Q8_0),
            };
            crate::model::gguf_write::write_gguf(&r.model, &r.tokenizer, &dir.join(name), dtype)?;
        }
        _ => {
            fold_lora(&mut r)?;
            write_hf(&r.model, &r.tokenizer, dir)?;
        }
    }
    Ok(r.step)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    crate::fsx::write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
        .with_context(|| format!("{}", path.display()))
}

fn save_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path).with_context(|| format!("{}", path.display()))
}

/// PEFT's name of a LoRA factor: the projection's module path under
/// `base_model.model.`, then `lora_A.weight` or `lora_B.weight`.
pub fn peft_name(model: &Model, layer: usize, proj: Proj, factor: char) -> String {
    let weight = crate::model::hf_part_name(model.config.arch, layer, Part::Weight(proj));
    let module = weight.strip_suffix(".weight").unwrap_or(&weight);
    format!("base_model.model.{module}.lora_{factor}.weight")
}

fn write_peft(r: &Restored, dir: &Path) -> Result<()> {
    let Method::Lora(lora) = &r.method else {
        anyhow::bail!("--format peft: the run's method is not LoRA");
    };
    let mut tensors = Vec::new();
    for p in &lora.pairs {
        tensors.push((
            peft_name(&r.model, p.layer, p.proj, 'A'),
            p.a.as_tensor().clone(),
        ));
        tensors.push((
            peft_name(&r.model, p.layer, p.proj, 'B'),
            r.model.hf_rows(p.b.as_tensor(), p.proj)?,
        ));
    }
    save_tensors(&dir.join("adapter_model.safetensors"), tensors)?;
    let l = &r.exp.method.lora;
    let targets: Vec<&str> = l.targets.iter().map(|t| t.name()).collect();
    write_json(
        &dir.join("adapter_config.json"),
        &serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": l.rank,
            "lora_alpha": l.alpha,
            "lora_dropout": l.dropout,
            "target_modules": targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "inference_mode": true,
            "base_model_name_or_path": r.exp.model.reference,
        }),
    )
}

/// LoRA's change folded into the base: W + (α/r)·B·A for every pair,
/// computed in f32 and stored in the weight's own dtype.
fn fold_lora(r: &mut Restored) -> Result<()> {
    let Method::Lora(lora) = &r.method else {
        return Ok(());
    };
    for p in &lora.pairs {
        let delta = (p.b.as_tensor().matmul(p.a.as_tensor())? * lora.scale)?;
        let layer = r
            .model
            .layers
            .get_mut(p.layer)
            .with_context(|| format!("LoRA layer {} is past the model's layers", p.layer))?;
        let (_, w) = layer
            .parts_mut()
            .into_iter()
            .find(|(part, _)| *part == Part::Weight(p.proj))
            .with_context(|| format!("layer {} has no {}", p.layer, p.proj))?;
        let dtype = w.dtype();
        *w = (w.to_dtype(DType::F32)? + delta)?.to_dtype(dtype)?;
    }
    Ok(())
}

/// The model as a Hugging Face directory: config.json, model.safetensors,
/// tokenizer.json and tokenizer_config.json (whether a prompt starts with
/// BOS), and the chat template when the tokenizer carries one.
pub fn write_hf(model: &Model, tok: &Tokenizer, dir: &Path) -> Result<()> {
    anyhow::ensure!(
        !matches!(
            model.config.rope_scaling,
            Some(crate::model::RopeScaling::Factors { .. })
        ),
        "the model's RoPE scaling came from a GGUF file's rope_freqs, one divisor per frequency, which a Hugging Face config.json cannot state; export --format gguf instead"
    );
    let config = crate::model::load::hf_config_json(&model.config, tok.bos_id, tok.eos_id);
    write_json(&dir.join("config.json"), &config)?;
    save_tensors(&dir.join("model.safetensors"), model.hf_tensors()?)?;
    crate::fsx::write_atomic(&dir.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    let token = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    write_json(
        &dir.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": tok.add_bos,
            "bos_token": token(tok.bos_id),
            "eos_token": token(tok.eos_id),
            "pad_token": token(Some(tok.pad_id)),
        }),
    )?;
    if let Some(t) = &tok.chat_template {
        crate::fsx::write_atomic(&dir.join("chat_template.jinja"), t.as_bytes())?;
    }
    Ok(())
}

/// Whether a checkpoint tensor is optimizer state rather than a weight.
fn is_optimizer_state(name: &str) -> bool {
    name.starts_with("opt.")
        || [".moments", ".moment_rows", ".row_steps", ".moment_scales"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// MEFT's or the Parallel Adapter's weights copied from the checkpoint
/// byte for byte, optimizer state left out, with a JSON of their shape and
/// the base they were trained on.
fn write_adapter(run_dir: &Path, step: Option<u64>, dir: &Path) -> Result<u64> {
    let exp = Experiment::load(&run_dir.join("config.toml"))?;
    let (step, checkpoint) = checkpoint_of(run_dir, step)?;
    let file = std::fs::File::open(&checkpoint)?;
    // SAFETY: the checkpoint is only read, and meft writes checkpoints
    // under a temporary name and renames them, so the file is never
    // changed in place while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| anyhow::anyhow!("{}: {e}", checkpoint.display()))?;
    let mut kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !is_optimizer_state(name))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    anyhow::ensure!(
        !kept.is_empty(),
        "{}: no adapter weights in the checkpoint",
        checkpoint.display()
    );
    let names: Vec<String> = kept.iter().map(|(n, _)| n.clone()).collect();
    let weights = dir.join("adapter.safetensors");
    safetensors::serialize_to_file(kept, None, &weights)
        .map_err(|e| anyhow::anyhow!("{}: {e}", weights.display()))?;
    let base = super::base_fingerprint(&exp)?;
    let m = &exp.method.meft;
    write_json(
        &dir.join("adapter.json"),
        &serde_json::json!({
            "method": exp.method.kind.name(),
            "step": step,
            "base": exp.model.reference,
            "base_fnv1a64": base,
            "neurons": m.neurons,
            "top_k": m.top_k,
            "experts": m.resolved_experts(),
            "probe": m.probe,
            "routing": m.routing.name(),
            "layers": m.layers,
            "parallel_size": exp.method.parallel.size,
            "tensors": names,
            "config_toml": exp.to_toml()?,
        }),
    )?;
    Ok(step)
}

/// The weights file and the JSON of a `meft` export named by `--adapter`
/// (the export's directory or its adapter.safetensors).
fn adapter_files(adapter: &Path) -> Result<(PathBuf, PathBuf)> {
    let weights = if adapter.is_dir() {
        adapter.join("adapter.safetensors")
    } else {
        adapter.to_path_buf()
    };
    anyhow::ensure!(
        weights.is_file(),
        "--adapter: {}: no such file (name a `meft export --format meft` directory or its adapter.safetensors)",
        weights.display()
    );
    let json = weights.with_file_name("adapter.json");
    anyhow::ensure!(
        json.is_file(),
        "--adapter: {}: no adapter.json beside it, which says the adapter's shape and base",
        weights.display()
    );
    Ok((weights, json))
}

/// A `meft` export's adapter on a base: `model` (the base it was trained on
/// when None), refused unless the base's weights hash as the adapter's did.
pub fn restore_adapter(adapter: &Path, model: Option<&str>) -> Result<Restored> {
    let (weights, json) = adapter_files(adapter)?;
    let bad = |what: &str| anyhow::anyhow!("--adapter: {}: {what}", json.display());
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)
        .map_err(|e| bad(&format!("not JSON: {e}")))?;
    let field = |key: &str| {
        meta.get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(&format!("no \"{key}\"")))
    };
    let mut exp = Experiment::from_toml(field("config_toml")?, &json.display().to_string())?;
    let trained_on = field("base")?.to_string();
    let want = field("base_fnv1a64")?.to_string();
    let step = meta
        .get("step")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no \"step\" (the checkpoint's step, a whole number)"))?;
    if let Some(m) = model {
        exp.model.reference = m.to_string();
    }
    let crate::model::LoadedModel {
        mut model,
        tokenizer,
        ..
    } = load_base(&exp)?;
    let have = super::weights_fingerprint(&model)?;
    anyhow::ensure!(
        have == want,
        "--adapter: {} was trained on {trained_on}, whose weights hash to {want}; {} hashes to {have}, a different base",
        weights.display(),
        exp.model.reference
    );
    let method = Method::for_decoding(&exp, &mut model, &weights)?;
    Ok(Restored {
        step,
        exp,
        model,
        tokenizer,
        method,
        checkpoint: weights,
    })
}
