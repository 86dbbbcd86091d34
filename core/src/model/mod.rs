//! The frozen base: a LLaMA/Mistral decoder on candle (RMSNorm, rotary
//! embeddings in both layouts, grouped-query attention, sliding-window
//! attention, SwiGLU) with one hook per layer where an adapter adds to the FFN
//! output; loaders for the embedded tiny model, Hugging Face directories and
//! GGUF files; tokenizers; greedy and beam generation with a KV cache.
//!
//! The model never knows which adapter is attached: it calls [`Hooks`].

pub mod generate;
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

/// Which decoder family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Mistral,
}

/// The shape of a decoder, whatever file it came from.
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
        let per_layer = d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size + 2 * d;
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_layers * per_layer + d + head
    }
}

/// A linear map `x · Wᵀ`. Frozen weights go through [`ops::frozen_linear`] so
/// that no weight gradient is ever computed; trainable ones (full
/// fine-tuning) are candle `Var`s on the ordinary matmul path.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub trainable: bool,
}

impl Linear {
    pub fn frozen(weight: Tensor) -> Self {
        Self {
            weight,
            trainable: false,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
    /// Called with the FFN input `u` (the post-attention RMSNorm output, shape
    /// batch × seq × d); a returned tensor of the same shape is added to the
    /// FFN output.
    fn ffn(&mut self, _layer: usize, _u: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Called with the input of a projection; a returned tensor of the
    /// projection's output shape is added to its output.
    fn proj(&mut self, _layer: usize, _proj: Proj, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
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
    /// Every base tensor with its Hugging Face name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), l.attn_norm.clone()));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.ffn_norm.clone(),
            ));
            for (name, lin) in [
                ("self_attn.q_proj", &l.q_proj),
                ("self_attn.k_proj", &l.k_proj),
                ("self_attn.v_proj", &l.v_proj),
                ("self_attn.o_proj", &l.o_proj),
                ("mlp.gate_proj", &l.gate_proj),
                ("mlp.up_proj", &l.up_proj),
                ("mlp.down_proj", &l.down_proj),
            ] {
                out.push((format!("{p}.{name}.weight"), lin.weight.clone()));
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.weight.clone()));
        }
        out
    }

    /// Convert every weight to `dtype` (f64 for finite-difference checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let lin = |l: &Linear| -> Result<Linear> {
            Ok(Linear {
                weight: l.weight.to_dtype(dtype)?,
                trainable: l.trainable,
            })
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    attn_norm: l.attn_norm.to_dtype(dtype)?,
                    q_proj: lin(&l.q_proj)?,
                    k_proj: lin(&l.k_proj)?,
                    v_proj: lin(&l.v_proj)?,
                    o_proj: lin(&l.o_proj)?,
                    ffn_norm: l.ffn_norm.to_dtype(dtype)?,
                    gate_proj: lin(&l.gate_proj)?,
                    up_proj: lin(&l.up_proj)?,
                    down_proj: lin(&l.down_proj)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
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

    /// Turn every projection weight into a trainable `Var` (full
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
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            if all {
                var_of(format!("{p}.input_layernorm.weight"), &mut l.attn_norm)?;
                var_of(
                    format!("{p}.post_attention_layernorm.weight"),
                    &mut l.ffn_norm,
                )?;
            }
            for (name, lin) in [
                ("self_attn.q_proj", &mut l.q_proj),
                ("self_attn.k_proj", &mut l.k_proj),
                ("self_attn.v_proj", &mut l.v_proj),
                ("self_attn.o_proj", &mut l.o_proj),
                ("mlp.gate_proj", &mut l.gate_proj),
                ("mlp.up_proj", &mut l.up_proj),
                ("mlp.down_proj", &mut l.down_proj),
            ] {
                var_of(format!("{p}.{name}.weight"), &mut lin.weight)?;
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
        let mask = self.attention_mask(&cache.key_mask, &positions, b, s, past)?;
        let positions = Arc::new(positions);

        let ids = Tensor::from_vec(input.ids.to_vec(), (b, s), &self.device)?;
        let mut h = self.embed.embedding_lookup(&ids)?;
        for (li, layer) in self.layers.iter().enumerate() {
            h = self.layer_forward(
                li,
                layer,
                &h,
                &mask,
                &positions,
                &mut cache.layers[li],
                hooks,
            )?;
        }
        let h = if last_only { h.narrow(1, s - 1, 1)? } else { h };
        let h = self.norm(&h, &self.norm, self.norm.is_variable())?;
        // Logits leave in f32: the loss and sampling want full precision.
        ops::widen(&self.head(&h)?)
    }

    /// Additive mask (batch × seq × keys): 0 where a query may look, -inf
    /// elsewhere (future keys, padding, outside the sliding window).
    fn attention_mask(
        &self,
        key_mask: &[u8],
        positions: &[u32],
        b: usize,
        s: usize,
        past: usize,
    ) -> Result<AttentionMask> {
        let t = past + s;
        let window = self.config.sliding_window;
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
        let _ = positions;
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

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        li: usize,
        l: &Layer,
        h: &Tensor,
        mask: &AttentionMask,
        positions: &Arc<Vec<u32>>,
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
        let q = proj(hooks, Proj::QProj, &l.q_proj, &x)?;
        let k = proj(hooks, Proj::KProj, &l.k_proj, &x)?;
        let v = proj(hooks, Proj::VProj, &l.v_proj, &x)?;
        let q = q.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = ops::rope(&q, positions, cfg.rope_theta, cfg.rope_layout)?;
        let k = ops::rope(&k, positions, cfg.rope_theta, cfg.rope_layout)?;
        let (k, v) = match kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let t = k.dim(2)?;
        let group = nh / nkv;
        // Grouped-query attention: each KV head serves `group` query heads.
        let q = q.reshape((b, nkv, group * s, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = q.matmul(&k.t()?)?.reshape((b, nh, s, t))?;
        let probs = match &mask.tensor {
            None => ops::masked_softmax(&scores, &mask.values, scale)?,
            Some(m) => ops::softmax_last_dim(&(scores * scale)?.broadcast_add(m)?)?,
        };
        let ctx = probs.reshape((b, nkv, group * s, t))?.matmul(&v)?;
        let ctx = ctx
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, nh * hd))?;
        let attn = proj(hooks, Proj::OProj, &l.o_proj, &ctx)?;
        let h = (h + attn)?;
        let u = self.norm(&h, &l.ffn_norm, l.ffn_norm.is_variable())?;
        let gate = proj(hooks, Proj::GateProj, &l.gate_proj, &u)?;
        let up = proj(hooks, Proj::UpProj, &l.up_proj, &u)?;
        let act = ops::silu_mul(&gate, &up)?;
        let ffn = proj(hooks, Proj::DownProj, &l.down_proj, &act)?;
        let out = (h + ffn)?;
        match hooks.ffn(li, &ops::widen(&u)?)? {
            Some(a) => {
                let a = a.to_dtype(out.dtype())?;
                out + a
            }
            None => Ok(out),
        }
    }
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
