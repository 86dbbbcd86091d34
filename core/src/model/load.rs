//! Loading a base model from a reference string: `embedded:tiny`,
//! `embedded:tiny-random`, `hf:DIR`, `gguf:FILE`, or a bare path (a directory
//! is a Hugging Face checkpoint, a `.gguf` file a GGUF one).

use super::ops::RopeLayout;
use super::tokenizer::{Tokenizer, TokenizerError};
use super::{Arch, Layer, Linear, Model, ModelConfig};
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
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: 128,
        intermediate_size: 352,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_layout: RopeLayout::HalfSplit,
        sliding_window: None,
        tie_embeddings: true,
        max_position_embeddings: 1024,
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
    let model = TensorSource { tensors, origin }.build(&cfg, &hf_name, device)?;
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
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let ones = || Tensor::ones(d, dtype, device);
    let embed = mat(cfg.vocab_size, d)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for _ in 0..cfg.num_layers {
        layers.push(Layer {
            attn_norm: ones()?,
            q_proj: Linear::frozen(mat(q, d)?),
            k_proj: Linear::frozen(mat(kv, d)?),
            v_proj: Linear::frozen(mat(kv, d)?),
            o_proj: Linear::frozen(mat(d, q)?),
            ffn_norm: ones()?,
            gate_proj: Linear::frozen(mat(cfg.intermediate_size, d)?),
            up_proj: Linear::frozen(mat(cfg.intermediate_size, d)?),
            down_proj: Linear::frozen(mat(d, cfg.intermediate_size)?),
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
        norm: ones()?,
        lm_head,
        device: device.clone(),
        dtype,
    })
}

/// Looks tensors up by name and checks their shapes, whatever file they came from.
struct TensorSource<'a> {
    tensors: HashMap<String, Tensor>,
    origin: &'a Path,
}

impl TensorSource<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, LoadError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| file_err(self.origin, format!("missing tensor {name}")))?;
        if t.dims() != shape {
            return Err(file_err(
                self.origin,
                format!("tensor {name} has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        Ok(t)
    }

    fn build(
        mut self,
        cfg: &ModelConfig,
        names: &dyn Fn(&str, Option<usize>) -> String,
        device: &Device,
    ) -> Result<Model, LoadError> {
        let d = cfg.hidden_size;
        let q = cfg.num_heads * cfg.head_dim;
        let kv = cfg.num_kv_heads * cfg.head_dim;
        let f = cfg.intermediate_size;
        let embed = self.take(&names("embed", None), &[cfg.vocab_size, d])?;
        let embed_dtype = embed.dtype();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |k: &str| names(k, Some(i));
            layers.push(Layer {
                attn_norm: self.take(&n("attn_norm"), &[d])?,
                q_proj: Linear::frozen(self.take(&n("q"), &[q, d])?),
                k_proj: Linear::frozen(self.take(&n("k"), &[kv, d])?),
                v_proj: Linear::frozen(self.take(&n("v"), &[kv, d])?),
                o_proj: Linear::frozen(self.take(&n("o"), &[d, q])?),
                ffn_norm: self.take(&n("ffn_norm"), &[d])?,
                gate_proj: Linear::frozen(self.take(&n("gate"), &[f, d])?),
                up_proj: Linear::frozen(self.take(&n("up"), &[f, d])?),
                down_proj: Linear::frozen(self.take(&n("down"), &[d, f])?),
            });
        }
        let norm = self.take(&names("norm", None), &[d])?;
        let head_name = names("head", None);
        let lm_head = if self.tensors.contains_key(&head_name) && !cfg.tie_embeddings {
            Some(Linear::frozen(self.take(&head_name, &[cfg.vocab_size, d])?))
        } else {
            None
        };
        let mut model = Model {
            config: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            device: device.clone(),
            dtype: embed_dtype,
        };
        model.config.tie_embeddings = model.lm_head.is_none();
        Ok(model)
    }
}

fn hf_name(k: &str, layer: Option<usize>) -> String {
    let p = format!("model.layers.{}", layer.unwrap_or(0));
    match k {
        "embed" => "model.embed_tokens.weight".into(),
        "norm" => "model.norm.weight".into(),
        "head" => "lm_head.weight".into(),
        "attn_norm" => format!("{p}.input_layernorm.weight"),
        "ffn_norm" => format!("{p}.post_attention_layernorm.weight"),
        "q" | "k" | "v" | "o" => format!("{p}.self_attn.{k}_proj.weight"),
        _ => format!("{p}.mlp.{k}_proj.weight"),
    }
}

fn gguf_name(k: &str, layer: Option<usize>) -> String {
    let p = format!("blk.{}", layer.unwrap_or(0));
    match k {
        "embed" => "token_embd.weight".into(),
        "norm" => "output_norm.weight".into(),
        "head" => "output.weight".into(),
        "attn_norm" => format!("{p}.attn_norm.weight"),
        "ffn_norm" => format!("{p}.ffn_norm.weight"),
        "q" => format!("{p}.attn_q.weight"),
        "k" => format!("{p}.attn_k.weight"),
        "v" => format!("{p}.attn_v.weight"),
        "o" => format!("{p}.attn_output.weight"),
        _ => format!("{p}.ffn_{k}.weight"),
    }
}

/// A Hugging Face `config.json` for `cfg`, the inverse of [`parse_hf_config`].
pub fn hf_config_json(cfg: &ModelConfig, bos: Option<u32>, eos: Option<u32>) -> serde_json::Value {
    let (arch, model_type) = match cfg.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Mistral => ("MistralForCausalLM", "mistral"),
    };
    serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "sliding_window": cfg.sliding_window,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos,
        "eos_token_id": eos,
    })
}

