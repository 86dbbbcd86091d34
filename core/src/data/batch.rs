//! Tokenization with loss masks, left-padded batches, and the deterministic
//! epoch order that lets a run resume on exactly the next micro-batch.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::prompt::{as_messages, eval_prompt, flat_input, training_parts, Template};
use super::{DataError, Example};

/// What batching needs from a tokenizer; the model's tokenizer implements it.
pub trait TextEncoder {
    /// Token ids of `text`, without BOS or EOS.
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>>;
    fn bos_id(&self) -> Option<u32>;
    fn eos_id(&self) -> Option<u32>;
    fn pad_id(&self) -> u32;
    /// The chat template `template` names for this tokenizer's model.
    fn chat(
        &self,
        template: Template,
    ) -> anyhow::Result<std::sync::Arc<super::chat::ChatTemplate>> {
        anyhow::bail!(
            "data.template = \"{}\" needs the model's tokenizer",
            template.name()
        )
    }
}

impl TextEncoder for crate::model::Tokenizer {
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        Ok(crate::model::Tokenizer::encode(self, text)?)
    }
    fn bos_id(&self) -> Option<u32> {
        if self.add_bos {
            self.bos_id
        } else {
            None
        }
    }
    fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    fn pad_id(&self) -> u32 {
        self.pad_id
    }
    fn chat(
        &self,
        template: Template,
    ) -> anyhow::Result<std::sync::Arc<super::chat::ChatTemplate>> {
        Ok(match template {
            Template::Model if self.chat_template.is_none() => anyhow::bail!(
                "data.template = \"model\": the model has no chat template (name one of chatml, llama3, gemma, mistral)"
            ),
            Template::Model => self.chat_template_named(None)?,
            named => self.chat_template_named(Some(named.name()))?,
        })
    }
}

/// One tokenized record. `loss_mask[i]` is 1 when token `i` is a target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Tokenizes one record for training: BOS, prompt, answer, then EOS when
/// there is room, cut to `cutoff_len` tokens. The loss covers every token but
/// BOS when `train_on_inputs`, otherwise only the answer and EOS.
pub fn encode_example<E: TextEncoder + ?Sized>(
    ex: &Example,
    template: Template,
    enc: &E,
    cutoff_len: usize,
    train_on_inputs: bool,
) -> anyhow::Result<Encoded> {
    if cutoff_len == 0 {
        anyhow::bail!("cutoff_len must be at least 1 token");
    }
    if template.is_chat() {
        let chat = enc.chat(template)?;
        let messages = as_messages(ex, true);
        return encode_segments(&chat.segments(&messages)?, enc, cutoff_len, train_on_inputs);
    }
    let input = flat_input(ex);
    let parts = training_parts(template, &ex.instruction, input.as_deref(), &ex.target);
    // Prompt and answer are tokenized apart so the mask boundary falls exactly
    // between them, whatever merges the tokenizer would make across it.
    let prompt = enc.encode(&parts.prompt)?;
    let answer = enc.encode(&parts.answer)?;
    let prompt_mask = u8::from(train_on_inputs);

    let mut ids = Vec::with_capacity(prompt.len() + answer.len() + 2);
    let mut loss_mask = Vec::with_capacity(ids.capacity());
    if let Some(bos) = enc.bos_id() {
        // Nothing predicts the first token, so BOS is never a target.
        ids.push(bos);
        loss_mask.push(0);
    }
    loss_mask.extend(std::iter::repeat_n(prompt_mask, prompt.len()));
    ids.extend(prompt);
    loss_mask.extend(std::iter::repeat_n(1, answer.len()));
    ids.extend(answer);
    ids.truncate(cutoff_len);
    loss_mask.truncate(cutoff_len);
    // A cut-off record did not end, so it must not learn to stop there.
    if ids.len() < cutoff_len {
        if let Some(eos) = enc.eos_id() {
            ids.push(eos);
            loss_mask.push(1);
        }
    }
    Ok(Encoded { ids, loss_mask })
}

