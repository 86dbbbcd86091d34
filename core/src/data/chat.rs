//! Chat templates: a conversation rendered to text the way Hugging Face's
//! `apply_chat_template` renders it (Jinja through minijinja, with HF's
//! dialect: `trim_blocks`, `lstrip_blocks`, `raise_exception`,
//! `strftime_now`, `tojson`, Python's string methods), from the model's own
//! template or a named built-in, and cut into the spans the loss is taken
//! on: every assistant turn with its end-of-turn markup.

use serde::{Deserialize, Serialize};

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A piece of a rendered conversation: trained (an assistant turn) or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub trained: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template {origin}: {msg}")]
    Template { origin: String, msg: String },
}

/// The built-in templates by name, each the shape of its family's published
/// template for plain-text turns.
pub const BUILTIN: [(&str, &str); 4] = [
    (
        "chatml",
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    ),
    (
        "llama3",
        "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}",
    ),
    (
        "gemma",
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
    ),
    (
        "mistral",
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
    ),
];

/// The source of the built-in template `name`.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A compiled chat template and the special tokens it may print.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// Where the template came from, for messages.
    pub origin: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .finish()
    }
}

/// `strftime_now(format)`: the local time in C's strftime format, as HF's
/// templates (Llama 3's "Today Date") call it.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let fmt = std::ffi::CString::new(format).map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "strftime_now: a NUL in the format",
        )
    })?;
    let mut buf = vec![0u8; 256];
    // SAFETY: time/localtime_r write into the locals given; strftime writes
    // at most buf.len() bytes into buf and returns how many it wrote.
    let n = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm)
    };
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

impl ChatTemplate {
    /// Compile `source` (reported as `origin` in errors) with the model's
    /// BOS and EOS texts.
    pub fn new(
        source: &str,
        origin: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, ChatError> {
        let mut env = minijinja::Environment::new();
        // Hugging Face renders with these two on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatError::Template {
                origin: origin.to_string(),
                msg: one_line(&e),
            })?;
        Ok(Self {
            env,
            origin: origin.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// `messages` as text; `add_generation_prompt` opens the assistant's
    /// reply at the end.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self.env.get_template("chat").map_err(|e| self.err(&e))?;
        let msgs: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                minijinja::context! { role => m.role.name(), content => m.content.as_str() }
            })
            .collect();
        tmpl.render(minijinja::context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| self.err(&e))
    }

    fn err(&self, e: &minijinja::Error) -> ChatError {
        ChatError::Template {
            origin: self.origin.clone(),
            msg: one_line(e),
        }
    }

    /// The conversation as text cut where the loss mask changes: each
    /// assistant turn (its content and the markup that closes it) trained,
    /// everything else not. The pieces concatenate to `render(messages,
    /// false)`. Found by rendering the conversation up to each assistant
    /// turn with the generation prompt and through it without: a template
    /// whose renders do not extend each other is refused.
    pub fn segments(&self, messages: &[Message]) -> Result<Vec<Segment>, ChatError> {
        let whole = self.render(messages, false)?;
        let mut out = Vec::new();
        let mut cursor = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let open = self.render(&messages[..i], true)?;
            let close = self.render(&messages[..=i], false)?;
            let extends = open.len() >= cursor
                && close.starts_with(&open)
                && whole.starts_with(&close)
                && whole.is_char_boundary(open.len());
            if !extends {
                return Err(ChatError::Template {
                    origin: self.origin.clone(),
                    msg: format!(
                        "rendering the conversation through turn {} does not extend its render up to that turn, so the assistant's tokens cannot be told apart",
                        i + 1
                    ),
                });
            }
            if open.len() > cursor {
                out.push(Segment {
                    text: whole[cursor..open.len()].to_string(),
                    trained: false,
                });
            }
            out.push(Segment {
                text: whole[open.len()..close.len()].to_string(),
                trained: true,
            });
            cursor = close.len();
        }
        if cursor < whole.len() {
            out.push(Segment {
                text: whole[cursor..].to_string(),
                trained: false,
            });
        }
        Ok(out)
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<Message> {
        vec![
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Who built the lighthouse?"),
            Message::new(Role::Assistant, "Odile Marsk."),
            Message::new(Role::User, "When?"),
            Message::new(Role::Assistant, "In 1874."),
        ]
    }

    fn template(name: &str) -> ChatTemplate {
        match ChatTemplate::new(builtin(name).unwrap_or(""), name, "<bos>", "</s>") {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn segments_cover_the_render_and_train_only_the_assistant() -> Result<(), ChatError> {
        for (name, _) in BUILTIN {
            let t = template(name);
            let segs = t.segments(&conversation())?;
            let joined: String = segs.iter().map(|s| s.text.as_str()).collect();
            assert_eq!(joined, t.render(&conversation(), false)?, "{name}");
            let trained: Vec<&str> = segs
                .iter()
                .filter(|s| s.trained)
                .map(|s| s.text.as_str())
                .collect();
            assert_eq!(trained.len(), 2, "{name}: {segs:?}");
            assert!(
                trained[0].starts_with("Odile Marsk."),
                "{name}: {trained:?}"
            );
            assert!(trained[1].starts_with("In 1874."), "{name}: {trained:?}");
        }
        let segs = template("chatml").segments(&conversation())?;
        assert_eq!(segs[1].text, "Odile Marsk.<|im_end|>\n");
        Ok(())
    }

    #[test]
    fn a_template_that_raises_or_fails_is_one_line_naming_it() {
        let t = template("gemma");
        let two_users = vec![Message::new(Role::User, "a"), Message::new(Role::User, "b")];
        let err = t
            .render(&two_users, false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chat template gemma:"), "{err}");
        assert!(err.contains("must alternate"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = ChatTemplate::new("{% for %}", "bad.jinja", "", "")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chat template bad.jinja:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn python_string_methods_and_strftime_now_work() -> Result<(), ChatError> {
        let t = ChatTemplate::new(
            "{{ messages[0]['content'].strip().upper() }}|{{ strftime_now('%Y') | length }}|{{ messages[0]['content'].startswith(' hi') }}",
            "t",
            "",
            "",
        )?;
        let out = t.render(&[Message::new(Role::User, " hi there ")], false)?;
        assert_eq!(out, "HI THERE|4|True", "Python prints booleans capitalised");
        Ok(())
    }
}
