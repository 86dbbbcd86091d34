//! Greedy and beam-search decoding with a KV cache and the repetition
//! penalty of Keskar et al. (as in Hugging Face `generate`).

use super::{Hooks, Input, KvCache, Model};
use candle_core::{DType, Result};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 1 is greedy decoding.
    pub beams: usize,
    /// 1.0 is no penalty.
    pub repetition_penalty: f32,
    /// Wrap the prompt as one user turn in the model's chat markup.
    pub chat: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            beams: 1,
            repetition_penalty: 1.0,
            chat: false,
        }
    }
}

/// Divide positive logits / multiply negative ones of every token already in
/// `seen` by `penalty`.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = std::collections::HashSet::with_capacity(seen.len());
    for &t in seen {
        if done.insert(t) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
            }
        }
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn log_softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = v.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
    for x in v.iter_mut() {
        *x -= lse;
    }
}

/// Logits of the last position of each row, as host vectors.
fn step(
    model: &Model,
    ids: &[u32],
    mask: &[u8],
    batch: usize,
    cache: &mut KvCache,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<f32>>> {
    let input = Input {
        ids,
        pad_mask: mask,
        batch,
        seq: ids.len() / batch,
    };
    let logits = model.forward(&input, Some(cache), hooks, true)?;
    logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()
}

/// Continue each prompt (token ids, BOS included if wanted) and return only
/// the new tokens, without the stop token.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    stop_ids: &[u32],
    pad_id: u32,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<u32>>> {
    if opts.beams <= 1 {
        greedy(
            model,
            prompts,
            opts,
            stop_ids,
            pad_id,
            hooks,
            &mut |_, _| true,
        )
    } else {
        prompts
            .iter()
            .map(|p| beam_search(model, p, opts, stop_ids, hooks))
            .collect()
    }
}

/// Continue one prompt greedily, handing each new token to `on_token` as
/// soon as it is chosen (the stop token is not handed on), until it
/// returns false; returns the new tokens.
pub fn greedy_streamed(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    stop_ids: &[u32],
    hooks: &mut dyn Hooks,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    let prompts = [prompt.to_vec()];
    let mut out = greedy(model, &prompts, opts, stop_ids, 0, hooks, &mut |_, t| {
        on_token(t)
    })?;
    Ok(out.pop().unwrap_or_default())
}

/// Greedy decoding of a batch; `on_token(row, token)` hears each row's
/// tokens as they are chosen, and ends the row by returning false.
fn greedy(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    stop_ids: &[u32],
    pad_id: u32,
    hooks: &mut dyn Hooks,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    let s = prompts.iter().map(|p| p.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(b * s);
    let mut mask = Vec::with_capacity(b * s);
    for p in prompts {
        let pad = s - p.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1u8, p.len())));
    }
    let mut cache = KvCache::default();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut logits = step(model, &ids, &mask, b, &mut cache, hooks)?;
    for _ in 0..opts.max_new_tokens {
        let mut next = Vec::with_capacity(b);
        for r in 0..b {
            if done[r] {
                next.push(pad_id);
                continue;
            }
            let mut l = std::mem::take(&mut logits[r]);
            let seen: Vec<u32> = prompts[r].iter().chain(out[r].iter()).copied().collect();
            apply_repetition_penalty(&mut l, &seen, opts.repetition_penalty);
            let t = argmax(&l);
            if stop_ids.contains(&t) {
                done[r] = true;
            } else {
                out[r].push(t);
                done[r] = !on_token(r, t);
            }
            next.push(t);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let m: Vec<u8> = done.iter().map(|&d| u8::from(!d)).collect();
        logits = step(model, &next, &m, b, &mut cache, hooks)?;
    }
    Ok(out)
}