/// Tokenizes a rendered conversation for training, piece by piece so each
/// mask boundary falls exactly where a piece ends: the trained pieces (the
/// assistant turns with their closing markup) are targets, the rest only when
/// `train_on_inputs`. BOS is added when the checkpoint expects it and the
/// template did not write it; no EOS is added (each turn's closing markup is
/// its stop). Cut to `cutoff_len` tokens.
pub fn encode_segments<E: TextEncoder + ?Sized>(
    segments: &[super::chat::Segment],
    enc: &E,
    cutoff_len: usize,
    train_on_inputs: bool,
) -> anyhow::Result<Encoded> {
    if cutoff_len == 0 {
        anyhow::bail!("cutoff_len must be at least 1 token");
    }
    let mut ids = Vec::new();
    let mut loss_mask = Vec::new();
    for seg in segments {
        let piece = enc.encode(&seg.text)?;
        loss_mask.extend(std::iter::repeat_n(
            u8::from(seg.trained || train_on_inputs),
            piece.len(),
        ));
        ids.extend(piece);
    }
    if let Some(bos) = enc.bos_id().filter(|b| ids.first() != Some(b)) {
        ids.insert(0, bos);
        loss_mask.insert(0, 0);
    }
    // Nothing predicts the first token.
    if let Some(first) = loss_mask.first_mut() {
        *first = 0;
    }
    ids.truncate(cutoff_len);
    loss_mask.truncate(cutoff_len);
    Ok(Encoded { ids, loss_mask })
}

/// Raw documents as training blocks: each document's tokens followed by
/// EOS, all of them end to end, cut into rows of `cutoff_len` tokens (the
/// last one shorter), every token a target. BOS, when the checkpoint
/// expects one, opens each block.
pub fn pack_documents<E: TextEncoder + ?Sized>(
    docs: &[Example],
    enc: &E,
    cutoff_len: usize,
) -> anyhow::Result<Vec<Encoded>> {
    let bos = enc.bos_id();
    let body = cutoff_len
        .checked_sub(usize::from(bos.is_some()))
        .filter(|&b| b >= 2)
        .ok_or_else(|| anyhow::anyhow!("cutoff_len must be at least 3 tokens to pack text"))?;
    let mut stream = Vec::new();
    for doc in docs {
        stream.extend(enc.encode(&doc.target)?);
        stream.extend(enc.eos_id());
    }
    let blocks = stream
        .chunks(body)
        .filter(|c| c.len() >= 2)
        .map(|c| {
            let ids: Vec<u32> = bos.into_iter().chain(c.iter().copied()).collect();
            let mut loss_mask = vec![1; ids.len()];
            loss_mask[0] = 0;
            Encoded { ids, loss_mask }
        })
        .collect();
    Ok(blocks)
}

/// Tokenizes the evaluation prompt of a record: BOS then the prompt, no
/// targets.
pub fn encode_eval_prompt<E: TextEncoder + ?Sized>(
    ex: &Example,
    template: Template,
    enc: &E,
) -> anyhow::Result<Encoded> {
    let text = match template.is_chat() {
        true => enc.chat(template)?.render(&as_messages(ex, false), true)?,
        false => eval_prompt(template, &ex.instruction, flat_input(ex).as_deref()),
    };
    let mut ids = enc.encode(&text)?;
    if let Some(bos) = enc.bos_id().filter(|b| ids.first() != Some(b)) {
        ids.insert(0, bos);
    }
    let loss_mask = vec![0; ids.len()];
    Ok(Encoded { ids, loss_mask })
}

/// Row-major `[batch, seq]` arrays ready to become tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    pub attn_mask: Vec<u8>,
    pub batch: usize,
    pub seq: usize,
}

impl Batch {
    /// Pads every row on the left to the longest, so the last position of each
    /// row is its latest token, which is where generation continues. A row
    /// whose loss mask is not as long as its ids is refused.
    pub fn left_padded(rows: &[Encoded], pad_id: u32) -> anyhow::Result<Batch> {
        let seq = rows.iter().map(Encoded::len).max().unwrap_or(0);
        let batch = rows.len();
        let mut ids = Vec::with_capacity(batch * seq);
        let mut loss_mask = Vec::with_capacity(batch * seq);
        let mut attn_mask = Vec::with_capacity(batch * seq);
        for (r, row) in rows.iter().enumerate() {
            anyhow::ensure!(
                row.loss_mask.len() == row.ids.len(),
                "row {r} of a batch: a loss mask of {} entries for {} token ids",
                row.loss_mask.len(),
                row.ids.len()
            );
            let pad = seq - row.len();
            ids.extend(std::iter::repeat_n(pad_id, pad));
            loss_mask.extend(std::iter::repeat_n(0, pad));
            attn_mask.extend(std::iter::repeat_n(0, pad));
            ids.extend_from_slice(&row.ids);
            loss_mask.extend_from_slice(&row.loss_mask);
            attn_mask.extend(std::iter::repeat_n(1, row.len()));
        }
        Ok(Batch {
            ids,
            loss_mask,
            attn_mask,
            batch,
            seq,
        })
    }

