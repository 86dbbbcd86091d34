//! Tokenizers: a Hugging Face `tokenizer.json`, a byte-level BPE rebuilt from
//! GGUF metadata, and the embedded tiny model's byte-level vocabulary. All
//! three end up as one [`Tokenizer`] that knows its BOS, EOS and pad ids.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("tokenizer: {0}")]
    Other(String),
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: u32,
    /// Whether a prompt starts with BOS (the checkpoint's own convention).
    pub add_bos: bool,
    /// Ids that end generation (EOS plus e.g. a chat end-of-turn marker).
    pub stop_ids: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// The byte ↔ printable-char map of GPT-2's byte-level BPE.
pub fn byte_to_char() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        out[*b as usize] = char::from_u32(c).unwrap_or(' ');
    }
    out
}

fn added_token(id: u32, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": true})
}

fn byte_level_json(
    vocab: &BTreeMap<String, u32>,
    merges: &[String],
    specials: &[(u32, String)],
    digits_individual: bool,
) -> Value {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre = if digits_individual {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": specials.iter().map(|(id, c)| added_token(*id, c)).collect::<Vec<_>>(),
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

/// Special tokens of the embedded tiny vocabulary.
pub const TINY_SPECIALS: [&str; 3] = ["<pad>", "<s>", "</s>"];

impl Tokenizer {
    pub fn from_inner(
        inner: tokenizers::Tokenizer,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        pad_id: Option<u32>,
    ) -> Self {
        let pad_id = pad_id.or(eos_id).unwrap_or(0);
        Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            add_bos: bos_id.is_some(),
            stop_ids: eos_id.into_iter().collect(),
        }
    }

    /// The embedded tiny model's tokenizer: three specials, the 256 bytes,
    /// and the given merges (none for the byte-level fallback).
    pub fn tiny(merges: &[(String, String)]) -> Result<Self, TokenizerError> {
        let b2c = byte_to_char();
        let mut vocab = BTreeMap::new();
        let mut specials = Vec::new();
        for (i, s) in TINY_SPECIALS.iter().enumerate() {
            vocab.insert(s.to_string(), i as u32);
            specials.push((i as u32, s.to_string()));
        }
        for c in &b2c {
            let id = vocab.len() as u32;
            vocab.entry(c.to_string()).or_insert(id);
        }
        let mut merge_lines = Vec::with_capacity(merges.len());
        for (a, b) in merges {
            let merged = format!("{a}{b}");
            let id = vocab.len() as u32;
            vocab.entry(merged).or_insert(id);
            merge_lines.push(format!("{a} {b}"));
        }
        let j = byte_level_json(&vocab, &merge_lines, &specials, false);
        let inner = tokenizers::Tokenizer::from_bytes(j.to_string().as_bytes())
            .map_err(|e| TokenizerError::Other(format!("tiny vocabulary: {e}")))?;
        Ok(Self::from_inner(inner, Some(1), Some(2), Some(0)))
    }

    /// A Hugging Face `tokenizer.json`; special ids come from the model's
    /// `config.json` when given, else from the usual token names.
    pub fn from_hf_file(
        path: &Path,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
    ) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerError::File {
                path: path.display().to_string(),
                msg: format!("not a valid tokenizer.json: {e}"),
            })?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = bos_id.or_else(|| find(&["<s>", "<|begin_of_text|>", "<|im_start|>"]));
        let eos =
            eos_id.or_else(|| find(&["</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"]));
        let pad = find(&["<pad>", "<|pad|>"]);
        let mut t = Self::from_inner(inner, bos, eos, pad);
        // Follow the checkpoint's own post-processor: Llama-2 style adds BOS,
        // most chat models' tokenizers do not.
        t.add_bos = match (bos, t.inner.encode("a", true)) {
            (Some(b), Ok(enc)) => enc.get_ids().first() == Some(&b),
            _ => false,
        };
        t.add_chat_stops();
        Ok(t)
    }

    /// A byte-level BPE rebuilt from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(
        md: &std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>,
        path: &Path,
    ) -> Result<Self, TokenizerError> {
        let err = |msg: String| TokenizerError::File {
            path: path.display().to_string(),
            msg,
        };
        let get_str = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
        let get_u32 = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let model = get_str("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
            )));
        }
        let tokens = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| err("missing tokenizer.ggml.tokens".into()))?;
        let types: Vec<i32> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
            .unwrap_or_default();
        let merges: Vec<String> = md
            .get("tokenizer.ggml.merges")
            .and_then(|v| v.to_vec().ok())
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.to_string().ok().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let mut vocab = BTreeMap::new();
        let mut specials = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let s = t
                .to_string()
                .map_err(|_| err(format!("token {i} is not a string")))?
                .clone();
            // Type 3 is a control token (e.g. <|im_start|>); 4 user-defined.
            if matches!(types.get(i), Some(3) | Some(4)) {
                specials.push((i as u32, s.clone()));
            }
            vocab.insert(s, i as u32);
        }
        let pre = get_str("tokenizer.ggml.pre").unwrap_or_default();
        let digits = matches!(pre.as_str(), "smollm" | "starcoder" | "refact" | "gpt-4o");
        let j = byte_level_json(&vocab, &merges, &specials, digits);
        let inner = tokenizers::Tokenizer::from_bytes(j.to_string().as_bytes())
            .map_err(|e| err(format!("cannot build the tokenizer: {e}")))?;
        let bos = get_u32("tokenizer.ggml.bos_token_id");
        let eos = get_u32("tokenizer.ggml.eos_token_id");
        let pad = get_u32("tokenizer.ggml.padding_token_id");
        let mut t = Self::from_inner(inner, bos, eos, pad);
        t.add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        t.add_chat_stops();
        Ok(t)
    }

    fn add_chat_stops(&mut self) {
        for name in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "</s>",
            "<|endoftext|>",
        ] {
            if let Some(id) = self.inner.token_to_id(name) {
                if !self.stop_ids.contains(&id) {
                    self.stop_ids.push(id);
                }
            }
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with no BOS/EOS added; special tokens written in
    /// the text (e.g. `<|im_start|>`) map to their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Other(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a prompt: BOS first when the checkpoint expects it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Text of `ids`, special tokens included, so decode(encode(s)) == s.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Other(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The `tokenizer.json` text, for saving next to a model.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizerError::Other(e.to_string()))
    }

    pub fn from_json(json: &str, origin: &str) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| {
            TokenizerError::File {
                path: origin.to_string(),
                msg: format!("not a valid tokenizer.json: {e}"),
            }
        })?;
        let find = |n: &str| inner.token_to_id(n);
        let (bos, eos, pad) = (find("<s>"), find("</s>"), find("<pad>"));
        Ok(Self::from_inner(inner, bos, eos, pad))
    }
}
