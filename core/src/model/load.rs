//! Loading a base model from a reference string: `embedded:tiny`,
//! `embedded:tiny-random`, `hf:DIR`, `gguf:FILE`, or a bare path (a directory
//! is a Hugging Face checkpoint, a `.gguf` file a GGUF one).

use super::ops::RopeLayout;
use super::tokenizer::{Tokenizer, TokenizerError};
use super::{
    hf_part_name, norm_offset, Arch, Layer, Linear, Model, ModelConfig, Part, RopeScaling,
};
use crate::config::Proj;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("model {reference:?}: {msg}")]
    Reference { reference: String, msg: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("model: {}", crate::fsx::one_line(.0))]
    Candle(#[from] candle_core::Error),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> LoadError {
    LoadError::File {
        path: path.display().to_string(),
        msg: crate::fsx::one_line(msg),
    }
}

/// Where a base model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// The project's own small base (pretrained when shipped, else seeded).
    Tiny,
    /// The tiny shape with deterministic seeded weights.
    TinyRandom,
    /// A built-in shape (`random:llama-7b`) with seeded random weights made
    /// where they live, in the base's dtype, with the tiny byte tokenizer:
    /// the memory and speed of a large base without its file.
    Random(String),
    Hf(PathBuf),
    Gguf(PathBuf),
}

impl ModelRef {
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        let bad = |msg: &str| LoadError::Reference {
            reference: s.to_string(),
            msg: msg.to_string(),
        };
        if let Some(name) = s.strip_prefix("embedded:") {
            return match name {
                "tiny" => Ok(Self::Tiny),
                "tiny-random" => Ok(Self::TinyRandom),
                _ => Err(bad(
                    "unknown embedded model (expected embedded:tiny or embedded:tiny-random)",
                )),
            };
        }
        if let Some(name) = s.strip_prefix("random:") {
            return match super::shapes::builtin_shape(name) {
                Some(_) => Ok(Self::Random(name.to_string())),
                None => Err(bad(&format!(
                    "unknown built-in shape (expected random: and one of {})",
                    super::shapes::BUILTIN_SHAPES.join(", ")
                ))),
            };
        }
        if let Some(p) = s.strip_prefix("hf:") {
            return Ok(Self::Hf(PathBuf::from(p)));
        }
        if let Some(p) = s.strip_prefix("gguf:") {
            return Ok(Self::Gguf(PathBuf::from(p)));
        }
        let p = PathBuf::from(s);
        if p.is_dir() {
            Ok(Self::Hf(p))
        } else if p
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            Ok(Self::Gguf(p))
        } else if p.exists() {
            Err(bad(
                "not a directory or a .gguf file (use hf:DIR or gguf:FILE)",
            ))
        } else {
            Err(bad(
                "no such file or directory, and not embedded:tiny, hf:DIR or gguf:FILE",
            ))
        }
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tiny => write!(f, "embedded:tiny"),
            Self::TinyRandom => write!(f, "embedded:tiny-random"),
            Self::Random(name) => write!(f, "random:{name}"),
            Self::Hf(p) => write!(f, "hf:{}", p.display()),
            Self::Gguf(p) => write!(f, "gguf:{}", p.display()),
        }
    }
}

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub reference: ModelRef,
}

pub fn load_model(reference: &ModelRef, device: &Device) -> Result<LoadedModel, LoadError> {
    load_model_as(reference, device, DType::F32)
}

/// Load the base with its weights in `dtype` (f32, bf16 or f16), each
/// tensor converted as it is read, so no f32 copy of the whole base exists.
pub fn load_model_as(
    reference: &ModelRef,
    device: &Device,
    dtype: DType,
) -> Result<LoadedModel, LoadError> {
    let (model, tokenizer) = match reference {
        ModelRef::Tiny => tiny_pretrained(device, dtype)?,
        ModelRef::TinyRandom => {
            let (m, t) = tiny_random(device)?;
            (m.to_dtype(dtype)?, t)
        }
        ModelRef::Random(name) => random_base(name, device, dtype)?,
        ModelRef::Hf(dir) => load_hf(dir, device, dtype)?,
        ModelRef::Gguf(file) => load_gguf(file, device, dtype)?,
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        reference: reference.clone(),
    })
}

/// The embedded tiny shape for a vocabulary of `vocab` tokens.
pub fn tiny_config(vocab: usize) -> ModelConfig {
    // ModelConfig's default is the tiny shape.
    ModelConfig {
        vocab_size: vocab,
        ..ModelConfig::default()
    }
}

/// The seed of `embedded:tiny-random`.
pub const TINY_RANDOM_SEED: u64 = 1234;

