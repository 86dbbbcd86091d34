//! Tokenizers: a Hugging Face `tokenizer.json`, a byte-level BPE rebuilt from
//! GGUF metadata, and the embedded tiny model's byte-level vocabulary. All
//! three end up as one [`Tokenizer`] that knows its BOS, EOS and pad ids.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    /// The checkpoint's own Jinja chat template (GGUF
    /// `tokenizer.chat_template`, or `tokenizer_config.json`'s).
    pub chat_template: Option<String>,
    /// The `tokenizer.*` metadata of the GGUF file it was built from,
    /// written back as it was into a GGUF export.
    pub gguf: Option<Arc<Vec<(String, candle_core::quantized::gguf_file::Value)>>>,
    /// Chat templates compiled so far, by name (the model's own by its
    /// text): a run compiles each once, however many records it renders.
    compiled: Arc<Mutex<HashMap<String, Arc<crate::data::chat::ChatTemplate>>>>,
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

/// How a byte-level BPE splits text into words before merging (llama.cpp's
/// `tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreSplit {
    /// GPT-2's own pattern.
    Gpt2,
    /// GPT-2's, every digit its own word first (SmolLM, StarCoder).
    Digits,
    /// A Split on this pattern, then the byte map without GPT-2's pattern.
    Regex(&'static str),
}

/// Llama 3's pattern (llama.cpp's `llama-bpe`): digits in runs of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: the same with every digit alone.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl PreSplit {
    fn of_gguf(pre: &str) -> Option<Self> {
        match pre {
            "" | "default" | "gpt2" | "gpt-2" => Some(Self::Gpt2),
            "smollm" | "starcoder" | "refact" | "gpt-4o" => Some(Self::Digits),
            "llama-bpe" | "llama3" | "llama-v3" => Some(Self::Regex(LLAMA3_SPLIT)),
            "qwen2" | "qwen" | "qwen35" => Some(Self::Regex(QWEN2_SPLIT)),
            _ => None,
        }
    }
}

fn byte_level_json(
    vocab: &BTreeMap<String, u32>,
    merges: &[String],
    specials: &[(u32, String)],
    split: PreSplit,
) -> Value {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre = match split {
        PreSplit::Gpt2 => byte_level.clone(),
        PreSplit::Digits => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        PreSplit::Regex(pattern) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
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

/// A SentencePiece BPE (Gemma's, LLaMA 2's) from its pieces and scores: the
/// pieces with spaces as `▁`, merges of every pair of pieces whose
/// concatenation is a piece, ranked by that piece's score (highest first,
/// as SentencePiece merges), bytes not in the vocabulary through the
/// `<0xNN>` pieces.
fn sentencepiece_bpe(
    tokens: &[String],
    scores: &[f32],
    types: &[i32],
    specials: &[(u32, String)],
    space_prefix: bool,
    unk: Option<String>,
) -> Result<tokenizers::Tokenizer, String> {
    use tokenizers::decoders::{
        byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as DecSeq, DecoderWrapper,
    };
    use tokenizers::normalizers::{Prepend, Replace};
    use tokenizers::{AddedToken, NormalizerWrapper};
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    // Control and byte pieces never come out of a merge.
    let mergeable = |i: usize| matches!(types.get(i).copied().unwrap_or(1), 1 | 4);
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if !mergeable(i) || piece.chars().nth(1).is_none() {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                if mergeable(li as usize) && mergeable(ri as usize) {
                    merges.push((
                        scores.get(i).copied().unwrap_or(0.0),
                        i as u32,
                        l.into(),
                        r.into(),
                    ));
                }
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges: Vec<(String, String)> = merges.into_iter().map(|(_, _, l, r)| (l, r)).collect();
    let mut builder = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder.build().map_err(|e| e.to_string())?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let replace = Replace::new(" ", "\u{2581}").map_err(|e| e.to_string())?;
    let normalizer: NormalizerWrapper = match space_prefix {
        true => tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("\u{2581}".into()).into(),
            replace.into(),
        ])
        .into(),
        false => replace.into(),
    };
    tok.with_normalizer(Some(normalizer));
    let unspace = tokenizers::decoders::strip::Strip::new(' ', usize::from(space_prefix), 0);
    let decoders: Vec<DecoderWrapper> = vec![
        tokenizers::normalizers::Replace::new("\u{2581}", " ")
            .map_err(|e| e.to_string())?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        unspace.into(),
    ];
    tok.with_decoder(Some(DecSeq::new(decoders)));
    let added: Vec<AddedToken> = specials
        .iter()
        .map(|(_, c)| AddedToken::from(c.clone(), true).normalized(false))
        .collect();
    tok.add_special_tokens(&added);
    Ok(tok)
}

/// The turn markup of a chat model's family, recognised by its special
/// tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role … <|im_end|>` (SmolLM2, Qwen).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|> … <|eot_id|>` (Llama 3).
    Llama3,
    /// `<start_of_turn>user … <end_of_turn>`, the reply's role `model` (Gemma).
    Gemma,
    /// `[INST] … [/INST]` (Mistral, LLaMA 2 chat).
    Inst,
}

