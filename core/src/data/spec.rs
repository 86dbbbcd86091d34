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

/// The records of a run: what it trains on, what it is validated on
/// during training (`data.validation`), and what it is tested on at the end.
#[derive(Debug, Clone, Default)]
pub struct Splits {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
    /// The file each split came from (the training file for a `split:`
    /// validation), for messages about a record.
    pub train_path: PathBuf,
    pub validation_path: Option<PathBuf>,
}

/// The share `split:F` names, if `data.validation` is one.
pub fn split_share(spec: &str) -> Option<f64> {
    spec.strip_prefix("split:")?.trim().parse().ok()
}

/// The share F of `data.validation = "test:F"`: validation rows drawn from
/// the test split, which keeps the rest.
pub fn test_share(spec: &str) -> Option<f64> {
    spec.strip_prefix("test:")?.trim().parse().ok()
}

/// Seed of the `test:F` draw: fixed, so every run of a config, whatever its
/// `train.seed`, is scored on the same test rows.
const TEST_SHARE_SEED: u64 = 0;

/// Splits `share` of `examples` off for validation, by a seeded draw that
/// depends only on `seed` and the number of records, so a resumed run
/// holds out exactly the same rows. Both parts keep the file's order.
pub fn split_off(
    examples: Vec<Example>,
    share: f64,
    seed: u64,
) -> Result<(Vec<Example>, Vec<Example>)> {
    let n = examples.len();
    let n_val = ((share * n as f64).round() as usize).max(1);
    anyhow::ensure!(
        n_val < n,
        "data.validation: split:{share} of {n} records leaves none to train on"
    );
    let order = crate::data::batch::epoch_order(n, seed ^ 0x7661_6c69_6461_7465, 0);
    let mut held = vec![false; n];
    for &i in &order[..n_val] {
        held[i] = true;
    }
    let (mut train, mut val) = (Vec::with_capacity(n - n_val), Vec::with_capacity(n_val));
    for (ex, h) in examples.into_iter().zip(held) {
        if h {
            val.push(ex);
        } else {
            train.push(ex);
        }
    }
    Ok((train, val))
}

/// Every split of the config's data section.
pub fn load_splits(exp: &Experiment) -> Result<Splits> {
    let (task, train_path, test_path) = data_files(exp)?;
    let columns = &exp.data.columns;
    let load = |p: &std::path::Path| crate::data::load_with(task, p, columns);
    let train = load(&train_path)?;
    let test = match &test_path {
        Some(p) => load(p)?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        !train.is_empty(),
        "data.train: no training records in {}",
        train_path.display()
    );
    let spec = exp.data.validation.as_str();
    let mut test = test;
    let (train, validation, validation_path) = match (split_share(spec), test_share(spec)) {
        _ if spec.is_empty() => (train, Vec::new(), None),
        (Some(share), _) => {
            let (train, val) = split_off(train, share, exp.train.seed)?;
            (train, val, Some(train_path.clone()))
        }
        (None, Some(share)) => {
            anyhow::ensure!(
                !test.is_empty(),
                "data.validation: test:{share} draws from the test split, and this data has none"
            );
            let (rest, val) = split_off(std::mem::take(&mut test), share, TEST_SHARE_SEED)
                .map_err(|e| {
                    let e = e.to_string().replace("split:", "test:");
                    anyhow::anyhow!("{}", e.replace("to train on", "to test on"))
                })?;
            test = rest;
            (train, val, test_path.clone())
        }
        (None, None) => {
            let path = PathBuf::from(spec);
            (train, load(&path)?, Some(path))
        }
    };
    Ok(Splits {
        train,
        validation,
        test,
        train_path,
        validation_path,
    })
}

/// Train and test examples of the config's data section (the training
/// rows without those `data.validation` holds out).
pub fn load_data(exp: &Experiment) -> Result<(Vec<Example>, Vec<Example>)> {
    let s = load_splits(exp)?;
    Ok((s.train, s.test))
}

/// Records as the run's template and cut-off encode them for training (raw
/// text packed into `cutoff_len` blocks). A record that cannot be encoded
/// (a chat template that refuses it) is named by its file and line.
pub fn encode_all(
    exp: &Experiment,
    examples: &[Example],
    tokenizer: &crate::model::Tokenizer,
    file: Option<&std::path::Path>,
) -> Result<Vec<Encoded>> {
    if exp.data.task == Task::Text {
        return crate::data::batch::pack_documents(examples, tokenizer, exp.train.cutoff_len);
    }
    let template = exp.data.template;
    examples
        .iter()
        .map(|e| {
            encode_example(
                e,
                template,
                tokenizer,
                exp.train.cutoff_len,
                exp.train_on_inputs(),
            )
            .map_err(|err| {
                let at = match (file, e.line) {
                    (Some(f), l) if l > 0 => format!("{}:{l}", f.display()),
                    (Some(f), _) => format!("{} record {}", f.display(), e.id),
                    (None, _) => format!("record {}", e.id),
                };
                anyhow::anyhow!("{at}: {err:#}")
            })
        })
        .collect()
}
