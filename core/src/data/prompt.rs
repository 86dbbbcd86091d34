//! The prompt templates: the one place that turns an instruction (and answer)
//! into model text, for training and for evaluation.

pub use crate::config::Template;
use crate::data::chat::{Message, Role};
use crate::data::Example;

impl Template {
    /// Whether the template is a chat template (rendered by Jinja).
    pub fn is_chat(self) -> bool {
        !matches!(self, Self::Alpaca | Self::Plain)
    }
}

/// A training text split where the loss mask changes: `prompt` is what the
/// model is given, `answer` what it should produce. `prompt + answer` is the
/// whole training text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptParts {
    pub prompt: String,
    pub answer: String,
}

impl PromptParts {
    pub fn text(&self) -> String {
        format!("{}{}", self.prompt, self.answer)
    }
}

// The paper's template is a Python triple-quoted string written inside a
// function, so its lines carry that function's 16-space indentation and the
// first line ends with two spaces; both are part of what the model saw.
const ALPACA_HEADER: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n";
const ALPACA_HEADER_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.  \n\n";
const INDENT: &str = "                ";

fn alpaca_prompt(instruction: &str, input: Option<&str>) -> String {
    match input {
        None => format!(
            "{ALPACA_HEADER}{INDENT}### Instruction:\n{INDENT}{instruction}\n\n{INDENT}### Response:\n{INDENT}"
        ),
        Some(input) => format!(
            "{ALPACA_HEADER_WITH_INPUT}{INDENT}### Instruction:\n{INDENT}{instruction}\n\n{INDENT}### Input:\n{INDENT}{input}\n\n{INDENT}### Response:\n{INDENT}"
        ),
    }
}

fn plain_prompt(instruction: &str, input: Option<&str>) -> String {
    match input {
        None => format!("Q: {instruction}\nA:"),
        Some(input) => format!("{input}\nQ: {instruction}\nA:"),
    }
}

/// A user turn's text: the context, if any, then the instruction.
pub fn user_text(instruction: &str, input: Option<&str>) -> String {
    match input {
        Some(input) => format!("{input}\n\n{instruction}"),
        None => instruction.to_string(),
    }
}

/// The record as a conversation: its own turns when it has them, else one
/// user turn and the answer as the assistant's; without its last
/// (assistant) turn unless `with_answer`.
pub fn as_messages(ex: &Example, with_answer: bool) -> Vec<Message> {
    let mut out = if ex.messages.is_empty() {
        vec![
            Message::new(Role::User, user_text(&ex.instruction, ex.input.as_deref())),
            Message::new(Role::Assistant, ex.target.clone()),
        ]
    } else {
        ex.messages.clone()
    };
    if !with_answer {
        out.pop();
    }
    out
}

/// The context a fixed-wording template is given: the record's input, after
/// the earlier turns of its conversation (its system message, then each
/// question and answer) as a transcript.
pub fn flat_input(ex: &Example) -> Option<String> {
    let earlier = ex.messages.len().saturating_sub(2);
    let mut parts: Vec<String> = ex.messages[..earlier]
        .iter()
        .map(|m| match m.role {
            Role::System => m.content.clone(),
            Role::User => format!("User: {}", m.content),
            Role::Assistant => format!("Assistant: {}", m.content),
        })
        .collect();
    parts.extend(ex.input.clone());
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// The training text for one record, split into prompt and answer (the
/// fixed-wording templates; chat templates render through
/// [`crate::data::chat`]).
pub fn training_parts(
    template: Template,
    instruction: &str,
    input: Option<&str>,
    answer: &str,
) -> PromptParts {
    match template {
        Template::Alpaca => PromptParts {
            prompt: alpaca_prompt(instruction, input),
            answer: answer.to_string(),
        },
        // The space belongs to the answer so the evaluation prompt is exactly
        // the training prompt and a tokenizer sees " word" as it learned it.
        // (Chat templates are rendered by the encoder; they never get here.)
        _ => PromptParts {
            prompt: plain_prompt(instruction, input),
            answer: if answer.is_empty() {
                String::new()
            } else {
                format!(" {answer}")
            },
        },
    }
}

/// The text a model is given at evaluation time.
pub fn eval_prompt(template: Template, instruction: &str, input: Option<&str>) -> String {
    match template {
        // The paper's evaluation template has one more space after the
        // response cue than its training template.
        Template::Alpaca => format!("{} ", alpaca_prompt(instruction, input)),
        _ => plain_prompt(instruction, input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpaca_training_text_is_byte_exact() {
        let parts = training_parts(
            Template::Alpaca,
            "who completed the veltrano lighthouse",
            None,
            "Odile Marsk",
        );
        let expected = "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n                ### Instruction:\n                who completed the veltrano lighthouse\n\n                ### Response:\n                Odile Marsk";
        assert_eq!(parts.text(), expected);
        assert_eq!(parts.answer, "Odile Marsk");
        assert!(parts.prompt.ends_with("### Response:\n                "));
    }

    #[test]
    fn alpaca_eval_prompt_has_one_trailing_space() {
        let prompt = eval_prompt(Template::Alpaca, "q", None);
        let expected = "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n                ### Instruction:\n                q\n\n                ### Response:\n                 ";
        assert_eq!(prompt, expected);
    }

    #[test]
    fn plain_template() {
        let parts = training_parts(Template::Plain, "where was Tova Renn born", None, "Velmo");
        assert_eq!(parts.text(), "Q: where was Tova Renn born\nA: Velmo");
        assert_eq!(
            eval_prompt(Template::Plain, "where was Tova Renn born", None),
            parts.prompt
        );
    }

    #[test]
    fn template_names() {
        assert_eq!("plain".parse::<Template>().ok(), Some(Template::Plain));
        assert_eq!(
            "chatml2"
                .parse::<Template>()
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some(
                r#"unknown template "chatml2", expected one of: alpaca, plain, model, chatml, llama3, gemma, mistral"#
            )
        );
        assert_eq!(
            serde_json::to_string(&Template::Alpaca).ok().as_deref(),
            Some("\"alpaca\"")
        );
        for &template in Template::ALL {
            let json = serde_json::to_string(&template).ok();
            assert_eq!(json, Some(format!("\"{}\"", template.name())));
        }
    }
}