/// Parse a Hugging Face `config.json` (llama and mistral architectures).
pub fn parse_hf_config(path: &Path) -> Result<(ModelConfig, Option<u32>, Option<u32>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_err(path, format!("not valid JSON: {e}")))?;
    let req = |k: &str| -> Result<usize, LoadError> {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| file_err(path, format!("missing or non-integer \"{k}\"")))
    };
    let opt_u = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    let opt_f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let model_type = v
        .get("model_type")
        .and_then(|x| x.as_str())
        .unwrap_or("llama");
    let arch = match model_type {
        "llama" => Arch::Llama,
        "mistral" => Arch::Mistral,
        other => {
            return Err(file_err(
                path,
                format!(
                    "model_type {other:?} is not supported (expected \"llama\" or \"mistral\")"
                ),
            ))
        }
    };
    if let Some(rs) = v.get("rope_scaling").filter(|x| !x.is_null()) {
        return Err(file_err(
            path,
            format!("rope_scaling {rs} is not supported"),
        ));
    }
    let hidden = req("hidden_size")?;
    let heads = req("num_attention_heads")?;
    if heads == 0 || hidden % heads != 0 && opt_u("head_dim").is_none() {
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
    let cfg = ModelConfig {
        arch,
        vocab_size: req("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: req("intermediate_size")?,
        num_layers: req("num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: opt_u("head_dim").unwrap_or(hidden / heads),
        rms_norm_eps: opt_f("rms_norm_eps").unwrap_or(1e-6),
        rope_theta: opt_f("rope_theta").unwrap_or(10_000.0),
        rope_layout: RopeLayout::HalfSplit,
        sliding_window: if arch == Arch::Mistral {
            opt_u("sliding_window")
        } else {
            None
        },
        tie_embeddings: v
            .get("tie_word_embeddings")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        max_position_embeddings: opt_u("max_position_embeddings").unwrap_or(4096),
    };
    let bos = v
        .get("bos_token_id")
        .and_then(|x| x.as_u64())
        .map(|x| x as u32);
    let eos = match v.get("eos_token_id") {
        Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        Some(x) => x.as_u64().map(|x| x as u32),
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
    let model = src.build(&cfg, &hf_name, device)?;
    let tokenizer = Tokenizer::from_hf_file(&dir.join("tokenizer.json"), bos, eos)?;
    Ok((model, tokenizer))
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
            let tokenizer = Tokenizer::from_gguf(&ct.metadata, path)?;
            gguf_config(&ct, path, tokenizer.vocab_size())
        }
    }
}

fn gguf_config(
    ct: &candle_core::quantized::gguf_file::Content,
    path: &Path,
    vocab: usize,
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
        other => {
            return Err(file_err(
                path,
                format!("architecture {other:?} is not supported (expected llama or mistral)"),
            ))
        }
    };
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
    Ok(ModelConfig {
        arch: model_arch,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: get_u("feed_forward_length")?,
        num_layers: get_u("block_count")?,
        num_heads: heads,
        num_kv_heads: get_u("attention.head_count_kv").unwrap_or(heads),
        head_dim: get_u("attention.key_length").unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: get_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: get_f("rope.freq_base").unwrap_or(10_000.0),
        rope_layout: RopeLayout::Interleaved,
        sliding_window: None,
        tie_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        max_position_embeddings: get_u("context_length").unwrap_or(4096),
    })
}

fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<(Model, Tokenizer), LoadError> {
    use candle_core::quantized::gguf_file;
    let mut file = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let ct = gguf_file::Content::read(&mut file)
        .map_err(|e| file_err(path, format!("not a readable GGUF file: {e}")))?;
    let tokenizer = Tokenizer::from_gguf(&ct.metadata, path)?;
    let cfg = gguf_config(&ct, path, tokenizer.vocab_size())?;
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
    let src = TensorSource {
        tensors,
        origin: path,
    };
    let model = src.build(&cfg, &gguf_name, device)?;
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
