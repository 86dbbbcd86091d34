//! The frozen base: a LLaMA/Mistral decoder on candle (RMSNorm, rotary
//! embeddings in both layouts, grouped-query attention, sliding-window
//! attention, SwiGLU) with one hook per layer where an adapter adds to the FFN
//! output; loaders for the embedded tiny model, Hugging Face directories and
//! GGUF files; tokenizers; greedy and beam generation with a KV cache.
//!
//! The model never knows which adapter is attached: it calls [`Hooks`].

pub mod converse;
pub mod generate;
pub mod gguf_write;
pub mod load;
pub mod ops;
pub mod shapes;
pub mod tokenizer;

/// The compute device a model lives on ([`load::device_of`] reads one from its name).
pub use candle_core::Device;
use candle_core::{DType, Result, Tensor, Var, D};
use ops::RopeLayout;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use load::{load_model, LoadedModel, ModelRef};
pub use tokenizer::Tokenizer;

/// Which decoder family a checkpoint belongs to. One decoder serves them all:
/// a family is a set of switches on [`ModelConfig`] (biases, q/k norms,
/// post-norms, the gate's activation, local/global attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    /// Hugging Face's `model_type` of the family.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3_text",
        }
    }

    /// Where an adapter's FFN hook reads and writes on this family, in words.
    pub fn ffn_attach(self) -> &'static str {
        match self {
            Self::Gemma3 => {
                "in parallel with each FFN: reads the pre-FFN norm's output, adds to the FFN's output before the post-FFN norm"
            }
            _ => "in parallel with each FFN: reads the post-attention norm's output, adds to the FFN's output",
        }
    }
}

/// How a checkpoint stretches its rotary frequencies past the length it was
/// pretrained on (Hugging Face's `rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f64 },
    /// NTK-aware: the base grows with the sequence once it passes
    /// `max_position_embeddings`.
    Dynamic { factor: f64 },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// One divisor per frequency (a GGUF file's `rope_freqs.weight`).
    Factors { factors: Vec<f64> },
}

/// The shape of a decoder, whatever file it came from. Fields after
/// `max_position_embeddings` are a family's switches; each defaults to the
/// LLaMA behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_layout: RopeLayout,
    pub sliding_window: Option<usize>,
    pub tie_embeddings: bool,
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Biases on the q, k and v projections (Qwen2).
    #[serde(default, skip_serializing_if = "is_false")]
    pub qkv_bias: bool,
    /// A bias on the output projection (LLaMA's `attention_bias`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub o_bias: bool,
    /// RMSNorm over each head's queries and keys before RoPE (Qwen3, Gemma 3).
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
    /// RMSNorms on the attention's and the FFN's outputs before each residual
    /// add (Gemma 3).
    #[serde(default, skip_serializing_if = "is_false")]
    pub post_norms: bool,
    /// Embeddings multiplied by √hidden_size (Gemma).
    #[serde(default, skip_serializing_if = "is_false")]
    pub embed_scale: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub activation: ops::Activation,
    /// Attention scores scaled by 1/√this instead of 1/√head_dim (Gemma).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Every Nth layer attends globally and the others within
    /// `sliding_window` (Gemma 3: 6); `None`: every layer alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window_pattern: Option<usize>,
    /// The RoPE base of the local (sliding-window) layers (Gemma 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_local_theta: Option<f64>,
    /// `cap·tanh(x/cap)` on the final logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// `cap·tanh(x/cap)` on the scaled attention scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl Default for ModelConfig {
    /// A LLaMA-shaped placeholder (the embedded tiny model's numbers): fill
    /// in the rest with struct-update syntax.
    fn default() -> Self {
        Self {
            arch: Arch::Llama,
            vocab_size: 259,
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
            rope_scaling: None,
            qkv_bias: false,
            o_bias: false,
            qk_norm: false,
            post_norms: false,
            embed_scale: false,
            activation: ops::Activation::Silu,
            query_pre_attn_scalar: None,
            sliding_window_pattern: None,
            rope_local_theta: None,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
        }
    }
}

