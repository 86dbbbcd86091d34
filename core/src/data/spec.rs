//! A run's data section resolved to records: `synth:` specs written to the
//! cache in the real formats (so the real loaders read them back), the
//! train and test files loaded, the training records encoded with the run's
//! template and cut-off.

use super::batch::{encode_example, Encoded};
use super::{Example, Task};
use crate::config::Experiment;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Where a `synth:` dataset is written before the real loaders read it back.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MEFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

/// Parse `synth:entities=N,seed=S,pool=P,namespace=K` into a world spec.
pub fn parse_synth(spec: &str, field: &str) -> Result<crate::data::synth::WorldSpec> {
    let mut w = crate::data::synth::WorldSpec::default();
    let body = spec.strip_prefix("synth:").unwrap_or(spec);
    for part in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("{field}: expected key=value in {spec:?}, got {part:?}"))?;
        let num: u64 = v
            .trim()
            .parse()
            .with_context(|| format!("{field}: {k} must be a whole number, got {v:?}"))?;
        match k.trim() {
            "entities" => w.entities = num as usize,
            "seed" => w.seed = num,
            "pool" => w.pool = num as usize,
            "namespace" => w.namespace = num,
            "attributes" => w.attributes = num as usize,
            other => anyhow::bail!("{field}: unknown synth key {other:?} (entities, seed, pool, namespace, attributes)"),
        }
    }
    w.validate().map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
    Ok(w)
}

/// The files the config's data section reads: the training file and the
/// evaluation file, if any (a `synth:` spec is written to the cache first).
pub fn data_files(exp: &Experiment) -> Result<(Task, PathBuf, Option<PathBuf>)> {
    let task = exp.data.task;
    let resolve = |spec: &str, field: &str, want_test: bool| -> Result<PathBuf> {
        if spec.starts_with("synth:") {
            let w = parse_synth(spec, field)?;
            let dir = cache_dir().join("data").join(format!(
                "{}-e{}-s{}-p{}-a{}-n{}",
                task, w.entities, w.seed, w.pool, w.attributes, w.namespace
            ));
            let (train, test) = crate::data::synth::file_names(task);
            let wanted = dir.join(if want_test { test } else { train });
            if !wanted.is_file() {
                crate::data::synth::write(task, &w, &dir)
                    .map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
            }
            Ok(wanted)
        } else {
            Ok(PathBuf::from(spec))
        }
    };
    let train = resolve(&exp.data.train, "data.train", false)?;
    // No eval set named: a synthetic world brings its own held-out split.
    let test = match (exp.data.eval.as_str(), exp.data.train.starts_with("synth:")) {
        ("", true) => Some(resolve(&exp.data.train, "data.train", true)?),
        ("", false) => None,
        (spec, _) => Some(resolve(spec, "data.eval", spec.starts_with("synth:"))?),
    };
    Ok((task, train, test))
}

/// Train and test examples of the config's data section.
pub fn load_data(exp: &Experiment) -> Result<(Vec<Example>, Vec<Example>)> {
    let (task, train_path, test_path) = data_files(exp)?;
    let train = crate::data::load(task, &train_path)?;
    let test = match &test_path {
        Some(p) => crate::data::load(task, p)?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        !train.is_empty(),
        "data.train: no training records in {}",
        train_path.display()
    );
    Ok((train, test))
}

/// Training examples as the run's template and cut-off encode them.
pub fn encode_all(
    exp: &Experiment,
    examples: &[Example],
    tokenizer: &crate::model::Tokenizer,
) -> Result<Vec<Encoded>> {
    let template = exp.data.template;
    examples
        .iter()
        .map(|e| {
            encode_example(
                e,
                template,
                tokenizer,
                exp.train.cutoff_len,
                exp.train.train_on_inputs,
            )
        })
        .collect()
}
