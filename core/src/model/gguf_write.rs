//! A model as a GGUF file, the way llama.cpp's converter writes one: its
//! architecture's metadata keys, its matrices in f16 or Q8_0 (norms and
//! other vectors in f32), its tokenizer (a GGUF-born tokenizer's own
//! `tokenizer.*` metadata as read, or a byte-level BPE rebuilt from its
//! vocabulary and merges) and its chat template. [`super::load`] reads it
//! back.

use super::{Arch, Model, RopeScaling, Tokenizer};
use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::Path;

/// llama.cpp's `general.architecture` of a family.
pub fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama => "llama",
        Arch::Mistral => "mistral",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
        Arch::Gemma3 => "gemma3",
    }
}

/// The model's shape under its architecture's keys.
fn model_metadata(model: &Model, dtype: GgmlDType) -> Result<Vec<(String, Value)>> {
    let c = &model.config;
    let arch = gguf_arch(c.arch);
    let k = |key: &str| format!("{arch}.{key}");
    let u = |x: usize| Value::U32(x as u32);
    let mut md = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        ("general.name".into(), Value::String("meft export".into())),
        (k("context_length"), u(c.max_position_embeddings)),
        (k("embedding_length"), u(c.hidden_size)),
        (k("feed_forward_length"), u(c.intermediate_size)),
        (k("block_count"), u(c.num_layers)),
        (k("attention.head_count"), u(c.num_heads)),
        (k("attention.head_count_kv"), u(c.num_kv_heads)),
        (k("attention.key_length"), u(c.head_dim)),
        (k("attention.value_length"), u(c.head_dim)),
        (k("rope.dimension_count"), u(c.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps as f32),
        ),
        (k("rope.freq_base"), Value::F32(c.rope_theta as f32)),
    ];
    // llama.cpp's LLAMA_FTYPE_MOSTLY_*.
    let file_type = match dtype {
        GgmlDType::F32 => Some(0),
        GgmlDType::F16 => Some(1),
        GgmlDType::Q8_0 => Some(7),
        GgmlDType::Q4K => Some(15),
        GgmlDType::Q5K => Some(17),
        GgmlDType::Q6K => Some(18),
        _ => None,
    };
    md.extend(file_type.map(|t| ("general.file_type".to_string(), Value::U32(t))));
    match &c.rope_scaling {
        None | Some(RopeScaling::Factors { .. }) | Some(RopeScaling::Llama3 { .. }) => {}
        Some(RopeScaling::Linear { factor }) => {
            md.push((k("rope.scaling.type"), Value::String("linear".into())));
            md.push((k("rope.scaling.factor"), Value::F32(*factor as f32)));
        }
        Some(RopeScaling::Dynamic { .. }) => anyhow::bail!(
            "--format gguf: the model's dynamic RoPE scaling has no GGUF form meft reads back; export --format merged instead"
        ),
    }
    if c.arch == Arch::Gemma3 {
        if let Some(w) = c.sliding_window {
            md.push((k("attention.sliding_window"), u(w)));
        }
        if let Some(p) = c.sliding_window_pattern {
            md.push((k("attention.sliding_window_type"), u(p)));
        }
        if let Some(t) = c.rope_local_theta {
            md.push((k("rope.local_freq_base"), Value::F32(t as f32)));
        }
        anyhow::ensure!(
            c.query_pre_attn_scalar == Some(c.head_dim as f64),
            "--format gguf: this Gemma scales queries by 1/√{:?}, not 1/√head_dim, which GGUF does not say; export --format merged instead",
            c.query_pre_attn_scalar
        );
    }
    for (key, v) in [
        ("final_logit_softcapping", c.final_logit_softcapping),
        ("attn_logit_softcapping", c.attn_logit_softcapping),
    ] {
        if let Some(v) = v {
            md.push((k(key), Value::F32(v as f32)));
        }
    }
    Ok(md)
}

/// llama.cpp's name for how a Hugging Face byte-level BPE splits text
/// before merging, from its pre-tokenizer's JSON.
fn pre_name(pre: &serde_json::Value) -> Option<&'static str> {
    let text = pre.to_string();
    if text.contains(r"\\p{N}{1,3}") {
        Some("llama-bpe")
    } else if text.contains(r"|\\p{N}|") {
        Some("qwen2")
    } else if text.contains("\"Digits\"") {
        Some("smollm")
    } else if !text.contains("\"Split\"") && text.contains("\"ByteLevel\"") {
        Some("gpt2")
    } else {
        None
    }
}