impl ModelConfig {
    /// (fan-in, fan-out) of a projection.
    pub fn projection_shape(&self, p: Proj) -> (u64, u64) {
        let d = self.hidden_size as u64;
        let q = (self.num_heads * self.head_dim) as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let ffn = self.intermediate_size as u64;
        match p {
            Proj::QProj => (d, q),
            Proj::KProj | Proj::VProj => (d, kv),
            Proj::OProj => (q, d),
            Proj::GateProj | Proj::UpProj => (d, ffn),
            Proj::DownProj => (ffn, d),
        }
    }

    /// Parameters of the base (embedding counted once when tied).
    pub fn param_count(&self) -> usize {
        let d = self.hidden_size;
        let kv = self.num_kv_heads * self.head_dim;
        let q = self.num_heads * self.head_dim;
        let mut per_layer = d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size + 2 * d;
        if self.qkv_bias {
            per_layer += q + 2 * kv;
        }
        if self.o_bias {
            per_layer += d;
        }
        if self.qk_norm {
            per_layer += 2 * self.head_dim;
        }
        if self.post_norms {
            per_layer += 2 * d;
        }
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_layers * per_layer + d + head
    }

    /// Whether projection `p` has a bias.
    pub fn has_bias(&self, p: Proj) -> bool {
        match p {
            Proj::QProj | Proj::KProj | Proj::VProj => self.qkv_bias,
            Proj::OProj => self.o_bias,
            _ => false,
        }
    }

    /// Whether layer `li` attends within a window (Gemma 3's local layers,
    /// every layer of a sliding-window Mistral).
    pub fn is_local(&self, li: usize) -> bool {
        self.sliding_window.is_some()
            && self
                .sliding_window_pattern
                .is_none_or(|p| !(li + 1).is_multiple_of(p))
    }

    /// The attention window of layer `li`: `None` attends to every earlier key.
    pub fn layer_window(&self, li: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.is_local(li))
    }

    /// The scale of the attention scores.
    pub fn attn_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
    }

    /// RoPE's inverse frequencies for layer `li` (head_dim / 2 of them) when
    /// the longest sequence in the batch is `seq_len` positions long. Gemma
    /// 3's local layers use their own base and no scaling.
    pub fn inv_freq(&self, li: usize, seq_len: usize) -> Vec<f64> {
        let hd = self.head_dim;
        let local = self.rope_local_theta.filter(|_| self.is_local(li));
        let mut theta = local.unwrap_or(self.rope_theta);
        let scaling = self.rope_scaling.as_ref().filter(|_| local.is_none());
        if let Some(RopeScaling::Dynamic { factor }) = scaling {
            let max = self.max_position_embeddings.max(1) as f64;
            if seq_len as f64 > max && hd > 2 {
                let grow = factor * seq_len as f64 / max - (factor - 1.0);
                theta *= grow.powf(hd as f64 / (hd as f64 - 2.0));
            }
        }
        let base = (0..hd / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / hd as f64));
        match scaling {
            None | Some(RopeScaling::Dynamic { .. }) => base.collect(),
            Some(RopeScaling::Linear { factor }) => base.map(|f| f / factor).collect(),
            Some(RopeScaling::Factors { factors }) => base
                .zip(factors.iter().chain(std::iter::repeat(&1.0)))
                .map(|(f, d)| f / d)
                .collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
        }
    }
}

/// A linear map `x · Wᵀ`. Frozen weights go through [`ops::frozen_linear`] so
/// that no weight gradient is ever computed; trainable ones (full
/// fine-tuning) are candle `Var`s on the ordinary matmul path.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    /// Added to every output row (Qwen2's q/k/v projections).
    pub bias: Option<Tensor>,
    pub trainable: bool,
}

