//! The evaluation room: the metrics (standard and the paper's), pulling the
//! answer out of a decoded text, and scoring a predictions file against its
//! gold file. Training never depends on it.

pub mod metrics;
pub mod score;

pub use metrics::{extract_answer, Metric};
pub use score::{score, ScoreReport};

use crate::data::batch::encode_eval_prompt;
use crate::data::prompt::Template;
use crate::data::{Example, Task};
use crate::model::generate::{generate, GenerateOptions};
use crate::model::{Hooks, Model, Tokenizer};

/// Decode `examples` with `model` (and whatever `hooks` attach), extract each
/// answer and score it with the task's metrics. Returns the report and the
/// extracted answers in order.
pub fn decode_and_score(
    model: &Model,
    tokenizer: &Tokenizer,
    hooks: &mut dyn Hooks,
    task: Task,
    template: Template,
    examples: &[Example],
    opts: &GenerateOptions,
) -> anyhow::Result<(score::ScoreReport, Vec<String>)> {
    let mut preds = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(16) {
        let prompts = chunk
            .iter()
            .map(|e| encode_eval_prompt(e, template, tokenizer).map(|x| x.ids))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let out = generate(
            model,
            &prompts,
            opts,
            &tokenizer.stop_ids,
            tokenizer.pad_id,
            hooks,
        )?;
        for ids in out {
            let text = tokenizer.decode(&ids)?;
            preds.push(metrics::extract_answer(template, &text));
        }
    }
    let by_id: std::collections::HashMap<&str, &str> = examples
        .iter()
        .zip(&preds)
        .map(|(e, p)| (e.id.as_str(), p.as_str()))
        .collect();
    let report = score::score_examples(task, examples, |e| {
        by_id.get(e.id.as_str()).copied().unwrap_or("")
    });
    Ok((report, preds))
}