fn tiny_random(device: &Device) -> Result<(Model, Tokenizer), LoadError> {
    let tok = Tokenizer::tiny(&[])?;
    let cfg = tiny_config(tok.vocab_size());
    let model = random_model(&cfg, TINY_RANDOM_SEED, device)?;
    Ok((model, tok))
}

/// The committed tiny base (`meft pretrain`), compiled into the binary.
const TINY_WEIGHTS: &[u8] = include_bytes!("../../../assets/tiny/model.safetensors");

fn tiny_pretrained(device: &Device, dtype: DType) -> Result<(Model, Tokenizer), LoadError> {
    let tok = Tokenizer::tiny(&[])?;
    let cfg = tiny_config(tok.vocab_size());
    let origin = Path::new("embedded:tiny");
    let st = safetensors::SafeTensors::deserialize(TINY_WEIGHTS)
        .map_err(|e| file_err(origin, format!("embedded weights: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(file_err(
                origin,
                format!("embedded tensor {name} is not f32"),
            ));
        }
        let t = Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        tensors.insert(name, t);
    }
    let model = TensorSource { tensors, origin }.build(&cfg, Naming::Hf, 0.0, device)?;
    Ok((model, tok))
}

/// The seed of `random:` bases.
const RANDOM_BASE_SEED: u64 = 7_000;

fn random_shape(name: &str) -> Result<ModelConfig, LoadError> {
    super::shapes::builtin_shape(name).ok_or_else(|| LoadError::Reference {
        reference: format!("random:{name}"),
        msg: "unknown built-in shape".into(),
    })
}

/// `random:NAME`: the built-in shape with seeded weights made on `device`
/// in `dtype`, and the tiny byte tokenizer (its ids fit any vocabulary).
fn random_base(name: &str, device: &Device, dtype: DType) -> Result<(Model, Tokenizer), LoadError> {
    let cfg = random_shape(name)?;
    let tok = Tokenizer::tiny(&[])?;
    if tok.vocab_size() > cfg.vocab_size {
        return Err(LoadError::Reference {
            reference: format!("random:{name}"),
            msg: format!(
                "a vocabulary of {} is smaller than the byte tokenizer's {}",
                cfg.vocab_size,
                tok.vocab_size()
            ),
        });
    }
    Ok((random_model_as(&cfg, RANDOM_BASE_SEED, device, dtype)?, tok))
}

/// A model of shape `cfg` with N(0, 0.02²) weights and unit norms, seeded.
pub fn random_model(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Model, LoadError> {
    random_model_as(cfg, seed, device, DType::F32)
}

/// [`random_model`] with every weight made in `dtype`, one tensor at a
/// time, so no f32 copy of the whole model exists. On the CPU the values
/// come from the seeded host generator (the same for every dtype before
/// rounding); on a GPU from the device's own generator, seeded, so a
/// 7B-parameter base is made there in seconds.
pub fn random_model_as(
    cfg: &ModelConfig,
    seed: u64,
    device: &Device,
    dtype: DType,
) -> Result<Model, LoadError> {
    let mut rng = crate::rng::seeded(seed);
    if !device.is_cpu() {
        device.set_seed(seed)?;
    }
    let mut mat = |rows: usize, cols: usize| -> Result<Tensor, LoadError> {
        let t = if device.is_cpu() {
            let v = crate::rng::normal_vec(&mut rng, rows * cols, 0.02);
            Tensor::from_vec(v, (rows, cols), device)?
        } else {
            Tensor::randn(0f32, 0.02, (rows, cols), device)?
        };
        Ok(t.to_dtype(dtype)?)
    };
    let d = cfg.hidden_size;
    let ones = |n: usize| Tensor::ones(n, dtype, device);
    let embed = mat(cfg.vocab_size, d)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for _ in 0..cfg.num_layers {
        let mut lin = |p: Proj| -> Result<Linear, LoadError> {
            let (fan_in, fan_out) = cfg.projection_shape(p);
            let w = mat(fan_out as usize, fan_in as usize)?;
            let b = match cfg.has_bias(p) {
                true => Some(mat(1, fan_out as usize)?.squeeze(0)?),
                false => None,
            };
            Ok(Linear::frozen(w).with_bias(b))
        };
        let opt = |on: bool, n: usize| on.then(|| ones(n)).transpose();
        layers.push(Layer {
            attn_norm: ones(d)?,
            q_proj: lin(Proj::QProj)?,
            k_proj: lin(Proj::KProj)?,
            v_proj: lin(Proj::VProj)?,
            o_proj: lin(Proj::OProj)?,
            ffn_norm: ones(d)?,
            gate_proj: lin(Proj::GateProj)?,
            up_proj: lin(Proj::UpProj)?,
            down_proj: lin(Proj::DownProj)?,
            q_norm: opt(cfg.qk_norm, cfg.head_dim)?,
            k_norm: opt(cfg.qk_norm, cfg.head_dim)?,
            post_attn_norm: opt(cfg.post_norms, d)?,
            post_ffn_norm: opt(cfg.post_norms, d)?,
        });
    }
    let lm_head = if cfg.tie_embeddings {
        None
    } else {
        Some(Linear::frozen(mat(cfg.vocab_size, d)?))
    };
    Ok(Model {
        config: cfg.clone(),
        embed,
        layers,
        norm: ones(d)?,
        lm_head,
        device: device.clone(),
        dtype,
    })
}

/// How a file names a model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Hf,
    Gguf,
}