impl Linear {
    pub fn frozen(weight: Tensor) -> Self {
        Self {
            weight,
            bias: None,
            trainable: false,
        }
    }

    pub fn with_bias(mut self, bias: Option<Tensor>) -> Self {
        self.bias = bias;
        self
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.product(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn product(&self, x: &Tensor) -> Result<Tensor> {
        if self.trainable {
            let dims = x.dims().to_vec();
            let Some((&last, lead)) = dims.split_last() else {
                candle_core::bail!("linear: scalar input");
            };
            let rows: usize = lead.iter().product();
            let y = x.reshape((rows, last))?.matmul(&self.weight.t()?)?;
            let mut out = lead.to_vec();
            out.push(y.dim(1)?);
            y.reshape(out)
        } else {
            ops::frozen_linear(x, &self.weight)
        }
    }
}

/// The projections a hook may add a low-rank delta to.
pub use crate::config::Proj;

/// Where an adapter plugs into the decoder. Every method defaults to "no
/// change", so the frozen base is `&mut NoHooks`.
pub trait Hooks {
    /// Called with the FFN input `u` (the output of the norm before the FFN,
    /// shape batch × seq × d); a returned tensor of the same shape is added to
    /// the FFN output (before the post-FFN norm on families that have one,
    /// so the adapter runs in parallel with the FFN on every family).
    fn ffn(&mut self, _layer: usize, _u: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Called with the input of a projection; a returned tensor of the
    /// projection's output shape is added to its output.
    fn proj(&mut self, _layer: usize, _proj: Proj, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The offset of a family's stored norm weights (see [`Model::norm_offset`]).
pub fn norm_offset(arch: Arch) -> f64 {
    match arch {
        Arch::Gemma3 => 1.0,
        _ => 0.0,
    }
}

/// The frozen base with nothing attached.
pub struct NoHooks;
impl Hooks for NoHooks {}

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Tensor,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub ffn_norm: Tensor,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// Per-head RMSNorm weights of queries and keys (head_dim each).
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// RMSNorms on the attention's and the FFN's outputs (Gemma 3).
    pub post_attn_norm: Option<Tensor>,
    pub post_ffn_norm: Option<Tensor>,
}

/// What a layer's tensor is, for naming it in a file and for treating norms
/// alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    AttnNorm,
    FfnNorm,
    QNorm,
    KNorm,
    PostAttnNorm,
    PostFfnNorm,
    Weight(Proj),
    Bias(Proj),
}

impl Part {
    pub fn is_norm(self) -> bool {
        !matches!(self, Self::Weight(_) | Self::Bias(_))
    }
}

impl Layer {
    /// Every tensor of the layer with what it is, in a fixed order.
    pub fn parts(&self) -> Vec<(Part, &Tensor)> {
        let mut out = vec![(Part::AttnNorm, &self.attn_norm)];
        for (p, lin) in self.linears() {
            out.push((Part::Weight(p), &lin.weight));
            if let Some(b) = &lin.bias {
                out.push((Part::Bias(p), b));
            }
        }
        for (part, t) in [
            (Part::QNorm, &self.q_norm),
            (Part::KNorm, &self.k_norm),
            (Part::PostAttnNorm, &self.post_attn_norm),
        ] {
            out.extend(t.as_ref().map(|t| (part, t)));
        }
        out.push((Part::FfnNorm, &self.ffn_norm));
        out.extend(self.post_ffn_norm.as_ref().map(|t| (Part::PostFfnNorm, t)));
        out
    }

    /// The same as [`Layer::parts`], mutable.
    pub fn parts_mut(&mut self) -> Vec<(Part, &mut Tensor)> {
        let mut out = vec![(Part::AttnNorm, &mut self.attn_norm)];
        for (p, lin) in [
            (Proj::QProj, &mut self.q_proj),
            (Proj::KProj, &mut self.k_proj),
            (Proj::VProj, &mut self.v_proj),
            (Proj::OProj, &mut self.o_proj),
            (Proj::GateProj, &mut self.gate_proj),
            (Proj::UpProj, &mut self.up_proj),
            (Proj::DownProj, &mut self.down_proj),
        ] {
            out.push((Part::Weight(p), &mut lin.weight));
            if let Some(b) = lin.bias.as_mut() {
                out.push((Part::Bias(p), b));
            }
        }
        for (part, t) in [
            (Part::QNorm, &mut self.q_norm),
            (Part::KNorm, &mut self.k_norm),
            (Part::PostAttnNorm, &mut self.post_attn_norm),
        ] {
            out.extend(t.as_mut().map(|t| (part, t)));
        }
        out.push((Part::FfnNorm, &mut self.ffn_norm));
        out.extend(self.post_ffn_norm.as_mut().map(|t| (Part::PostFfnNorm, t)));
        out
    }

    /// The seven projections with their names.
    pub fn linears(&self) -> [(Proj, &Linear); 7] {
        [
            (Proj::QProj, &self.q_proj),
            (Proj::KProj, &self.k_proj),
            (Proj::VProj, &self.v_proj),
            (Proj::OProj, &self.o_proj),
            (Proj::GateProj, &self.gate_proj),
            (Proj::UpProj, &self.up_proj),
            (Proj::DownProj, &self.down_proj),
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }
}

/// A layer tensor's name in a Hugging Face checkpoint of family `arch`.
pub fn hf_part_name(arch: Arch, layer: usize, part: Part) -> String {
    let p = format!("model.layers.{layer}");
    let proj = |pr: Proj| match pr {
        Proj::QProj | Proj::KProj | Proj::VProj | Proj::OProj => {
            format!("self_attn.{}", pr.name())
        }
        _ => format!("mlp.{}", pr.name()),
    };
    match part {
        Part::AttnNorm => format!("{p}.input_layernorm.weight"),
        Part::FfnNorm if arch == Arch::Gemma3 => format!("{p}.pre_feedforward_layernorm.weight"),
        Part::FfnNorm => format!("{p}.post_attention_layernorm.weight"),
        Part::PostAttnNorm => format!("{p}.post_attention_layernorm.weight"),
        Part::PostFfnNorm => format!("{p}.post_feedforward_layernorm.weight"),
        Part::QNorm => format!("{p}.self_attn.q_norm.weight"),
        Part::KNorm => format!("{p}.self_attn.k_norm.weight"),
        Part::Weight(pr) => format!("{p}.{}.weight", proj(pr)),
        Part::Bias(pr) => format!("{p}.{}.bias", proj(pr)),
    }
}

/// Keys and values of earlier positions, per layer, for generation.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// 1 for a real token, 0 for padding, for every cached position (b × t).
    key_mask: Vec<u8>,
    /// Position of the next token of each row.
    next_pos: Vec<u32>,
    batch: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        // A cache that has seen no rows yet has batch 0, and no positions.
        self.key_mask.len().checked_div(self.batch).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the given rows (in that order), e.g. the surviving beams.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let t = self.len();
        let Some(first) = self.layers.iter().flatten().next() else {
            return Ok(());
        };
        let dev = first.0.device().clone();
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &dev,
        )?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        let mut mask = Vec::with_capacity(rows.len() * t);
        let mut next = Vec::with_capacity(rows.len());
        for &r in rows {
            mask.extend_from_slice(&self.key_mask[r * t..(r + 1) * t]);
            next.push(self.next_pos[r]);
        }
        self.key_mask = mask;
        self.next_pos = next;
        self.batch = rows.len();
        Ok(())
    }
}

/// One forward pass's input: token ids (batch × seq, row-major) and which of
/// them are padding. Rows are left-padded.
pub struct Input<'a> {
    pub ids: &'a [u32],
    pub pad_mask: &'a [u8],
    pub batch: usize,
    pub seq: usize,
}

