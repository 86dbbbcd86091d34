//! The setup screen's state: the experiment being edited, the focused
//! row, the text being typed, validation and the planner's prediction, and
//! how a [`SetupInput`] changes them.

use super::fields::{Field, Kind, FIELDS};
use super::keys::SetupInput;
use crate::config::{ConfigError, Experiment};
use crate::tui::{CostPreview, Previewer};
use std::path::PathBuf;

/// What the app should do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    Stay,
    Start,
    Quit,
}

pub struct Setup {
    pub exp: Experiment,
    pub(super) focus: usize,
    pub(super) edit: Option<String>,
    /// Why the typed text was not accepted.
    pub(super) edit_error: Option<String>,
    /// The first validation error: the field it names (if shown here) and the message.
    pub(super) invalid: Option<(Option<Field>, String)>,
    pub(super) preview: CostPreview,
    previewer: Previewer,
    /// The path being typed for `w`.
    pub(super) save_prompt: Option<String>,
    pub(super) note: Option<(String, bool)>,
    pub help: bool,
}

impl Setup {
    pub fn new(exp: Experiment, previewer: Previewer) -> Self {
        let preview = previewer(&exp);
        let mut s = Self {
            exp,
            focus: 0,
            edit: None,
            edit_error: None,
            invalid: None,
            preview,
            previewer,
            save_prompt: None,
            note: None,
            help: false,
        };
        s.revalidate();
        s
    }

    pub fn focused(&self) -> Field {
        FIELDS[self.focus.min(FIELDS.len() - 1)]
    }

    pub fn is_editing(&self) -> bool {
        self.edit.is_some() || self.save_prompt.is_some()
    }

    pub fn is_valid(&self) -> bool {
        self.invalid.is_none()
    }

    pub(super) fn enabled(&self, f: Field) -> bool {
        !f.meft_only() || self.exp.method.kind == crate::config::MethodKind::Meft
    }

    fn revalidate(&mut self) {
        self.invalid = match self.exp.validate() {
            Ok(()) => None,
            Err(ConfigError::Field { field, msg }) => {
                let f = FIELDS.iter().copied().find(|f| f.path() == field);
                Some((f, format!("{field}: {msg}")))
            }
            Err(e) => Some((None, e.to_string())),
        };
        self.preview = (self.previewer)(&self.exp);
    }

    pub fn apply(&mut self, input: SetupInput) -> SetupOutcome {
        use SetupInput as I;
        if self.help {
            if matches!(input, I::Help | I::Esc | I::Quit | I::Enter) {
                self.help = false;
            }
            return SetupOutcome::Stay;
        }
        if let Some(path) = self.save_prompt.as_mut() {
            match input {
                I::Char(c) => path.push(c),
                I::Backspace => {
                    path.pop();
                }
                I::Esc => self.save_prompt = None,
                I::Enter => {
                    let path = PathBuf::from(path.trim());
                    self.save_prompt = None;
                    self.note = Some(match self.exp.save(&path) {
                        Ok(()) => (format!("saved {}", path.display()), false),
                        Err(e) => (format!("not saved: {e}"), true),
                    });
                }
                I::Quit => return SetupOutcome::Quit,
                _ => {}
            }
            return SetupOutcome::Stay;
        }
        let field = self.focused();
        if let Some(buf) = self.edit.as_mut() {
            match input {
                I::Char(c) => buf.push(c),
                I::Backspace => {
                    buf.pop();
                }
                I::Esc => {
                    self.edit = None;
                    self.edit_error = None;
                }
                I::Enter => {
                    let text = buf.clone();
                    match field.set(&mut self.exp, &text) {
                        Ok(()) => {
                            self.edit = None;
                            self.edit_error = None;
                            self.revalidate();
                        }
                        Err(e) => self.edit_error = Some(e),
                    }
                }
                I::Quit => return SetupOutcome::Quit,
                _ => {}
            }
            return SetupOutcome::Stay;
        }
        self.note = None;
        match input {
            I::Next => self.move_focus(true),
            I::Prev => self.move_focus(false),
            I::Increase | I::Decrease => {
                field.step(&mut self.exp, input == I::Increase);
                self.revalidate();
            }
            I::Edit => self.edit = Some(field.get(&self.exp)),
            I::Char(c) => {
                // Numbers and choices are retyped whole; text is edited in place.
                let start = match field.kind() {
                    Kind::Text => field.get(&self.exp),
                    _ => String::new(),
                };
                self.edit = Some(format!("{start}{c}"));
            }
            I::Backspace => {
                let mut v = field.get(&self.exp);
                v.pop();
                self.edit = Some(v);
            }
            I::Enter => {
                if self.is_valid() {
                    return SetupOutcome::Start;
                }
                self.note = Some(("fix the marked field before starting".into(), true));
            }
            I::Save => {
                let stem: String = self
                    .exp
                    .name
                    .chars()
                    .map(|c| {
                        if c.is_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                let stem = if stem.is_empty() {
                    "my-run".into()
                } else {
                    stem
                };
                self.save_prompt = Some(format!("presets/{stem}.toml"));
            }
            I::Help => self.help = true,
            I::Esc | I::Quit => return SetupOutcome::Quit,
        }
        SetupOutcome::Stay
    }

    /// Show why the launcher refused to start.
    pub fn set_error_note(&mut self, msg: String) {
        self.note = Some((msg, true));
    }

    fn move_focus(&mut self, forward: bool) {
        let n = FIELDS.len();
        for _ in 0..n {
            self.focus = if forward {
                (self.focus + 1) % n
            } else {
                (self.focus + n - 1) % n
            };
            if self.enabled(self.focused()) {
                break;
            }
        }
    }
}