impl Naming {
    fn global(self, what: &str) -> &'static str {
        match (self, what) {
            (Self::Hf, "embed") => "model.embed_tokens.weight",
            (Self::Hf, "norm") => "model.norm.weight",
            (Self::Hf, _) => "lm_head.weight",
            (Self::Gguf, "embed") => "token_embd.weight",
            (Self::Gguf, "norm") => "output_norm.weight",
            (Self::Gguf, _) => "output.weight",
        }
    }

    fn part(self, arch: Arch, layer: usize, part: Part) -> String {
        match self {
            Self::Hf => hf_part_name(arch, layer, part),
            Self::Gguf => gguf_part_name(layer, part),
        }
    }
}

/// A layer tensor's name in a GGUF file (llama.cpp's names, the same for
/// every family).
fn gguf_part_name(layer: usize, part: Part) -> String {
    let p = format!("blk.{layer}");
    let proj = |pr: Proj| match pr {
        Proj::QProj => "attn_q",
        Proj::KProj => "attn_k",
        Proj::VProj => "attn_v",
        Proj::OProj => "attn_output",
        Proj::GateProj => "ffn_gate",
        Proj::UpProj => "ffn_up",
        Proj::DownProj => "ffn_down",
    };
    match part {
        Part::AttnNorm => format!("{p}.attn_norm.weight"),
        Part::FfnNorm => format!("{p}.ffn_norm.weight"),
        Part::QNorm => format!("{p}.attn_q_norm.weight"),
        Part::KNorm => format!("{p}.attn_k_norm.weight"),
        Part::PostAttnNorm => format!("{p}.post_attention_norm.weight"),
        Part::PostFfnNorm => format!("{p}.post_ffw_norm.weight"),
        Part::Weight(pr) => format!("{p}.{}.weight", proj(pr)),
        Part::Bias(pr) => format!("{p}.{}.bias", proj(pr)),
    }
}

/// Every tensor of `model` under its GGUF name, as llama.cpp stores it: the
/// LLaMA family's q and k rows in the interleaved RoPE layout, Gemma's norms
/// as 1 + w (as the model holds them).
pub fn gguf_tensors(model: &Model) -> Result<Vec<(String, Tensor)>, LoadError> {
    let cfg = &model.config;
    let interleave =
        matches!(cfg.arch, Arch::Llama | Arch::Mistral) && cfg.rope_layout == RopeLayout::HalfSplit;
    // Rows i and i + head_dim/2 of each head become rows 2i and 2i + 1.
    let permute = |t: &Tensor, heads: usize| -> Result<Tensor, LoadError> {
        let hd = cfg.head_dim;
        let rest: Vec<usize> = t.dims()[1..].to_vec();
        let mut shape = vec![heads, 2, hd / 2];
        shape.extend(&rest);
        let mut flat = vec![heads * hd];
        flat.extend(&rest);
        Ok(t.reshape(shape)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape(flat)?)
    };
    let mut out = vec![(
        Naming::Gguf.global("embed").to_string(),
        model.embed.clone(),
    )];
    for (i, l) in model.layers.iter().enumerate() {
        for (part, t) in l.parts() {
            let heads = match part {
                Part::Weight(Proj::QProj) | Part::Bias(Proj::QProj) => Some(cfg.num_heads),
                Part::Weight(Proj::KProj) | Part::Bias(Proj::KProj) => Some(cfg.num_kv_heads),
                _ => None,
            };
            let t = match heads.filter(|_| interleave) {
                Some(h) => permute(t, h)?,
                None => t.clone(),
            };
            out.push((gguf_part_name(i, part), t));
        }
    }
    out.push((Naming::Gguf.global("norm").to_string(), model.norm.clone()));
    if let Some(h) = &model.lm_head {
        out.push((Naming::Gguf.global("head").to_string(), h.weight.clone()));
    }
    Ok(out)
}

/// Looks tensors up by name and checks their shapes, whatever file they came from.
struct TensorSource<'a> {
    tensors: HashMap<String, Tensor>,
    origin: &'a Path,
}