/// The tokenizer's `tokenizer.*` keys.
fn tokenizer_metadata(tok: &Tokenizer) -> Result<Vec<(String, Value)>> {
    let mut md: Vec<(String, Value)> = match &tok.gguf {
        Some(kept) => kept.as_ref().clone(),
        None => rebuilt_bpe(tok)?,
    };
    if let Some(t) = &tok.chat_template {
        md.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
    }
    Ok(md)
}

/// A Hugging Face byte-level BPE as llama.cpp's `gpt2` tokenizer model.
fn rebuilt_bpe(tok: &Tokenizer) -> Result<Vec<(String, Value)>> {
    let json: serde_json::Value = serde_json::from_str(&tok.to_json()?)?;
    let model = &json["model"];
    anyhow::ensure!(
        model["type"] == "BPE" && json["decoder"]["type"] == "ByteLevel",
        "--format gguf: the tokenizer is a {} model without a byte-level decoder; meft writes byte-level BPE tokenizers (and GGUF-born ones) into GGUF",
        model["type"]
    );
    let pre = pre_name(&json["pre_tokenizer"]).context(
        "--format gguf: the tokenizer splits text before merging in a way llama.cpp has no name for here (known: gpt2, smollm, llama-bpe, qwen2)",
    )?;
    let n = tok.vocab_size();
    let tokens: Vec<Value> = (0..n as u32)
        .map(|i| Value::String(tok.id_to_token(i).unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    let specials: std::collections::HashSet<u64> = json["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["special"] == true)
                .filter_map(|t| t["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let types: Vec<Value> = (0..n as u64)
        .map(|i| Value::I32(if specials.contains(&i) { 3 } else { 1 }))
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(p) => {
                        Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                    }
                    _ => None,
                })
                .map(Value::String)
                .collect()
        })
        .unwrap_or_default();
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(tok.add_bos),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(tok.pad_id),
        ),
    ];
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", tok.bos_id),
        ("tokenizer.ggml.eos_token_id", tok.eos_id),
    ] {
        if let Some(id) = id {
            md.push((key.into(), Value::U32(id)));
        }
    }
    Ok(md)
}

/// Write `model` with `tok` to `path` as GGUF, its matrices in `dtype` (a
/// matrix whose rows the format's blocks do not divide stays f16; vectors
/// are f32).
pub fn write_gguf(model: &Model, tok: &Tokenizer, path: &Path, dtype: GgmlDType) -> Result<()> {
    let mut md = model_metadata(model, dtype)?;
    md.extend(tokenizer_metadata(tok)?);
    let mut tensors = Vec::new();
    for (name, t) in super::load::gguf_tensors(model)? {
        let t = t
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?;
        let q = match t.dims() {
            [_] => GgmlDType::F32,
            [.., row] if row % dtype.block_size() == 0 => dtype,
            _ => GgmlDType::F16,
        };
        tensors.push((
            name.clone(),
            QTensor::quantize(&t, q).with_context(|| format!("tensor {name}"))?,
        ));
    }
    // Llama 3's RoPE scaling as llama.cpp stores it: one divisor per
    // frequency.
    let c = &model.config;
    if matches!(
        c.rope_scaling,
        Some(RopeScaling::Llama3 { .. } | RopeScaling::Factors { .. })
    ) {
        let plain = super::ModelConfig {
            rope_scaling: None,
            ..c.clone()
        };
        let divisors: Vec<f32> = plain
            .inv_freq(0, 1)
            .iter()
            .zip(c.inv_freq(0, 1))
            .map(|(f, scaled)| (f / scaled) as f32)
            .collect();
        let n = divisors.len();
        let t = Tensor::from_vec(divisors, n, &Device::Cpu)?;
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    crate::fsx::write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        candle_core::quantized::gguf_file::write(&mut w, &md_refs, &t_refs)
            .map_err(std::io::Error::other)?;
        std::io::Write::flush(&mut w)
    })
    .with_context(|| format!("{}", path.display()))
}