    /// Tokens the loss is taken over.
    pub fn target_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Where a `Batcher` is: `index` examples of epoch `epoch` are already served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub index: usize,
}

/// Serves micro-batches of example indices forever, reshuffling each epoch.
/// The order of epoch `e` depends only on `(seed, e)`, so a run saved at a
/// `Position` resumes on exactly the micro-batch it would have drawn next.
/// The last micro-batch of an epoch may be short; batches never span epochs.
#[derive(Debug, Clone)]
pub struct Batcher {
    n_examples: usize,
    micro_batch: usize,
    seed: u64,
    position: Position,
    order: Vec<usize>,
}

impl Batcher {
    pub fn new(n_examples: usize, micro_batch: usize, seed: u64) -> Result<Batcher, DataError> {
        Batcher::resume(n_examples, micro_batch, seed, Position::default())
    }

    pub fn resume(
        n_examples: usize,
        micro_batch: usize,
        seed: u64,
        position: Position,
    ) -> Result<Batcher, DataError> {
        if n_examples == 0 {
            return Err(DataError::Setting(
                "cannot batch an empty dataset".to_string(),
            ));
        }
        if micro_batch == 0 {
            return Err(DataError::Setting(
                "micro_batch must be at least 1".to_string(),
            ));
        }
        if position.index > n_examples {
            return Err(DataError::Setting(format!(
                "resume position {} is past the {n_examples} examples of an epoch",
                position.index
            )));
        }
        Ok(Batcher {
            n_examples,
            micro_batch,
            seed,
            position,
            order: epoch_order(n_examples, seed, position.epoch),
        })
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// The next micro-batch of indices; a new epoch starts when one ends.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.position.index >= self.n_examples {
            self.position = Position {
                epoch: self.position.epoch + 1,
                index: 0,
            };
            self.order = epoch_order(self.n_examples, self.seed, self.position.epoch);
        }
        let start = self.position.index;
        let end = (start + self.micro_batch).min(self.n_examples);
        self.position.index = end;
        self.order[start..end].to_vec()
    }
}

impl Iterator for Batcher {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        Some(self.next_batch())
    }
}

