//! A conversation with a model and its adapter, as `meft chat` holds it: a
//! chat template renders the system prompt and every turn so far, a
//! fixed-wording template (plain, alpaca) asks each message alone, the way
//! the run was trained; the reply streams as it is decoded.

use super::generate::{greedy_streamed, GenerateOptions};
use super::{Hooks, Model, Tokenizer};
use crate::config::Template;
use crate::data::batch::TextEncoder;
use crate::data::chat::{ChatTemplate, Message, Role};
use anyhow::Result;
use std::sync::Arc;

pub struct Conversation<'a> {
    model: &'a Model,
    tok: &'a Tokenizer,
    hooks: &'a mut dyn Hooks,
    template: Template,
    /// None: a fixed-wording template, each message asked alone.
    chat: Option<Arc<ChatTemplate>>,
    system: Option<String>,
    turns: Vec<Message>,
    pub opts: GenerateOptions,
}

impl<'a> Conversation<'a> {
    pub fn new(
        model: &'a Model,
        tok: &'a Tokenizer,
        hooks: &'a mut dyn Hooks,
        template: Template,
        opts: GenerateOptions,
    ) -> Result<Self> {
        let chat = if template.is_chat() {
            Some(TextEncoder::chat(tok, template)?)
        } else {
            None
        };
        Ok(Self {
            model,
            tok,
            hooks,
            template,
            chat,
            system: None,
            turns: Vec::new(),
            opts,
        })
    }

    /// Whether earlier turns are part of each prompt (a chat template).
    pub fn keeps_turns(&self) -> bool {
        self.chat.is_some()
    }

    pub fn template(&self) -> Template {
        self.template
    }

    /// Turns so far (user and assistant messages).
    pub fn turns(&self) -> &[Message] {
        &self.turns
    }

    /// Forget every turn; the system prompt stays.
    pub fn reset(&mut self) {
        self.turns.clear();
    }

    /// The system prompt for the turns that follow (None: the template's
    /// own default, if it has one).
    pub fn set_system(&mut self, text: Option<String>) {
        self.system = text.filter(|t| !t.trim().is_empty());
    }

    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The prompt's tokens for `text` after the turns so far, the oldest
    /// turns dropped while the prompt and the reply would not fit the
    /// model's context.
    fn prompt(&mut self, text: &str) -> Result<Vec<u32>> {
        let Some(chat) = self.chat.clone() else {
            let prompt = crate::data::prompt::eval_prompt(self.template, text, None);
            return Ok(self.tok.encode_prompt(&prompt)?);
        };
        let room = self
            .model
            .config
            .max_position_embeddings
            .saturating_sub(self.opts.max_new_tokens);
        loop {
            let mut messages = Vec::with_capacity(self.turns.len() + 2);
            messages.extend(self.system.iter().map(|s| Message::new(Role::System, s)));
            messages.extend(self.turns.iter().cloned());
            messages.push(Message::new(Role::User, text));
            let ids = self.tok.encode_rendered(&chat.render(&messages, true)?)?;
            if ids.len() <= room {
                return Ok(ids);
            }
            anyhow::ensure!(
                !self.turns.is_empty(),
                "the message is {} tokens with its markup; the model's context leaves room for {room} before the reply",
                ids.len()
            );
            // The oldest exchange goes first.
            self.turns.drain(..self.turns.len().min(2));
        }
    }

    /// Answer `text`, handing the reply's text to `on_text` piece by piece
    /// as it is decoded; returns the whole reply, which joins the turns.
    /// Under the plain template the reply ends where the model goes on
    /// with a next question (as evaluation reads its answers).
    pub fn say(&mut self, text: &str, on_text: &mut dyn FnMut(&str)) -> Result<String> {
        let ids = self.prompt(text)?;
        let tok = self.tok;
        let stop = (self.chat.is_none() && self.template == Template::Plain).then_some("\nQ:");
        let mut stream = Stream {
            stop,
            shown: 0,
            ended: None,
        };
        let mut new: Vec<u32> = Vec::new();
        let mut failed = None;
        greedy_streamed(
            self.model,
            &ids,
            &self.opts,
            &tok.stop_ids,
            &mut *self.hooks,
            &mut |t| {
                new.push(t);
                match tok.decode(&new) {
                    Ok(s) => stream.feed(&s, false, on_text),
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            },
        )?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let decoded = tok.decode(&new)?;
        stream.feed(&decoded, true, on_text);
        let reply = decoded[..stream.ended.unwrap_or(decoded.len())].to_string();
        if self.chat.is_some() {
            self.turns.push(Message::new(Role::User, text));
            self.turns
                .push(Message::new(Role::Assistant, reply.clone()));
        }
        Ok(reply)
    }
}

/// The reply's text as it grows: what is shown, held back (a character
/// split across tokens, the start of what may be the stop text) and where
/// the stop text cut it.
struct Stream {
    stop: Option<&'static str>,
    shown: usize,
    ended: Option<usize>,
}

impl Stream {
    /// Show what of `s` (the whole reply decoded so far) can be shown;
    /// `last`: nothing more comes. Returns whether decoding goes on.
    fn feed(&mut self, s: &str, last: bool, on_text: &mut dyn FnMut(&str)) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let mut upto = s.len();
        if let Some(stop) = self.stop {
            if let Some(at) = s.find(stop) {
                upto = at;
                self.ended = Some(at);
            } else if !last {
                // Hold back a tail that may yet become the stop text.
                let held = (1..stop.len())
                    .rev()
                    .find(|&n| s.ends_with(&stop[..n]))
                    .unwrap_or(0);
                upto = s.len() - held;
            }
        }
        if !last && s[..upto].ends_with('\u{FFFD}') {
            // A character split across tokens waits for its rest.
            return true;
        }
        if upto > self.shown && s.is_char_boundary(self.shown) && s.is_char_boundary(upto) {
            on_text(&s[self.shown..upto]);
            self.shown = upto;
        }
        self.ended.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;

    fn shown(pieces: &[&str], stop: Option<&'static str>) -> (Vec<String>, Option<usize>) {
        let mut st = Stream {
            stop,
            shown: 0,
            ended: None,
        };
        let mut out = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            st.feed(p, i + 1 == pieces.len(), &mut |t| out.push(t.to_string()));
        }
        (out, st.ended)
    }

    #[test]
    fn the_reply_streams_holding_back_only_what_may_be_the_stop_text() {
        // Each piece is the whole reply decoded so far.
        let (out, ended) = shown(
            &[
                " Ne",
                " Nekav",
                " Nekavale\n",
                " Nekavale\nQ",
                " Nekavale\nQ:",
            ],
            Some("\nQ:"),
        );
        assert_eq!(out, [" Ne", "kav", "ale"]);
        assert_eq!(ended, Some(9));
        // A newline that turns out not to start a question is shown.
        let (out, _) = shown(&[" a\n", " a\nb"], Some("\nQ:"));
        assert_eq!(out, [" a", "\nb"]);
        // A split character is shown once whole.
        let (out, _) = shown(&["caf", "caf\u{FFFD}", "café"], None);
        assert_eq!(out, ["caf", "é"]);
    }
}