impl<'a> From<&'a crate::data::batch::Batch> for Input<'a> {
    fn from(b: &'a crate::data::batch::Batch) -> Self {
        Input {
            ids: &b.ids,
            pad_mask: &b.attn_mask,
            batch: b.batch,
            seq: b.seq,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<Linear>,
    pub device: Device,
    pub dtype: DType,
}

impl Model {
    /// Gemma keeps its norm weights as offsets from one (`x·(1 + w)`); the
    /// model holds `1 + w` and files hold `w`.
    pub fn norm_offset(&self) -> f64 {
        norm_offset(self.config.arch)
    }

    /// Every base tensor with its Hugging Face name, as a Hugging Face
    /// checkpoint of the family stores it.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.filed_tensors()
            .into_iter()
            .map(|(name, _, t)| (name, t))
            .collect()
    }

    /// [`Model::named_tensors`], each layer tensor with the part it is, so
    /// that what depends on the part needs no second walk of the layers.
    fn filed_tensors(&self) -> Vec<(String, Option<Part>, Tensor)> {
        let off = self.norm_offset();
        let file = |t: &Tensor, norm: bool| -> Tensor {
            match norm && off != 0.0 {
                true => t.affine(1.0, -off).unwrap_or_else(|_| t.clone()),
                false => t.clone(),
            }
        };
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            None,
            self.embed.clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            for (part, t) in l.parts() {
                out.push((
                    hf_part_name(self.config.arch, i, part),
                    Some(part),
                    file(t, part.is_norm()),
                ));
            }
        }
        out.push((
            "model.norm.weight".to_string(),
            None,
            file(&self.norm, true),
        ));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), None, h.weight.clone()));
        }
        out
    }

    /// `t`, a weight or bias of projection `proj` (or a LoRA B factor of
    /// it: anything with the projection's output rows first), with its
    /// rows in Hugging Face's order: a GGUF-born LLaMA keeps each head's q
    /// and k rows interleaved for RoPE (rows 2i and 2i + 1), Hugging Face
    /// halves them (rows i and i + head_dim/2).
    pub fn hf_rows(&self, t: &Tensor, proj: Proj) -> Result<Tensor> {
        let c = &self.config;
        let heads = match proj {
            Proj::QProj => c.num_heads,
            Proj::KProj => c.num_kv_heads,
            _ => return Ok(t.clone()),
        };
        if c.rope_layout != RopeLayout::Interleaved {
            return Ok(t.clone());
        }
        let hd = c.head_dim;
        let rest: Vec<usize> = t.dims()[1..].to_vec();
        let mut shape = vec![heads, hd / 2, 2];
        shape.extend(&rest);
        let mut flat = vec![heads * hd];
        flat.extend(&rest);
        t.reshape(shape)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape(flat)
    }

    /// [`Model::named_tensors`] as a Hugging Face checkpoint holds them
    /// (q and k rows in its RoPE order).
    pub fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.filed_tensors()
            .into_iter()
            .map(|(name, part, t)| {
                let t = match part {
                    Some(Part::Weight(p) | Part::Bias(p)) => self.hf_rows(&t, p)?,
                    _ => t,
                };
                Ok((name, t))
            })
            .collect()
    }

    /// Convert every weight to `dtype` (f64 for finite-difference checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let lin = |l: &Linear| -> Result<Linear> {
            Ok(Linear {
                weight: l.weight.to_dtype(dtype)?,
                bias: l.bias.as_ref().map(|b| b.to_dtype(dtype)).transpose()?,
                trainable: l.trainable,
            })
        };
        let mut layers = self.layers.clone();
        for l in layers.iter_mut() {
            for (_, t) in l.parts_mut() {
                *t = t.to_dtype(dtype)?;
            }
        }
        Ok(Self {
            config: self.config.clone(),
            embed: self.embed.to_dtype(dtype)?,
            layers,
            norm: self.norm.to_dtype(dtype)?,
            lm_head: self.lm_head.as_ref().map(lin).transpose()?,
            device: self.device.clone(),
            dtype,
        })
    }

    /// Turn every projection weight (and bias) into a trainable `Var` (full
    /// fine-tuning). Embedding and norms stay as they are unless
    /// `all` is set, in which case they become `Var`s too.
    pub fn make_trainable(&mut self, all: bool) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::new();
        let mut var_of = |name: String, t: &mut Tensor| -> Result<()> {
            let v = Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(())
        };
        if all {
            var_of("model.embed_tokens.weight".into(), &mut self.embed)?;
            var_of("model.norm.weight".into(), &mut self.norm)?;
        }
        let arch = self.config.arch;
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (part, t) in l.parts_mut() {
                if all || !part.is_norm() {
                    var_of(hf_part_name(arch, i, part), t)?;
                }
            }
            for lin in l.linears_mut() {
                lin.trainable = true;
            }
        }
        if let Some(h) = self.lm_head.as_mut() {
            var_of("lm_head.weight".into(), &mut h.weight)?;
            h.trainable = true;
        }
        Ok(vars)
    }

    fn norm(&self, x: &Tensor, w: &Tensor, trainable: bool) -> Result<Tensor> {
        if trainable {
            let d = x.dim(D::Minus1)? as f64;
            let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / d)?;
            let r = (ms + self.config.rms_norm_eps)?.sqrt()?.recip()?;
            x.broadcast_mul(&r)?.broadcast_mul(w)
        } else {
            ops::rms_norm(x, w, self.config.rms_norm_eps)
        }
    }

    fn head(&self, h: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(l) => l.forward(h),
            None => {
                if self.embed.is_variable() || self.embed.track_op() {
                    h.broadcast_matmul(&self.embed.t()?)
                } else {
                    ops::frozen_linear(h, &self.embed)
                }
            }
        }
    }

    /// Logits for every position (batch × seq × vocab), or only for the last
    /// one (batch × 1 × vocab) when `last_only`. With a cache, `input` holds
    /// only the new tokens and the cache grows by them.
    pub fn forward(
        &self,
        input: &Input,
        cache: Option<&mut KvCache>,
        hooks: &mut dyn Hooks,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, s) = (input.batch, input.seq);
        if input.ids.len() != b * s || input.pad_mask.len() != b * s {
            candle_core::bail!("forward: ids/mask length does not match {b}×{s}");
        }
        let cfg = &self.config;
        let mut fresh = KvCache::default();
        let cache = match cache {
            Some(c) => c,
            None => &mut fresh,
        };
        if cache.layers.is_empty() {
            cache.layers = vec![None; cfg.num_layers];
            cache.next_pos = vec![0; b];
            cache.batch = b;
        }
        if cache.batch != b {
            candle_core::bail!("forward: cache holds {} rows, input has {b}", cache.batch);
        }
        let past = cache.len();
        // Positions count real tokens only, so a left-padded row starts at 0.
        let mut positions = Vec::with_capacity(b * s);
        for r in 0..b {
            let mut p = cache.next_pos[r];
            for j in 0..s {
                positions.push(p);
                if input.pad_mask[r * s + j] != 0 {
                    p += 1;
                }
            }
            cache.next_pos[r] = p;
        }
        let t = past + s;
        let mut key_mask = Vec::with_capacity(b * t);
        for r in 0..b {
            key_mask.extend_from_slice(&cache.key_mask[r * past..(r + 1) * past]);
            key_mask.extend_from_slice(&input.pad_mask[r * s..(r + 1) * s]);
        }
        cache.key_mask = key_mask;
        // One mask per attention window and one frequency table per RoPE
        // kind among the layers (two of each on Gemma 3, one elsewhere).
        let longest = positions.iter().max().map_or(0, |&p| p as usize + 1);
        let mut masks: Vec<(Option<usize>, AttentionMask)> = Vec::new();
        let mut freqs: Vec<(bool, Arc<Vec<f64>>)> = Vec::new();
        let mut per_layer = Vec::with_capacity(cfg.num_layers);
        for li in 0..cfg.num_layers {
            let window = cfg.layer_window(li);
            let mi = match masks.iter().position(|(w, _)| *w == window) {
                Some(i) => i,
                None => {
                    let m = self.attention_mask(&cache.key_mask, b, s, past, window)?;
                    masks.push((window, m));
                    masks.len() - 1
                }
            };
            let local = cfg.is_local(li) && cfg.rope_local_theta.is_some();
            let fi = match freqs.iter().position(|(l, _)| *l == local) {
                Some(i) => i,
                None => {
                    freqs.push((local, Arc::new(cfg.inv_freq(li, longest))));
                    freqs.len() - 1
                }
            };
            per_layer.push((mi, fi));
        }
        let positions = Arc::new(positions);

        let ids = Tensor::from_vec(input.ids.to_vec(), (b, s), &self.device)?;
        let mut h = self.embed.embedding_lookup(&ids)?;
        if cfg.embed_scale {
            h = (h * (cfg.hidden_size as f64).sqrt())?;
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let (mi, fi) = per_layer[li];
            let at = Positions {
                mask: &masks[mi].1,
                positions: &positions,
                inv_freq: &freqs[fi].1,
            };
            h = self.layer_forward(li, layer, &h, &at, &mut cache.layers[li], hooks)?;
        }
        let h = if last_only { h.narrow(1, s - 1, 1)? } else { h };
        let h = self.norm(&h, &self.norm, self.norm.is_variable())?;
        // Logits leave in f32: the loss and sampling want full precision.
        let logits = ops::widen(&self.head(&h)?)?;
        match cfg.final_logit_softcapping {
            Some(cap) => softcap(&logits, cap),
            None => Ok(logits),
        }
    }

    /// Additive mask (batch × seq × keys): 0 where a query may look, -inf
    /// elsewhere (future keys, padding, outside the sliding window).
    fn attention_mask(
        &self,
        key_mask: &[u8],
        b: usize,
        s: usize,
        past: usize,
        window: Option<usize>,
    ) -> Result<AttentionMask> {
        let t = past + s;
        let mut m = vec![0f32; b * s * t];
        for r in 0..b {
            for i in 0..s {
                let qi = past + i;
                for j in 0..t {
                    let allowed =
                        j <= qi && key_mask[r * t + j] != 0 && window.is_none_or(|w| qi - j < w);
                    if !allowed {
                        m[(r * s + i) * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        // The CPU applies it inside its softmax kernel; other devices add
        // it as a tensor.
        let tensor = match self.device.is_cpu() {
            true => None,
            false => Some(
                Tensor::from_vec(m.clone(), (b, 1, s, t), &self.device)?.to_dtype(self.dtype)?,
            ),
        };
        Ok(AttentionMask {
            values: Arc::new(m),
            tensor,
        })
    }

    fn layer_forward(
        &self,
        li: usize,
        l: &Layer,
        h: &Tensor,
        at: &Positions,
        kv: &mut Option<(Tensor, Tensor)>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, s, _) = h.dims3()?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let x = self.norm(h, &l.attn_norm, l.attn_norm.is_variable())?;
        let proj = |hooks: &mut dyn Hooks, p: Proj, lin: &Linear, x: &Tensor| -> Result<Tensor> {
            let y = lin.forward(x)?;
            // Adapters see f32 whatever the base's dtype (their parameters,
            // gradients and optimizer state are f32); outputs are cast back.
            match hooks.proj(li, p, &ops::widen(x)?)? {
                Some(delta) => {
                    let delta = delta.to_dtype(y.dtype())?;
                    y + delta
                }
                None => Ok(y),
            }
        };
        // Queries and keys per head, normed over head_dim where the family
        // does so (before RoPE).
        let heads = |y: Tensor, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
            let y = y.reshape((b, s, n, hd))?;
            let y = match norm {
                Some(w) => self.norm(&y, w, w.is_variable())?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let q = heads(proj(hooks, Proj::QProj, &l.q_proj, &x)?, nh, &l.q_norm)?;
        let k = heads(proj(hooks, Proj::KProj, &l.k_proj, &x)?, nkv, &l.k_norm)?;
        let v = heads(proj(hooks, Proj::VProj, &l.v_proj, &x)?, nkv, &None)?;
        let q = ops::rope(&q, at.positions, at.inv_freq, cfg.rope_layout)?;
        let k = ops::rope(&k, at.positions, at.inv_freq, cfg.rope_layout)?;
        let (k, v) = match kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let t = k.dim(2)?;
        let group = nh / nkv;
        // Grouped-query attention: each KV head serves `group` query heads.
        let q = q.reshape((b, nkv, group * s, hd))?;
        let mut scale = cfg.attn_scale();
        let mut scores = q.matmul(&k.t()?)?.reshape((b, nh, s, t))?;
        if let Some(cap) = cfg.attn_logit_softcapping {
            scores = softcap(&(scores * scale)?, cap)?;
            scale = 1.0;
        }
        let probs = match &at.mask.tensor {
            None => ops::masked_softmax(&scores, &at.mask.values, scale)?,
            Some(m) => ops::softmax_last_dim(&(scores * scale)?.broadcast_add(m)?)?,
        };
        let ctx = probs.reshape((b, nkv, group * s, t))?.matmul(&v)?;
        let ctx = ctx
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, nh * hd))?;
        let attn = proj(hooks, Proj::OProj, &l.o_proj, &ctx)?;
        let attn = match &l.post_attn_norm {
            Some(w) => self.norm(&attn, w, w.is_variable())?,
            None => attn,
        };
        let h = (h + attn)?;
        let u = self.norm(&h, &l.ffn_norm, l.ffn_norm.is_variable())?;
        let gate = proj(hooks, Proj::GateProj, &l.gate_proj, &u)?;
        let up = proj(hooks, Proj::UpProj, &l.up_proj, &u)?;
        let act = ops::gated_mul(&gate, &up, cfg.activation)?;
        let ffn = proj(hooks, Proj::DownProj, &l.down_proj, &act)?;
        let adapter = match hooks.ffn(li, &ops::widen(&u)?)? {
            Some(a) => Some(a.to_dtype(ffn.dtype())?),
            None => None,
        };
        match (&l.post_ffn_norm, adapter) {
            (None, None) => h + ffn,
            (None, Some(a)) => (h + ffn)? + a,
            (Some(w), a) => {
                let ffn = match a {
                    Some(a) => (ffn + a)?,
                    None => ffn,
                };
                h + self.norm(&ffn, w, w.is_variable())?
            }
        }
    }
}

/// `cap · tanh(x / cap)`.
fn softcap(x: &Tensor, cap: f64) -> Result<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// What a layer needs of the positions: its attention mask and its RoPE
/// frequencies (shared by the layers of one kind).
struct Positions<'a> {
    mask: &'a AttentionMask,
    positions: &'a Arc<Vec<u32>>,
    inv_freq: &'a Arc<Vec<f64>>,
}

/// The attention mask of one forward pass: its values, and on devices
/// other than the CPU the same as a (batch × 1 × seq × keys) tensor.
struct AttentionMask {
    values: Arc<Vec<f32>>,
    tensor: Option<Tensor>,
}

trait EmbeddingLookup {
    fn embedding_lookup(&self, ids: &Tensor) -> Result<Tensor>;
}

impl EmbeddingLookup for Tensor {
    fn embedding_lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let d = self.dim(1)?;
        self.index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, d))
    }
}