/// A permutation of `0..n` for one epoch. The Fisher–Yates draw is written
/// out on the raw ChaCha stream rather than taken from `rand`'s helpers so
/// the order cannot change under a dependency upgrade.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let bound = i as u128 + 1;
        let j = ((rng.next_u64() as u128 * bound) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Task;

    /// One token per byte, with BOS/EOS/PAD above the byte range.
    struct Bytes;

    impl TextEncoder for Bytes {
        fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn bos_id(&self) -> Option<u32> {
            Some(256)
        }
        fn eos_id(&self) -> Option<u32> {
            Some(257)
        }
        fn pad_id(&self) -> u32 {
            258
        }
    }

    fn example(instruction: &str, target: &str) -> Example {
        Example {
            id: "t-0".into(),
            task: Task::Nq,
            instruction: instruction.into(),
            input: None,
            target: target.into(),
            gold: vec![target.into()],
            messages: Vec::new(),
            line: 0,
        }
    }

    #[test]
    fn loss_mask_covers_exactly_answer_and_eos() -> anyhow::Result<()> {
        let ex = example("who", "Marsk");
        let enc = encode_example(&ex, Template::Plain, &Bytes, 256, false)?;
        // BOS + "Q: who\nA:" (9) + " Marsk" (6) + EOS
        assert_eq!(enc.len(), 1 + 9 + 6 + 1);
        assert_eq!(enc.ids[0], 256);
        assert_eq!(enc.ids.last(), Some(&257));
        let targets: Vec<u32> = enc
            .ids
            .iter()
            .zip(&enc.loss_mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&t, _)| t)
            .collect();
        let mut expected: Vec<u32> = " Marsk".bytes().map(u32::from).collect();
        expected.push(257);
        assert_eq!(targets, expected);

        let alpaca = encode_example(&ex, Template::Alpaca, &Bytes, 256, false)?;
        let n_targets = alpaca.loss_mask.iter().filter(|&&m| m == 1).count();
        assert_eq!(n_targets, "Marsk".len() + 1);
        assert_eq!(&alpaca.loss_mask[alpaca.len() - 6..], &[1, 1, 1, 1, 1, 1]);
        assert_eq!(alpaca.loss_mask[alpaca.len() - 7], 0);
        Ok(())
    }

    #[test]
    fn train_on_inputs_masks_everything_but_bos() -> anyhow::Result<()> {
        let enc = encode_example(&example("who", "Marsk"), Template::Plain, &Bytes, 256, true)?;
        assert_eq!(enc.loss_mask[0], 0);
        assert!(enc.loss_mask[1..].iter().all(|&m| m == 1));
        Ok(())
    }

    #[test]
    fn cutoff_truncates_and_drops_eos() -> anyhow::Result<()> {
        let ex = example("who", "Marsk");
        let cut = encode_example(&ex, Template::Plain, &Bytes, 12, false)?;
        assert_eq!(cut.len(), 12);
        assert_ne!(cut.ids.last(), Some(&257));
        // exactly full without EOS: 16 tokens fit, EOS would make 17
        let full = encode_example(&ex, Template::Plain, &Bytes, 16, false)?;
        assert_eq!(full.len(), 16);
        assert_ne!(full.ids.last(), Some(&257));
        let room = encode_example(&ex, Template::Plain, &Bytes, 17, false)?;
        assert_eq!(room.ids.last(), Some(&257));
        assert!(encode_example(&ex, Template::Plain, &Bytes, 0, false).is_err());
        Ok(())
    }

    #[test]
    fn eval_prompt_has_no_targets() -> anyhow::Result<()> {
        let enc = encode_eval_prompt(&example("who", "Marsk"), Template::Plain, &Bytes)?;
        assert_eq!(enc.ids.len(), 1 + 9);
        assert!(enc.loss_mask.iter().all(|&m| m == 0));
        Ok(())
    }

    #[test]
    fn batches_are_left_padded() -> anyhow::Result<()> {
        let rows = [
            Encoded {
                ids: vec![1, 2, 3],
                loss_mask: vec![0, 1, 1],
            },
            Encoded {
                ids: vec![4],
                loss_mask: vec![1],
            },
        ];
        let b = Batch::left_padded(&rows, 9)?;
        assert_eq!((b.batch, b.seq), (2, 3));
        assert_eq!(b.ids, vec![1, 2, 3, 9, 9, 4]);
        assert_eq!(b.loss_mask, vec![0, 1, 1, 0, 0, 1]);
        assert_eq!(b.attn_mask, vec![1, 1, 1, 0, 0, 1]);
        assert_eq!(b.target_tokens(), 3);
        let empty = Batch::left_padded(&[], 0)?;
        assert_eq!((empty.batch, empty.seq), (0, 0));
        let short = Encoded {
            ids: vec![1, 2],
            loss_mask: vec![1],
        };
        let err = Batch::left_padded(&[short], 0).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("row 0 of a batch: a loss mask of 1 entries for 2 token ids")
        );
        Ok(())
    }

    #[test]
    fn shuffle_depends_only_on_seed_and_epoch() -> Result<(), DataError> {
        let a = epoch_order(50, 7, 3);
        assert_eq!(a, epoch_order(50, 7, 3));
        assert_ne!(a, epoch_order(50, 7, 4));
        assert_ne!(a, epoch_order(50, 8, 3));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());

        let mut batcher = Batcher::new(10, 4, 7)?;
        let first_epoch: Vec<Vec<usize>> = (0..3).map(|_| batcher.next_batch()).collect();
        assert_eq!(
            first_epoch.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(first_epoch.concat(), epoch_order(10, 7, 0));
        assert_eq!(
            batcher.position(),
            Position {
                epoch: 0,
                index: 10
            }
        );
        let next = batcher.next_batch();
        assert_eq!(next, epoch_order(10, 7, 1)[..4].to_vec());
        assert_eq!(batcher.position(), Position { epoch: 1, index: 4 });
        Ok(())
    }

    #[test]
    fn resume_continues_the_same_sequence() -> Result<(), DataError> {
        let mut straight = Batcher::new(13, 3, 99)?;
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(straight.next_batch());
        }
        let saved = straight.position();
        let expected: Vec<Vec<usize>> = (0..6).map(|_| straight.next_batch()).collect();
        let resumed: Vec<Vec<usize>> = Batcher::resume(13, 3, 99, saved)?.take(6).collect();
        assert_eq!(resumed, expected);
        assert!(Batcher::new(0, 3, 1).is_err());
        assert!(Batcher::new(3, 0, 1).is_err());
        Ok(())
    }
}