impl TensorSource<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, LoadError> {
        // A multimodal checkpoint keeps its decoder under `language_model.`.
        let t = match self.tensors.remove(name) {
            Some(t) => t,
            None => self
                .tensors
                .remove(&format!("language_model.{name}"))
                .ok_or_else(|| file_err(self.origin, format!("missing tensor {name}")))?,
        };
        if t.dims() != shape {
            return Err(file_err(
                self.origin,
                format!("tensor {name} has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        Ok(t)
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
            || self.tensors.contains_key(&format!("language_model.{name}"))
    }

    /// The model of shape `cfg` from the tensors a file named its way. Norm
    /// weights stored as offsets from one (Gemma in Hugging Face files) get
    /// `norm_offset` added.
    fn build(
        mut self,
        cfg: &ModelConfig,
        naming: Naming,
        norm_offset: f64,
        device: &Device,
    ) -> Result<Model, LoadError> {
        let d = cfg.hidden_size;
        let hd = cfg.head_dim;
        let embed = self.take(naming.global("embed"), &[cfg.vocab_size, d])?;
        let embed_dtype = embed.dtype();
        let norm = |src: &mut Self, name: &str, n: usize| -> Result<Tensor, LoadError> {
            let t = src.take(name, &[n])?;
            Ok(match norm_offset {
                0.0 => t,
                off => t.affine(1.0, off)?,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |part: Part| naming.part(cfg.arch, i, part);
            let lin = |src: &mut Self, p: Proj| -> Result<Linear, LoadError> {
                let (fan_in, fan_out) = cfg.projection_shape(p);
                let w = src.take(&n(Part::Weight(p)), &[fan_out as usize, fan_in as usize])?;
                let b = match cfg.has_bias(p) {
                    true => Some(src.take(&n(Part::Bias(p)), &[fan_out as usize])?),
                    false => None,
                };
                Ok(Linear::frozen(w).with_bias(b))
            };
            let q_proj = lin(&mut self, Proj::QProj)?;
            let k_proj = lin(&mut self, Proj::KProj)?;
            let v_proj = lin(&mut self, Proj::VProj)?;
            let o_proj = lin(&mut self, Proj::OProj)?;
            let gate_proj = lin(&mut self, Proj::GateProj)?;
            let up_proj = lin(&mut self, Proj::UpProj)?;
            let down_proj = lin(&mut self, Proj::DownProj)?;
            let opt = |src: &mut Self, on: bool, part: Part, len: usize| match on {
                true => norm(src, &n(part), len).map(Some),
                false => Ok(None),
            };
            let q_norm = opt(&mut self, cfg.qk_norm, Part::QNorm, hd)?;
            let k_norm = opt(&mut self, cfg.qk_norm, Part::KNorm, hd)?;
            let post_attn_norm = opt(&mut self, cfg.post_norms, Part::PostAttnNorm, d)?;
            let post_ffn_norm = opt(&mut self, cfg.post_norms, Part::PostFfnNorm, d)?;
            layers.push(Layer {
                attn_norm: norm(&mut self, &n(Part::AttnNorm), d)?,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                ffn_norm: norm(&mut self, &n(Part::FfnNorm), d)?,
                gate_proj,
                up_proj,
                down_proj,
                q_norm,
                k_norm,
                post_attn_norm,
                post_ffn_norm,
            });
        }
        let final_norm = norm(&mut self, naming.global("norm"), d)?;
        let head_name = naming.global("head");
        let lm_head = if self.contains(head_name) && !cfg.tie_embeddings {
            Some(Linear::frozen(self.take(head_name, &[cfg.vocab_size, d])?))
        } else {
            None
        };
        let mut model = Model {
            config: cfg.clone(),
            embed,
            layers,
            norm: final_norm,
            lm_head,
            device: device.clone(),
            dtype: embed_dtype,
        };
        model.config.tie_embeddings = model.lm_head.is_none();
        Ok(model)
    }
}

/// A Hugging Face `config.json` for `cfg`, the inverse of [`parse_hf_config`]
/// (with the fields candle-transformers' own configs require).
pub fn hf_config_json(cfg: &ModelConfig, bos: Option<u32>, eos: Option<u32>) -> serde_json::Value {
    let arch = match cfg.arch {
        Arch::Llama => "LlamaForCausalLM",
        Arch::Mistral => "MistralForCausalLM",
        Arch::Qwen2 => "Qwen2ForCausalLM",
        Arch::Qwen3 => "Qwen3ForCausalLM",
        Arch::Gemma3 => "Gemma3ForCausalLM",
    };
    let rope_scaling = match &cfg.rope_scaling {
        None | Some(RopeScaling::Factors { .. }) => serde_json::Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            serde_json::json!({"rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Dynamic { factor }) => {
            serde_json::json!({"rope_type": "dynamic", "factor": factor})
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => serde_json::json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    };
    let act = match cfg.activation {
        super::ops::Activation::Silu => "silu",
        super::ops::Activation::GeluTanh => "gelu_pytorch_tanh",
    };
    let mut j = serde_json::json!({
        "architectures": [arch],
        "model_type": cfg.arch.model_type(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "sliding_window": cfg.sliding_window,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": act,
        "attention_bias": cfg.o_bias,
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    let extra = match cfg.arch {
        Arch::Qwen2 | Arch::Qwen3 => serde_json::json!({
            "use_sliding_window": false,
            "sliding_window": cfg.sliding_window.unwrap_or(cfg.max_position_embeddings),
            "max_window_layers": cfg.num_layers,
        }),
        Arch::Gemma3 => serde_json::json!({
            "hidden_activation": act,
            "query_pre_attn_scalar": cfg.query_pre_attn_scalar.unwrap_or(cfg.head_dim as f64) as u64,
            "sliding_window": cfg.sliding_window.unwrap_or(cfg.max_position_embeddings),
            "sliding_window_pattern": cfg.sliding_window_pattern.unwrap_or(1),
            "rope_local_base_freq": cfg.rope_local_theta.unwrap_or(cfg.rope_theta),
            "final_logit_softcapping": cfg.final_logit_softcapping,
            "attn_logit_softcapping": cfg.attn_logit_softcapping,
        }),
        _ => serde_json::json!({}),
    };
    if let (Some(j), Some(extra)) = (j.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            j.insert(k.clone(), v.clone());
        }
    }
    j
}

/// `rope_scaling` of a Hugging Face config: `None` for none or "default".
fn parse_rope_scaling(
    v: &serde_json::Value,
    path: &Path,
) -> Result<Option<RopeScaling>, LoadError> {
    let Some(rs) = v.get("rope_scaling").filter(|x| !x.is_null()) else {
        return Ok(None);
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(|x| x.as_str())
        .unwrap_or("");
    let num = |k: &str| -> Result<f64, LoadError> {
        rs.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
            file_err(
                path,
                format!("rope_scaling of type {kind:?} needs a number \"{k}\""),
            )
        })
    };
    Ok(Some(match kind {
        "default" => return Ok(None),
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(file_err(
                path,
                format!(
                "rope_scaling type {other:?} is not supported (expected linear, dynamic or llama3)"
            ),
            ))
        }
    }))
}

/// Parse a Hugging Face `config.json`: the llama, mistral, qwen2, qwen3 and
/// gemma3 families.
pub fn parse_hf_config(path: &Path) -> Result<(ModelConfig, Option<u32>, Option<u32>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let top: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_err(path, format!("not valid JSON: {e}")))?;
    let model_type = top
        .get("model_type")
        .and_then(|x| x.as_str())
        .unwrap_or("llama");
    // A multimodal Gemma 3 keeps its decoder's config under text_config.
    let v = match (model_type, top.get("text_config")) {
        ("gemma3", Some(tc)) if tc.is_object() => tc,
        _ => &top,
    };
    let arch = match model_type {
        "llama" => Arch::Llama,
        "mistral" => Arch::Mistral,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        "gemma3" | "gemma3_text" => Arch::Gemma3,
        other => {
            return Err(file_err(
                path,
                format!(
                    "model_type {other:?} is not supported (expected llama, mistral, qwen2, qwen3, gemma3 or gemma3_text)"
                ),
            ))
        }
    };
    let gemma = arch == Arch::Gemma3;
    let req = |k: &str| -> Result<usize, LoadError> {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| file_err(path, format!("missing or non-integer \"{k}\"")))
    };
    let opt_u = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    let opt_f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let opt_b = |k: &str| v.get(k).and_then(|x| x.as_bool());
    let hidden = req("hidden_size")?;
    let heads = req("num_attention_heads")?;
    let head_dim = opt_u("head_dim").or(gemma.then_some(256));
    if heads == 0 || hidden % heads != 0 && head_dim.is_none() {
        return Err(file_err(
            path,
            "num_attention_heads must divide hidden_size",
        ));
    }
    let kv_heads = opt_u("num_key_value_heads").unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(file_err(
            path,
            "num_key_value_heads must divide num_attention_heads",
        ));
    }
    let act_key = if gemma {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let activation = match v.get(act_key).and_then(|x| x.as_str()) {
        None if gemma => super::ops::Activation::GeluTanh,
        None => super::ops::Activation::Silu,
        Some(name) => super::ops::Activation::from_hf(name).ok_or_else(|| {
            file_err(
                path,
                format!("{act_key} {name:?} is not supported (expected silu or gelu_pytorch_tanh)"),
            )
        })?,
    };
    if opt_b("mlp_bias") == Some(true) {
        return Err(file_err(path, "mlp_bias true is not supported"));
    }
    if matches!(arch, Arch::Qwen2 | Arch::Qwen3) && opt_b("use_sliding_window") == Some(true) {
        return Err(file_err(path, "use_sliding_window true is not supported"));
    }
    let attention_bias = opt_b("attention_bias").unwrap_or(false);
    // Gemma 3 names its global layers: every Nth, or a `layer_types` list.
    let num_layers = req("num_hidden_layers")?;
    let pattern = match (gemma, v.get("layer_types").and_then(|x| x.as_array())) {
        (false, _) => None,
        (true, None) => Some(opt_u("sliding_window_pattern").unwrap_or(6)),
        (true, Some(types)) => {
            let global: Vec<bool> = types
                .iter()
                .map(|t| t.as_str() == Some("full_attention"))
                .collect();
            let p = global
                .iter()
                .position(|g| *g)
                .map_or(num_layers + 1, |i| i + 1);
            if global.len() != num_layers
                || global
                    .iter()
                    .enumerate()
                    .any(|(i, g)| *g != ((i + 1) % p == 0))
            {
                return Err(file_err(
                    path,
                    "layer_types: only every-Nth-layer-global patterns are supported",
                ));
            }
            Some(p)
        }
    };
    let cfg = ModelConfig {
        arch,
        vocab_size: req("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: req("intermediate_size")?,
        num_layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: head_dim.unwrap_or(hidden / heads),
        rms_norm_eps: opt_f("rms_norm_eps").unwrap_or(1e-6),
        rope_theta: opt_f("rope_theta").unwrap_or(if gemma { 1e6 } else { 10_000.0 }),
        rope_layout: RopeLayout::HalfSplit,
        sliding_window: match arch {
            Arch::Mistral => opt_u("sliding_window"),
            Arch::Gemma3 => Some(opt_u("sliding_window").unwrap_or(4096)),
            _ => None,
        },
        tie_embeddings: opt_b("tie_word_embeddings")
            .or(top.get("tie_word_embeddings").and_then(|x| x.as_bool()))
            .unwrap_or(gemma),
        max_position_embeddings: opt_u("max_position_embeddings").unwrap_or(4096),
        rope_scaling: parse_rope_scaling(v, path)?,
        qkv_bias: arch == Arch::Qwen2 || attention_bias,
        o_bias: arch != Arch::Qwen2 && attention_bias,
        qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
        post_norms: gemma,
        embed_scale: gemma,
        activation,
        query_pre_attn_scalar: if gemma {
            Some(opt_f("query_pre_attn_scalar").unwrap_or(256.0))
        } else {
            None
        },
        sliding_window_pattern: pattern,
        rope_local_theta: gemma.then(|| opt_f("rope_local_base_freq").unwrap_or(10_000.0)),
        final_logit_softcapping: opt_f("final_logit_softcapping"),
        attn_logit_softcapping: opt_f("attn_logit_softcapping"),
    };
    let id = |x: &serde_json::Value| x.as_u64().map(|x| x as u32);
    let bos = v
        .get("bos_token_id")
        .or(top.get("bos_token_id"))
        .and_then(id);
    let eos = match v.get("eos_token_id").or(top.get("eos_token_id")) {
        Some(serde_json::Value::Array(a)) => a.first().and_then(id),
        Some(x) => id(x),
        None => None,
    };
    Ok((cfg, bos, eos))
}

fn read_safetensors(
    path: &Path,
    device: &Device,
    target: DType,
    out: &mut HashMap<String, Tensor>,
) -> Result<(), LoadError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(file_err(
                    path,
                    format!("tensor {name}: dtype {other:?} is not supported"),
                ))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| file_err(path, format!("tensor {name}: {e}")))?
            .to_dtype(target)?
            .to_device(device)?;
        out.insert(name, t);
    }
    Ok(())
}

fn load_hf(dir: &Path, device: &Device, dtype: DType) -> Result<(Model, Tokenizer), LoadError> {
    if !dir.is_dir() {
        return Err(file_err(dir, "not a directory"));
    }
    let (cfg, bos, eos) = parse_hf_config(&dir.join("config.json"))?;
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let mut tensors = HashMap::new();
    if single.is_file() {
        read_safetensors(&single, device, dtype, &mut tensors)?;
    } else if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| file_err(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| file_err(&index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| file_err(&index, "missing \"weight_map\" object"))?;
        let mut shards: Vec<&str> = map.values().filter_map(|x| x.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            read_safetensors(&dir.join(shard), device, dtype, &mut tensors)?;
        }
    } else {
        return Err(file_err(
            dir,
            "no weights found (expected model.safetensors or model.safetensors.index.json)",
        ));
    }
    let origin = if single.is_file() { single } else { index };
    let src = TensorSource {
        tensors,
        origin: &origin,
    };
    let model = src.build(&cfg, Naming::Hf, norm_offset(cfg.arch), device)?;
    let mut tokenizer = Tokenizer::from_hf_file(&dir.join("tokenizer.json"), bos, eos)?;
    tokenizer.chat_template = hf_chat_template(dir)?;
    // tokenizer_config.json's add_bos_token, where it says, overrides what
    // the post-processor was seen to do.
    if let Some(add) =
        tokenizer_config(dir)?.and_then(|v| v.get("add_bos_token").and_then(|a| a.as_bool()))
    {
        tokenizer.add_bos = add && tokenizer.bos_id.is_some();
    }
    // Every end-of-sequence id the checkpoint names stops generation (Llama
    // 3 lists three: end of text, end of message, end of turn).
    for file in ["config.json", "generation_config.json"] {
        for id in eos_ids(&dir.join(file)) {
            if !tokenizer.stop_ids.contains(&id) {
                tokenizer.stop_ids.push(id);
            }
        }
    }
    Ok((model, tokenizer))
}

/// A Hugging Face checkpoint's chat template: `chat_template.jinja`, or
/// `tokenizer_config.json`'s `chat_template` (one string, or a list of named
/// ones of which "default" is taken).
fn hf_chat_template(dir: &Path) -> Result<Option<String>, LoadError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| file_err(&jinja, e));
    }
    let Some(v) = tokenizer_config(dir)? else {
        return Ok(None);
    };
    Ok(match v.get("chat_template") {
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or(named.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    })
}

/// A checkpoint's `tokenizer_config.json`, if it has one.
fn tokenizer_config(dir: &Path) -> Result<Option<serde_json::Value>, LoadError> {
    let path = dir.join("tokenizer_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| file_err(&path, format!("not valid JSON: {e}")))
}

/// The `eos_token_id`s a JSON file names (one or a list); none when the file
/// or the key is absent.
fn eos_ids(path: &Path) -> Vec<u32> {
    let v: Option<serde_json::Value> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let eos = v.as_ref().and_then(|v| v.get("eos_token_id")).cloned();
    match eos {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        Some(x) => x.as_u64().map(|x| x as u32).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The shape of a model without loading its weights.
pub fn model_shape(reference: &ModelRef) -> Result<ModelConfig, LoadError> {
    match reference {
        ModelRef::Tiny | ModelRef::TinyRandom => {
            Ok(tiny_config(Tokenizer::tiny(&[])?.vocab_size()))
        }
        ModelRef::Random(name) => random_shape(name),
        ModelRef::Hf(dir) => Ok(parse_hf_config(&dir.join("config.json"))?.0),
        ModelRef::Gguf(path) => {
            let mut file = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
            let ct = candle_core::quantized::gguf_file::Content::read(&mut file)
                .map_err(|e| file_err(path, format!("not a readable GGUF file: {e}")))?;
            gguf_config(&ct, path)
        }
    }
}

/// The shape of a GGUF model from its metadata (`general.architecture` and
/// that architecture's keys, as llama.cpp writes them).
fn gguf_config(
    ct: &candle_core::quantized::gguf_file::Content,
    path: &Path,
) -> Result<ModelConfig, LoadError> {
    let md = &ct.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let model_arch = match arch.as_str() {
        "llama" => Arch::Llama,
        "mistral" => Arch::Mistral,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        "gemma3" => Arch::Gemma3,
        other => {
            return Err(file_err(
                path,
                format!(
                    "general.architecture {other:?} is not supported (expected llama, mistral, qwen2, qwen3 or gemma3)"
                ),
            ))
        }
    };
    let gemma = model_arch == Arch::Gemma3;
    let key = |k: &str| format!("{arch}.{k}");
    let get_u = |k: &str| -> Result<usize, LoadError> {
        md.get(&key(k))
            .and_then(|v| {
                v.to_u32()
                    .ok()
                    .or_else(|| v.to_u64().ok().map(|x| x as u32))
            })
            .map(|x| x as usize)
            .ok_or_else(|| file_err(path, format!("missing metadata {}", key(k))))
    };
    let get_f = |k: &str| md.get(&key(k)).and_then(|v| v.to_f32().ok()).map(f64::from);
    let hidden = get_u("embedding_length")?;
    let heads = get_u("attention.head_count")?;
    let head_dim = get_u("attention.key_length").unwrap_or(hidden / heads.max(1));
    let vocab = match ct
        .tensor_infos
        .get("token_embd.weight")
        .map(|i| i.shape.dims())
    {
        Some([vocab, ..]) => *vocab,
        Some([]) => return Err(file_err(path, "tensor token_embd.weight has no dimensions")),
        None => return Err(file_err(path, "missing tensor token_embd.weight")),
    };
    let rope_scaling = match md
        .get(&key("rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
    {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: get_f("rope.scaling.factor").unwrap_or(1.0),
        }),
        Some(other) => {
            return Err(file_err(
                path,
                format!(
                    "{} {other:?} is not supported (expected linear)",
                    key("rope.scaling.type")
                ),
            ))
        }
    };
    Ok(ModelConfig {
        arch: model_arch,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: get_u("feed_forward_length")?,
        num_layers: get_u("block_count")?,
        num_heads: heads,
        num_kv_heads: get_u("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        rms_norm_eps: get_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: get_f("rope.freq_base").unwrap_or(if gemma { 1e6 } else { 10_000.0 }),
        // llama.cpp permutes LLaMA's q and k into the interleaved layout;
        // the NeoX-style families keep Hugging Face's halves.
        rope_layout: match model_arch {
            Arch::Llama | Arch::Mistral => RopeLayout::Interleaved,
            _ => RopeLayout::HalfSplit,
        },
        sliding_window: match gemma {
            true => Some(get_u("attention.sliding_window").unwrap_or(4096)),
            false => None,
        },
        tie_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        max_position_embeddings: get_u("context_length").unwrap_or(4096),
        rope_scaling,
        qkv_bias: model_arch == Arch::Qwen2 || ct.tensor_infos.contains_key("blk.0.attn_q.bias"),
        o_bias: ct.tensor_infos.contains_key("blk.0.attn_output.bias"),
        qk_norm: matches!(model_arch, Arch::Qwen3 | Arch::Gemma3),
        post_norms: gemma,
        embed_scale: gemma,
        activation: match gemma {
            true => super::ops::Activation::GeluTanh,
            false => super::ops::Activation::Silu,
        },
        query_pre_attn_scalar: gemma.then_some(head_dim as f64),
        // llama.cpp's Gemma 3: every sixth layer global, local RoPE base 10⁴,
        // unless the file says otherwise.
        sliding_window_pattern: gemma.then(|| get_u("attention.sliding_window_type").unwrap_or(6)),
        rope_local_theta: gemma.then(|| get_f("rope.local_freq_base").unwrap_or(10_000.0)),
        final_logit_softcapping: get_f("final_logit_softcapping"),
        attn_logit_softcapping: get_f("attn_logit_softcapping"),
    })
}

fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<(Model, Tokenizer), LoadError> {
    use candle_core::quantized::gguf_file;
    let mut file = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let ct = gguf_file::Content::read(&mut file)
        .map_err(|e| file_err(path, format!("not a readable GGUF file: {e}")))?;
    let mut cfg = gguf_config(&ct, path)?;
    let tokenizer = Tokenizer::from_gguf(&ct.metadata, path)?;
    let mut tensors = HashMap::new();
    for name in ct.tensor_infos.keys() {
        let q = ct
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| file_err(path, format!("tensor {name}: {e}")))?;
        let t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| file_err(path, format!("tensor {name}: {e}")))?
            .to_dtype(dtype)?
            .to_device(device)?;
        tensors.insert(name.clone(), t);
    }
    // Llama 3.x's frequency scaling, as llama.cpp stores it: one divisor per
    // frequency.
    if let Some(f) = tensors.remove("rope_freqs.weight") {
        cfg.rope_scaling = Some(RopeScaling::Factors {
            factors: f.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
        });
    }
    let src = TensorSource {
        tensors,
        origin: path,
    };
    // llama.cpp's converter already stores Gemma's norms as 1 + w.
    let model = src.build(&cfg, Naming::Gguf, 0.0, device)?;
    Ok((model, tokenizer))
}

/// The compute device a config names: `cpu` or `cuda:N` (the latter in a
/// build with the `cuda` feature).
pub fn device_of(spec: &str) -> anyhow::Result<Device> {
    match cuda_ordinal(spec)? {
        None => Ok(Device::Cpu),
        Some(n) => Ok(Device::new_cuda(n)?),
    }
}

/// What `device_of` would open, checked without opening it: `None` for the
/// CPU, the ordinal of `cuda:N` in a build that has CUDA, or why not.
pub fn cuda_ordinal(spec: &str) -> anyhow::Result<Option<usize>> {
    if spec == "cpu" {
        return Ok(None);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        let n: usize = n
            .parse()
            .map_err(|_| anyhow::anyhow!("model.device: bad CUDA ordinal in {spec:?}"))?;
        if !cfg!(feature = "cuda") {
            anyhow::bail!("model.device: {spec} needs a build with `--features cuda`");
        }
        return Ok(Some(n));
    }
    anyhow::bail!("model.device: expected cpu or cuda:N, got {spec:?}")
}
