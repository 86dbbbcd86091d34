//! Evaluation of a model with its method attached: decode the test split
//! (up to `eval.limit`) with the configured decoding and score it, keeping
//! the metrics `eval.metrics` names (all of the task's when empty) and a
//! few samples to show. The trainer runs it at the end of a run; `meft eval`
//! runs it on a checkpoint without building a trainer.

use super::method::Method;
use crate::config::{Experiment, Task};
use crate::data::batch::{Batch, Encoded};
use crate::data::Example;
use crate::event::{EvalEvent, EvalSplit};
use crate::model::generate::GenerateOptions;
use crate::model::{Input, Model, Tokenizer};
use anyhow::Result;
use candle_core::DType;
use std::collections::BTreeMap;

/// The mean next-token loss over the target tokens of `rows`, in batches of
/// `micro_batch`, the method in evaluation mode (no dropout, no routing
/// noise), nothing learned. None when no row has a target.
pub fn heldout_loss(
    model: &Model,
    method: &mut Method,
    rows: &[Encoded],
    micro_batch: usize,
    pad_id: u32,
) -> Result<Option<f64>> {
    method.set_train(false);
    let mut run = || -> Result<Option<f64>> {
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in rows.chunks(micro_batch.max(1)) {
            let batch = Batch::left_padded(chunk, pad_id)?;
            let input = Input::from(&batch);
            let logits = model.forward(&input, None, method, false)?;
            let (loss, n) = super::objective::masked_loss(&logits, &batch)?;
            sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * n as f64;
            count += n;
        }
        Ok((count > 0).then(|| sum / count as f64))
    };
    let out = run();
    // Nothing of this pass is a training step's.
    let _ = method.take_step_stats();
    method.set_train(true);
    out
}

/// None when there is no test split.
pub fn evaluate(
    exp: &Experiment,
    model: &Model,
    tokenizer: &Tokenizer,
    method: &mut Method,
    test: &[Example],
    step: u64,
) -> Result<Option<EvalEvent>> {
    if test.is_empty() {
        return Ok(None);
    }
    if exp.data.task == Task::Text {
        // Raw text has no answers to decode: its held-out loss is its score.
        let rows = crate::data::batch::pack_documents(test, tokenizer, exp.train.cutoff_len)?;
        let loss = heldout_loss(
            model,
            method,
            &rows,
            exp.train.micro_batch,
            tokenizer.pad_id,
        )?;
        return Ok(Some(EvalEvent {
            step,
            n: rows.len() as u64,
            split: EvalSplit::Test,
            loss,
            metrics: loss.map(|l| ("loss".to_string(), l)).into_iter().collect(),
            samples: Vec::new(),
            sample_scores: Vec::new(),
            row_scores: BTreeMap::new(),
        }));
    }
    let limit = match exp.eval.limit {
        0 => test.len(),
        l => l.min(test.len()),
    };
    let examples = &test[..limit];
    let opts = GenerateOptions {
        max_new_tokens: exp.eval.max_new_tokens,
        beams: if exp.eval.decoding == crate::config::Decoding::Beam {
            exp.eval.beams
        } else {
            1
        },
        repetition_penalty: exp.eval.repetition_penalty as f32,
        chat: false,
    };
    let (task, template) = (exp.data.task, exp.data.template);
    method.set_train(false);
    let scored =
        crate::eval::decode_and_score(model, tokenizer, method, task, template, examples, &opts);
    // Decoding's traffic and picks are not a training step's.
    let _ = method.take_step_stats();
    method.set_train(true);
    let (report, preds) = scored?;
    let wanted = &exp.eval.metrics;
    let metrics: BTreeMap<String, f64> = report
        .scores
        .iter()
        .filter(|(m, _)| wanted.is_empty() || wanted.contains(m))
        .map(|(m, v)| (m.name().to_string(), *v))
        .collect();
    let shown: Vec<(&Example, &String)> = examples.iter().zip(&preds).take(5).collect();
    let samples = shown
        .iter()
        .map(|(e, p)| {
            (
                e.instruction.clone(),
                (*p).clone(),
                e.gold.first().cloned().unwrap_or_default(),
            )
        })
        .collect();
    // Every row's score by metric; the samples' scores are their rows'.
    let row_scores: BTreeMap<String, Vec<f64>> = report
        .scores
        .keys()
        .filter(|m| wanted.is_empty() || wanted.contains(m))
        .map(|m| {
            let rows = examples.iter().zip(&preds);
            (
                m.name().to_string(),
                rows.map(|(e, p)| m.score(p, &e.gold)).collect(),
            )
        })
        .collect();
    let sample_scores = (0..shown.len())
        .map(|i| {
            row_scores
                .iter()
                .map(|(m, rows)| (m.clone(), rows[i]))
                .collect()
        })
        .collect();
    Ok(Some(EvalEvent {
        step,
        n: examples.len() as u64,
        split: Default::default(),
        loss: None,
        metrics,
        samples,
        sample_scores,
        row_scores,
    }))
}