impl ChatFormat {
    /// The built-in template of the family (`crate::data::chat::builtin`).
    pub fn builtin(self) -> &'static str {
        match self {
            Self::ChatMl => "chatml",
            Self::Llama3 => "llama3",
            Self::Gemma => "gemma",
            Self::Inst => "mistral",
        }
    }
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
        // Padding is masked out of attention and the loss, so with neither
        // a pad nor an EOS token any id serves.
        let pad_id = pad_id.or(eos_id).unwrap_or(0);
        Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            add_bos: bos_id.is_some(),
            stop_ids: eos_id.into_iter().collect(),
            chat_template: None,
            gguf: None,
            compiled: Default::default(),
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
        let j = byte_level_json(&vocab, &merge_lines, &specials, PreSplit::Gpt2);
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

    /// The tokenizer a GGUF file describes (`tokenizer.ggml.*`): a
    /// byte-level BPE (`gpt2`, with llama.cpp's pre-tokenizer names) or a
    /// SentencePiece BPE (`llama`: Gemma, LLaMA 2), with the file's own
    /// special tokens and end-of-turn ids.
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
        let tokens: Vec<String> = md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| err("missing tokenizer.ggml.tokens".into()))?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.to_string()
                    .cloned()
                    .map_err(|_| err(format!("tokenizer.ggml.tokens: token {i} is not a string")))
            })
            .collect::<Result<_, _>>()?;
        let types: Vec<i32> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
            .unwrap_or_default();
        // Type 3 is a control token (<|im_start|>, <start_of_turn>), 4 a
        // user-defined one: both are matched whole in the text, as llama.cpp
        // does.
        let specials: Vec<(u32, String)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| (i as u32, t.clone()))
            .collect();
        let inner = match model.as_str() {
            "gpt2" => {
                let merges: Vec<String> = md
                    .get("tokenizer.ggml.merges")
                    .and_then(|v| v.to_vec().ok())
                    .map(|v| {
                        v.iter()
                            .filter_map(|x| x.to_string().ok().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                let vocab: BTreeMap<String, u32> = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.clone(), i as u32))
                    .collect();
                let pre = get_str("tokenizer.ggml.pre").unwrap_or_default();
                let split = PreSplit::of_gguf(&pre).ok_or_else(|| {
                    err(format!(
                        "tokenizer.ggml.pre {pre:?} is not supported (expected default, gpt2, smollm, starcoder, llama-bpe or qwen2)"
                    ))
                })?;
                let j = byte_level_json(&vocab, &merges, &specials, split);
                tokenizers::Tokenizer::from_bytes(j.to_string().as_bytes())
                    .map_err(|e| err(format!("cannot build the tokenizer: {e}")))?
            }
            "llama" => {
                let scores: Vec<f32> = md
                    .get("tokenizer.ggml.scores")
                    .and_then(|v| v.to_vec().ok())
                    .map(|v| v.iter().map(|x| x.to_f32().unwrap_or(0.0)).collect())
                    .ok_or_else(|| err("missing tokenizer.ggml.scores".into()))?;
                let space_prefix = md
                    .get("tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.to_bool().ok())
                    .unwrap_or(true);
                let unk = get_u32("tokenizer.ggml.unknown_token_id")
                    .and_then(|i| tokens.get(i as usize).cloned());
                sentencepiece_bpe(&tokens, &scores, &types, &specials, space_prefix, unk)
                    .map_err(|e| err(format!("cannot build the tokenizer: {e}")))?
            }
            other => {
                return Err(err(format!(
                    "tokenizer.ggml.model {other:?} is not supported (expected \"gpt2\", byte-level BPE, or \"llama\", SentencePiece)"
                )))
            }
        };
        let bos = get_u32("tokenizer.ggml.bos_token_id");
        let eos = get_u32("tokenizer.ggml.eos_token_id");
        let pad = get_u32("tokenizer.ggml.padding_token_id");
        let mut t = Self::from_inner(inner, bos, eos, pad);
        t.add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(model == "llama");
        t.chat_template = get_str("tokenizer.chat_template");
        let mut kept: Vec<_> = md
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer.") && *k != "tokenizer.chat_template")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        t.gguf = Some(Arc::new(kept));
        for k in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = get_u32(k).filter(|id| !t.stop_ids.contains(id)) {
                t.stop_ids.push(id);
            }
        }
        t.add_chat_stops();
        Ok(t)
    }

    fn add_chat_stops(&mut self) {
        for name in [
            "<|im_end|>",
            "<|eot_id|>",
            "<end_of_turn>",
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

    /// The chat template to render conversations with: the checkpoint's own
    /// when it has one, else the built-in of the family its special tokens
    /// belong to; `None` for a vocabulary without chat markup.
    pub fn chat(
        &self,
    ) -> Result<Option<Arc<crate::data::chat::ChatTemplate>>, crate::data::chat::ChatError> {
        match (&self.chat_template, self.chat_format()) {
            (Some(_), _) => self.chat_template_named(None).map(Some),
            (None, Some(format)) => self.chat_template_named(Some(format.builtin())).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The built-in chat template `name` with this vocabulary's BOS and EOS
    /// texts, or with `None` the checkpoint's own (empty when it has none).
    pub fn chat_template_named(
        &self,
        name: Option<&str>,
    ) -> Result<Arc<crate::data::chat::ChatTemplate>, crate::data::chat::ChatError> {
        use crate::data::chat::{builtin, ChatTemplate};
        let key = match name {
            Some(n) => n.to_string(),
            None => format!(
                "model:{}",
                self.chat_template.as_deref().unwrap_or_default()
            ),
        };
        // A poisoned lock only means another thread panicked mid-insert:
        // the map itself is still whole.
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = compiled.get(&key) {
            return Ok(t.clone());
        }
        let text = |id: Option<u32>| id.and_then(|i| self.id_to_token(i)).unwrap_or_default();
        let (bos, eos) = (text(self.bos_id), text(self.eos_id));
        let template = Arc::new(match name {
            None => ChatTemplate::new(
                self.chat_template.as_deref().unwrap_or_default(),
                "of the model",
                &bos,
                &eos,
            )?,
            Some(n) => ChatTemplate::new(builtin(n).unwrap_or_default(), n, &bos, &eos)?,
        });
        compiled.insert(key, template.clone());
        Ok(template)
    }

    /// The chat markup this vocabulary's special tokens belong to, if any.
    pub fn chat_format(&self) -> Option<ChatFormat> {
        let has = |t: &str| self.inner.token_to_id(t).is_some();
        if has("<|im_start|>") && has("<|im_end|>") {
            Some(ChatFormat::ChatMl)
        } else if has("<|start_header_id|>") && has("<|eot_id|>") {
            Some(ChatFormat::Llama3)
        } else if has("<start_of_turn>") && has("<end_of_turn>") {
            Some(ChatFormat::Gemma)
        } else if has("[INST]") && has("[/INST]") {
            Some(ChatFormat::Inst)
        } else {
            None
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

    /// Token ids of a rendered chat template: BOS first when the checkpoint
    /// expects it and the template did not write it itself.
    pub fn encode_rendered(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let ids = self.encode(text)?;
        match (self.add_bos, self.bos_id) {
            (true, Some(b)) if ids.first() != Some(&b) => {
                Ok(std::iter::once(b).chain(ids).collect())
            }
            _ => Ok(ids),
        }
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