fn beam_search(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    stop_ids: &[u32],
    hooks: &mut dyn Hooks,
) -> Result<Vec<u32>> {
    let k = opts.beams;
    let mut cache = KvCache::default();
    let mask = vec![1u8; prompt.len()];
    let first = step(model, prompt, &mask, 1, &mut cache, hooks)?;
    // (tokens, sum of log-probs)
    let mut alive: Vec<(Vec<u32>, f32)> = vec![(Vec::new(), 0.0)];
    let mut logits = first;
    let mut finished: Vec<(Vec<u32>, f32)> = Vec::new();
    let norm = |toks: &[u32], score: f32| score / (toks.len().max(1) as f32);
    for _ in 0..opts.max_new_tokens {
        let mut cands: Vec<(usize, u32, f32)> = Vec::new();
        for (bi, (toks, score)) in alive.iter().enumerate() {
            let mut l = std::mem::take(&mut logits[bi]);
            let seen: Vec<u32> = prompt.iter().chain(toks.iter()).copied().collect();
            apply_repetition_penalty(&mut l, &seen, opts.repetition_penalty);
            log_softmax(&mut l);
            let mut idx: Vec<u32> = (0..l.len() as u32).collect();
            let top = (2 * k).min(idx.len());
            idx.select_nth_unstable_by(top.saturating_sub(1), |a, b| {
                l[*b as usize].total_cmp(&l[*a as usize])
            });
            for &t in &idx[..top] {
                cands.push((bi, t, score + l[t as usize]));
            }
        }
        cands.sort_by(|a, b| b.2.total_cmp(&a.2));
        let mut next: Vec<(Vec<u32>, f32)> = Vec::with_capacity(k);
        let mut rows = Vec::with_capacity(k);
        let mut feed = Vec::with_capacity(k);
        for (bi, t, sc) in cands {
            if stop_ids.contains(&t) {
                let toks = alive[bi].0.clone();
                let n = norm(&toks, sc);
                finished.push((toks, n));
            } else if next.len() < k {
                let mut toks = alive[bi].0.clone();
                toks.push(t);
                next.push((toks, sc));
                rows.push(bi);
                feed.push(t);
            }
            if next.len() == k {
                break;
            }
        }
        if finished.len() >= k || next.is_empty() {
            break;
        }
        // Stop once no live beam can beat the worst kept finished hypothesis.
        if finished.len() >= k {
            break;
        }
        cache.select_rows(&rows)?;
        alive = next;
        let m = vec![1u8; feed.len()];
        logits = step(model, &feed, &m, feed.len(), &mut cache, hooks)?;
    }
    for (toks, sc) in alive {
        let n = norm(&toks, sc);
        finished.push((toks, n));
    }
    finished.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(finished.into_iter().next().map(|f| f.0).unwrap_or_default())
}

fn check_options(opts: &GenerateOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.beams >= 1, "--beams: must be at least 1");
    anyhow::ensure!(
        opts.repetition_penalty > 0.0,
        "--repetition-penalty: must be positive"
    );
    Ok(())
}

/// Continue `prompt` (as one user turn in the model's chat markup with
/// `opts.chat`) with `model` and `hooks` (a trained adapter, or none), and
/// return the new text.
pub fn complete_with(
    model: &super::Model,
    tok: &super::Tokenizer,
    hooks: &mut dyn super::Hooks,
    prompt: &str,
    opts: &GenerateOptions,
) -> anyhow::Result<String> {
    check_options(opts)?;
    let ids = prompt_ids(tok, prompt, opts.chat)?;
    let out = generate(model, &[ids], opts, &tok.stop_ids, tok.pad_id, hooks)?;
    Ok(tok.decode(out.first().map(Vec::as_slice).unwrap_or(&[]))?)
}

/// The tokens of `prompt` as `meft generate` feeds them: with BOS when the
/// model wants it, and with `chat` as one user turn in its chat markup.
pub fn prompt_ids(tok: &super::Tokenizer, prompt: &str, chat: bool) -> anyhow::Result<Vec<u32>> {
    match chat {
        false => tok.encode_prompt(prompt),
        true => {
            let Some(chat) = tok.chat()? else {
                anyhow::bail!(
                    "--chat: the model has no chat template and its vocabulary no chat markup (no <|im_start|>, <|eot_id|>, <start_of_turn> or [INST] tokens)"
                );
            };
            let user = [crate::data::chat::Message::new(crate::data::chat::Role::User, prompt)];
            tok.encode_rendered(&chat.render(&user, true)?)
        }
    }
    .map_err(|e| anyhow::anyhow!("encoding the prompt: {e}"))
}

/// The next-token logits after `ids` (one row, no padding), as f32.
pub fn last_logits(model: &Model, hooks: &mut dyn Hooks, ids: &[u32]) -> Result<Vec<f32>> {
    let mask = vec![1u8; ids.len()];
    let input = Input {
        ids,
        pad_mask: &mask,
        batch: 1,
        seq: ids.len(),
    };
    model
        .forward(&input, None, hooks, true)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()
}
