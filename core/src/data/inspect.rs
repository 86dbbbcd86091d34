//! What `meft data check --model` adds to a file's summary: each record's
//! length in the model's tokens as the run would encode it, against
//! `train.cutoff_len`, and the first record as the model sees it with the
//! spans the loss is taken on marked.

use std::fmt;

use super::batch::Encoded;
use super::batch::TextEncoder;
use super::spec::encode_all;
use super::Example;
use crate::config::Experiment;
use crate::model::Tokenizer;

/// Opens and closes a trained span in [`TokenReport`]'s rendering.
pub const TRAINED_OPEN: &str = "⟦";
pub const TRAINED_CLOSE: &str = "⟧";

#[derive(Debug, Clone, PartialEq)]
pub struct TokenReport {
    pub model: String,
    pub template: String,
    pub cutoff_len: usize,
    pub train_on_inputs: bool,
    /// Rows the run trains on (records, or packed blocks for raw text).
    pub rows: usize,
    /// Token lengths before the cut: min, median, 90th and 99th percentile,
    /// max (nearest rank).
    pub lengths: [usize; 5],
    /// Rows longer than `cutoff_len`, which the cut shortens.
    pub cut: usize,
    /// Tokens the loss is taken on, over all rows after the cut.
    pub trained_tokens: usize,
    /// The first row after the cut as text, trained spans marked.
    pub first: String,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A row's text with its trained spans between the markers.
pub fn marked(row: &Encoded, tokenizer: &Tokenizer) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut start = 0;
    while start < row.ids.len() {
        let trained = row.loss_mask[start] == 1;
        let end = (start..row.ids.len())
            .find(|&i| (row.loss_mask[i] == 1) != trained)
            .unwrap_or(row.ids.len());
        let text = tokenizer.decode(&row.ids[start..end])?;
        if trained {
            out.push_str(TRAINED_OPEN);
            out.push_str(&text);
            out.push_str(TRAINED_CLOSE);
        } else {
            out.push_str(&text);
        }
        start = end;
    }
    Ok(out)
}

/// Records encoded at a time: enough to keep the tokenizer busy, few
/// enough that a file of any size is measured in flat memory.
const CHUNK: usize = 1024;

/// The token report of `file` as `exp` would train on it, read a chunk of
/// records at a time (raw text: documents packed end to end, as training
/// packs them).
pub fn token_report(
    exp: &Experiment,
    file: &std::path::Path,
    tokenizer: &Tokenizer,
) -> anyhow::Result<TokenReport> {
    let cutoff = exp.train.cutoff_len;
    let text = exp.data.task == crate::config::Task::Text;
    // Other records are measured whole, to see what the cut takes.
    let mut uncut = exp.clone();
    uncut.train.cutoff_len = usize::MAX / 2;
    let mut lengths: Vec<usize> = Vec::new();
    let (mut trained_tokens, mut first) = (0usize, None::<Encoded>);
    // Raw text: the packed stream's length, and its first block.
    let (mut stream_tokens, mut head) = (0usize, Vec::<Example>::new());
    let mut chunk: Vec<Example> = Vec::with_capacity(CHUNK);
    let mut flush = |chunk: &mut Vec<Example>| -> anyhow::Result<()> {
        if text {
            for doc in chunk.iter() {
                let n =
                    tokenizer.encode(&doc.target)?.len() + usize::from(tokenizer.eos_id.is_some());
                stream_tokens += n;
                if head.iter().map(|d| d.target.len()).sum::<usize>() < cutoff * 8 {
                    head.push(doc.clone());
                }
            }
        } else {
            let rows = encode_all(exp, chunk, tokenizer, Some(file))?;
            let whole = encode_all(&uncut, chunk, tokenizer, Some(file))?;
            trained_tokens += rows
                .iter()
                .map(|r| r.loss_mask.iter().filter(|&&m| m == 1).count())
                .sum::<usize>();
            lengths.extend(whole.iter().map(Encoded::len));
            if first.is_none() {
                first = rows.into_iter().next();
            }
        }
        chunk.clear();
        Ok(())
    };
    crate::data::for_each_example(exp.data.task, file, &exp.data.columns, &mut |e| {
        chunk.push(e);
        match chunk.len() {
            CHUNK => flush(&mut chunk).map_err(|e| super::DataError::Setting(format!("{e:#}"))),
            _ => Ok(()),
        }
    })?;
    flush(&mut chunk)?;
    if text {
        // As `pack_documents` cuts the stream: blocks of `body` tokens after
        // BOS, a last piece of one token dropped.
        let bos = usize::from(tokenizer.bos_id().is_some());
        let body = cutoff.saturating_sub(bos).max(1);
        lengths = (0..stream_tokens.div_ceil(body))
            .map(|b| (stream_tokens - b * body).min(body))
            .filter(|&n| n >= 2)
            .map(|n| n + bos)
            .collect();
        trained_tokens = lengths.iter().map(|l| l.saturating_sub(1)).sum();
        first = crate::data::batch::pack_documents(&head, tokenizer, cutoff)?
            .into_iter()
            .next();
    }
    lengths.sort_unstable();
    let first = match &first {
        Some(r) => marked(r, tokenizer)?,
        None => String::new(),
    };
    Ok(TokenReport {
        model: exp.model.reference.clone(),
        template: exp.data.template.to_string(),
        cutoff_len: cutoff,
        train_on_inputs: exp.train_on_inputs(),
        rows: lengths.len(),
        lengths: [0.0, 50.0, 90.0, 99.0, 100.0].map(|p| percentile(&lengths, p)),
        cut: if text {
            0
        } else {
            lengths.iter().filter(|&&l| l > cutoff).count()
        },
        trained_tokens,
        first,
    })
}

impl fmt::Display for TokenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [min, p50, p90, p99, max] = self.lengths;
        writeln!(
            f,
            "model    {} (template {}, train_on_inputs {})",
            self.model, self.template, self.train_on_inputs
        )?;
        writeln!(f, "rows     {}", self.rows)?;
        writeln!(
            f,
            "tokens   min {min}  p50 {p50}  p90 {p90}  p99 {p99}  max {max}"
        )?;
        writeln!(
            f,
            "cut      {} of {} rows ({:.1} %) exceed cutoff_len {}",
            self.cut,
            self.rows,
            100.0 * self.cut as f64 / self.rows.max(1) as f64,
            self.cutoff_len
        )?;
        writeln!(f, "trained  {} tokens", self.trained_tokens)?;
        writeln!(
            f,
            "first row, trained spans in {TRAINED_OPEN}…{TRAINED_CLOSE}:"
        )?;
        write!(f, "{}", self.first)
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<usize> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&v, 50.0), 5);
        assert_eq!(percentile(&v, 90.0), 9);
        assert_eq!(percentile(&v, 99.0), 10);
        assert_eq!(percentile(&v, 100.0), 10);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
