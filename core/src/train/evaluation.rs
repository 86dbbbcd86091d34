//! Evaluation of a model with its method attached: decode the test split
//! (up to `eval.limit`) with the configured decoding and score it, keeping
//! the metrics `eval.metrics` names (all of the task's when empty) and a
//! few samples to show. The trainer runs it at the end of a run; `meft eval`
//! runs it on a checkpoint without building a trainer.

use super::method::Method;
use crate::config::Experiment;
use crate::data::Example;
use crate::event::EvalEvent;
use crate::model::generate::GenerateOptions;
use crate::model::{Model, Tokenizer};
use anyhow::Result;
use std::collections::BTreeMap;

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
    let sample_scores = shown
        .iter()
        .map(|(e, p)| {
            report
                .scores
                .iter()
                .filter(|(m, _)| wanted.is_empty() || wanted.contains(m))
                .map(|(m, _)| (m.name().to_string(), m.score(p, &e.gold)))
                .collect()
        })
        .collect();
    Ok(Some(EvalEvent {
        step,
        n: examples.len() as u64,
        metrics,
        samples,
        sample_scores,
    }))
}
