//! The setup screen: the experiment's knobs on the left, the planner's
//! prediction on the right, re-validated and re-predicted on every change.
//! Keyboard only: Tab/↑↓ move, ◀ ▶ or +/- change, typing edits, Enter
//! starts, `w` saves the setup as a preset.

use crate::config::{ConfigError, Experiment};
use crate::tui::overlay;
use crate::tui::panes::clip;
use crate::tui::theme::Theme;
use crate::tui::{CostPreview, Previewer};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Model,
    Task,
    Train,
    Method,
    Neurons,
    TopK,
    Experts,
    Probe,
    Routing,
    HostOptimizer,
    Lr,
    Steps,
    Epochs,
    Batch,
    MicroBatch,
    Cutoff,
    Seed,
    Device,
}

pub const FIELDS: [Field; 19] = [
    Field::Name,
    Field::Model,
    Field::Task,
    Field::Train,
    Field::Method,
    Field::Neurons,
    Field::TopK,
    Field::Experts,
    Field::Probe,
    Field::Routing,
    Field::HostOptimizer,
    Field::Lr,
    Field::Steps,
    Field::Epochs,
    Field::Batch,
    Field::MicroBatch,
    Field::Cutoff,
    Field::Seed,
    Field::Device,
];

const METHODS: &[&str] = &["meft", "parallel", "lora", "full", "none"];
const TASKS: &[&str] = &["nq", "squad", "gsm8k", "metamath", "toolbench"];
const ROUTINGS: &[&str] = &["key_experts", "full"];
const HOST_OPTIMIZERS: &[&str] = &["lazy", "dense"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Choice(&'static [&'static str]),
    Number,
}

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Field::Name => "Preset",
            Field::Model => "Model",
            Field::Task => "Task",
            Field::Train => "Train data",
            Field::Method => "Method",
            Field::Neurons => "Neurons M",
            Field::TopK => "Top-K",
            Field::Experts => "Experts E",
            Field::Probe => "Probe P",
            Field::Routing => "Routing",
            Field::HostOptimizer => "Host optim",
            Field::Lr => "LR",
            Field::Steps => "Steps",
            Field::Epochs => "Epochs",
            Field::Batch => "Batch",
            Field::MicroBatch => "Micro-batch",
            Field::Cutoff => "Cutoff",
            Field::Seed => "Seed",
            Field::Device => "Device",
        }
    }

    /// The config path validation errors name.
    pub fn path(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Model => "model.reference",
            Field::Task => "data.task",
            Field::Train => "data.train",
            Field::Method => "method.kind",
            Field::Neurons => "method.meft.neurons",
            Field::TopK => "method.meft.top_k",
            Field::Experts => "method.meft.experts",
            Field::Probe => "method.meft.probe",
            Field::Routing => "method.meft.routing",
            Field::HostOptimizer => "method.meft.host_optimizer",
            Field::Lr => "train.lr",
            Field::Steps => "train.steps",
            Field::Epochs => "train.epochs",
            Field::Batch => "train.batch",
            Field::MicroBatch => "train.micro_batch",
            Field::Cutoff => "train.cutoff_len",
            Field::Seed => "train.seed",
            Field::Device => "model.device",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Field::Name | Field::Model | Field::Train | Field::Device => Kind::Text,
            Field::Task => Kind::Choice(TASKS),
            Field::Method => Kind::Choice(METHODS),
            Field::Routing => Kind::Choice(ROUTINGS),
            Field::HostOptimizer => Kind::Choice(HOST_OPTIMIZERS),
            _ => Kind::Number,
        }
    }

    fn meft_only(self) -> bool {
        matches!(
            self,
            Field::Neurons
                | Field::TopK
                | Field::Experts
                | Field::Probe
                | Field::Routing
                | Field::HostOptimizer
        )
    }

    /// The value as typed into the field.
    pub fn get(self, e: &Experiment) -> String {
        let m = &e.method.meft;
        let t = &e.train;
        match self {
            Field::Name => e.name.clone(),
            Field::Model => e.model.reference.clone(),
            Field::Task => e.data.task.clone(),
            Field::Train => e.data.train.clone(),
            Field::Method => e.method.kind.clone(),
            Field::Neurons => m.neurons.to_string(),
            Field::TopK => m.top_k.to_string(),
            Field::Experts => m.experts.to_string(),
            Field::Probe => m.probe.to_string(),
            Field::Routing => m.routing.clone(),
            Field::HostOptimizer => m.host_optimizer.clone(),
            Field::Lr => format!("{:e}", t.lr),
            Field::Steps => t.steps.to_string(),
            Field::Epochs => t.epochs.to_string(),
            Field::Batch => t.batch.to_string(),
            Field::MicroBatch => t.micro_batch.to_string(),
            Field::Cutoff => t.cutoff_len.to_string(),
            Field::Seed => t.seed.to_string(),
            Field::Device => e.model.device.clone(),
        }
    }

    /// Set from typed text; the error says what was expected.
    pub fn set(self, e: &mut Experiment, text: &str) -> Result<(), String> {
        let text = text.trim();
        let int = || -> Result<usize, String> {
            text.replace('_', "")
                .parse::<usize>()
                .map_err(|_| format!("expected a whole number, got {text:?}"))
        };
        let float = || -> Result<f64, String> {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("expected a number, got {text:?}"))
        };
        let m = &mut e.method.meft;
        let t = &mut e.train;
        match self {
            Field::Name => {
                if text.is_empty() {
                    return Err("a name is needed".into());
                }
                e.name = text.to_string();
            }
            Field::Model => e.model.reference = text.to_string(),
            Field::Train => e.data.train = text.to_string(),
            Field::Device => e.model.device = text.to_string(),
            Field::Task | Field::Method | Field::Routing | Field::HostOptimizer => {
                let Kind::Choice(options) = self.kind() else {
                    return Ok(());
                };
                if !options.contains(&text) {
                    return Err(format!("expected one of {}", options.join(", ")));
                }
                let v = text.to_string();
                match self {
                    Field::Task => e.data.task = v,
                    Field::Method => e.method.kind = v,
                    Field::Routing => m.routing = v,
                    _ => m.host_optimizer = v,
                }
            }
            Field::Neurons => m.neurons = int()?,
            Field::TopK => m.top_k = int()?,
            Field::Experts => m.experts = int()?,
            Field::Probe => m.probe = int()?,
            Field::Lr => t.lr = float()?,
            Field::Steps => t.steps = int()?,
            Field::Epochs => t.epochs = float()?,
            Field::Batch => t.batch = int()?,
            Field::MicroBatch => t.micro_batch = int()?,
            Field::Cutoff => t.cutoff_len = int()?,
            Field::Seed => {
                t.seed = text
                    .parse()
                    .map_err(|_| format!("expected a whole number, got {text:?}"))?
            }
        }
        Ok(())
    }

    /// One notch up or down: multiplicative where the knob spans decades.
    pub fn step(self, e: &mut Experiment, up: bool) {
        let m = &mut e.method.meft;
        let t = &mut e.train;
        let double = |v: usize, min: usize| {
            if up {
                v.saturating_mul(2).max(min)
            } else {
                (v / 2).max(min)
            }
        };
        match self.kind() {
            Kind::Text => {}
            Kind::Choice(options) => {
                let current = self.get(e);
                let i = options.iter().position(|o| *o == current).unwrap_or(0);
                let n = options.len();
                let next = if up { (i + 1) % n } else { (i + n - 1) % n };
                let _ = self.set(e, options[next]);
            }
            Kind::Number => match self {
                Field::Neurons => m.neurons = next_valid_neurons(m, up),
                Field::TopK => m.top_k = double(m.top_k, 1),
                Field::Experts => {
                    // Only divisors of M are valid; below the smallest, 0 = derive from M.
                    let current = m.resolved_experts();
                    m.experts = match next_divisor(m.neurons, current, up) {
                        Some(e) => e,
                        None if !up && m.experts > 0 => 0,
                        None => m.experts,
                    };
                }
                Field::Probe => {
                    m.probe = if up {
                        m.probe + 1
                    } else {
                        m.probe.saturating_sub(1).max(1)
                    }
                }
                Field::Lr => t.lr = one_two_five(t.lr, up),
                Field::Steps => t.steps = one_two_five(t.steps as f64, up).round() as usize,
                Field::Epochs => {
                    t.epochs = if up {
                        t.epochs.floor() + 1.0
                    } else {
                        (t.epochs.ceil() - 1.0).max(0.0)
                    }
                }
                Field::Batch => t.batch = double(t.batch, 1),
                Field::MicroBatch => {
                    t.micro_batch =
                        next_divisor(t.batch, t.micro_batch, up).unwrap_or(t.micro_batch)
                }
                Field::Cutoff => t.cutoff_len = double(t.cutoff_len, 4),
                Field::Seed => {
                    t.seed = if up {
                        t.seed.wrapping_add(1)
                    } else {
                        t.seed.saturating_sub(1)
                    }
                }
                _ => {}
            },
        }
    }
}

/// The next value in the 1-2-5 series (…, 1e-3, 2e-3, 5e-3, 1e-2, …).
fn one_two_five(v: f64, up: bool) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return if up { 1.0 } else { v };
    }
    let decade = 10f64.powf(v.log10().floor());
    let series = [1.0, 2.0, 5.0, 10.0, 20.0];
    let rel = v / decade;
    let next = if up {
        series
            .iter()
            .find(|&&s| s > rel * (1.0 + 1e-9))
            .copied()
            .unwrap_or(10.0)
    } else {
        series
            .iter()
            .rev()
            .find(|&&s| s < rel * (1.0 - 1e-9))
            .copied()
            .unwrap_or(0.5)
    };
    // Round away float noise so 3e-3 reads "3e-3", not 2.9999999e-3.
    let out = next * decade;
    let digits = 10f64.powf(-(out.log10().floor()) + 3.0);
    (out * digits).round() / digits
}

/// Double or halve M, then settle on the nearest M the experts divide so a
/// notch never lands on an invalid configuration when one is near.
fn next_valid_neurons(m: &crate::config::MeftSection, up: bool) -> usize {
    let target = if up {
        m.neurons.saturating_mul(2)
    } else {
        (m.neurons / 2).max(1)
    };
    let mut probe = m.clone();
    let valid = |n: usize, probe: &mut crate::config::MeftSection| {
        probe.neurons = n;
        let e = probe.resolved_experts();
        n > 0 && e > 0 && n.is_multiple_of(e)
    };
    let reach = (target / 4).max(1);
    for d in 0..=reach {
        if valid(target + d, &mut probe) {
            return target + d;
        }
        if d <= target && valid(target - d, &mut probe) {
            return target - d;
        }
    }
    target
}

/// The next divisor of `n` above or below `current`, if any.
fn next_divisor(n: usize, current: usize, up: bool) -> Option<usize> {
    let mut divisors = (1..=n).filter(|d| n.is_multiple_of(*d));
    if up {
        divisors.find(|&d| d > current)
    } else {
        divisors.take_while(|&d| d < current).max()
    }
}

/// What a key means on the setup screen, given whether a value is being edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupInput {
    Next,
    Prev,
    Increase,
    Decrease,
    /// Start editing (F2) with the current value.
    Edit,
    Char(char),
    Backspace,
    Enter,
    Esc,
    Save,
    Help,
    Quit,
}

/// What the app should do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    Stay,
    Start,
    Quit,
}

pub struct Setup {
    pub exp: Experiment,
    focus: usize,
    edit: Option<String>,
    /// Why the typed text was not accepted.
    edit_error: Option<String>,
    /// The first validation error: the field it names (if shown here) and the message.
    invalid: Option<(Option<Field>, String)>,
    preview: CostPreview,
    previewer: Previewer,
    /// The path being typed for `w`.
    save_prompt: Option<String>,
    note: Option<(String, bool)>,
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

    fn enabled(&self, f: Field) -> bool {
        !f.meft_only() || self.exp.method.kind == "meft"
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

    /// Translate a key into a setup input, given the screen's state.
    pub fn input_for(&self, key: KeyEvent) -> Option<SetupInput> {
        use SetupInput as I;
        let typing = self.is_editing();
        Some(match key.code {
            KeyCode::Tab | KeyCode::Down if !typing => I::Next,
            KeyCode::BackTab | KeyCode::Up if !typing => I::Prev,
            KeyCode::Right if !typing => I::Increase,
            KeyCode::Left if !typing => I::Decrease,
            KeyCode::F(2) if !typing => I::Edit,
            KeyCode::Enter => I::Enter,
            KeyCode::Esc => I::Esc,
            KeyCode::Backspace => I::Backspace,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => I::Quit,
            KeyCode::Char(_) if key.modifiers.contains(KeyModifiers::CONTROL) => return None,
            KeyCode::Char(c) if typing => I::Char(c),
            KeyCode::Char('+') | KeyCode::Char('=') if self.focused().kind() != Kind::Text => {
                I::Increase
            }
            KeyCode::Char('-') if self.focused().kind() != Kind::Text => I::Decrease,
            KeyCode::Char('w') => I::Save,
            KeyCode::Char('?') => I::Help,
            KeyCode::Char('q') => I::Quit,
            KeyCode::Char(c) => I::Char(c),
            _ => return None,
        })
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

    /// What the field shows beside its value (derived figures).
    fn annotation(&self, f: Field) -> Option<String> {
        let m = &self.exp.method.meft;
        match f {
            Field::TopK if m.neurons > 0 => Some(format!(
                "{:.2} % of M",
                m.top_k as f64 * 100.0 / m.neurons as f64
            )),
            Field::Experts => {
                let e = m.resolved_experts();
                let keys = m.neurons.checked_div(e).unwrap_or(0);
                Some(if m.experts == 0 {
                    format!("auto → {e} × {keys} keys")
                } else {
                    format!("× {keys} keys")
                })
            }
            Field::Steps if self.exp.train.steps == 0 => Some("use epochs".into()),
            Field::Epochs if self.exp.train.steps > 0 => Some("steps win".into()),
            Field::MicroBatch if self.exp.train.micro_batch > 0 => Some(format!(
                "{} accumulation",
                self.exp.train.batch / self.exp.train.micro_batch.max(1)
            )),
            _ => None,
        }
    }

    pub fn render(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        if overlay::too_small(area, theme, buf) {
            return;
        }
        let [main, hint_row] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(theme.border())
            .title(Span::styled(" meft · new run ", theme.pane_title()));
        let inner = block.inner(main);
        block.render(main, buf);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(inner);
        self.render_fields(theme, left, buf);
        self.render_preview(theme, right, buf);

        if let Some(path) = &self.save_prompt {
            let inner = overlay::dialog("save preset", 60, 5, theme, area, buf);
            Paragraph::new(vec![
                Line::from(Span::styled("path of the preset TOML:", theme.label())),
                Line::from(vec![
                    Span::styled(path.clone(), theme.value()),
                    Span::styled("█", theme.key()),
                ]),
                Line::from(Span::styled("Enter save · Esc cancel", theme.source())),
            ])
            .render(inner, buf);
        }
        let items: &[(&str, &str)] = if self.edit.is_some() {
            &[
                ("Enter", "accept"),
                ("Esc", "cancel"),
                ("Backspace", "delete"),
            ]
        } else {
            &[
                ("Enter", "start"),
                ("Tab/↑↓", "move"),
                ("◀▶ +/-", "change"),
                ("type", "edit"),
                ("w", "save"),
                ("?", "help"),
                ("Esc", "quit"),
            ]
        };
        overlay::hints(items, 3, theme, hint_row, buf);
        if self.help {
            overlay::help("setup keys", SETUP_KEYS, theme, area, buf);
        }
    }

    fn render_fields(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        const LABEL_W: usize = 12;
        let w = area.width as usize;
        let invalid_field = self.invalid.as_ref().and_then(|(f, _)| *f);
        let mut lines: Vec<Line> = Vec::new();
        for (i, &f) in FIELDS.iter().enumerate() {
            let focused = i == self.focus;
            let enabled = self.enabled(f);
            let label_style = if !enabled {
                theme.disabled()
            } else if focused {
                theme.key()
            } else {
                theme.label()
            };
            let mut spans = vec![
                Span::styled(if focused { "▸" } else { " " }, theme.key()),
                Span::styled(format!("{:<LABEL_W$}", f.label()), label_style),
            ];
            let room = w.saturating_sub(LABEL_W + 2);
            match (&self.edit, focused) {
                (Some(text), true) => {
                    spans.push(Span::styled(
                        clip(text, room.saturating_sub(1)),
                        theme.focus(),
                    ));
                    spans.push(Span::styled("█", theme.key()));
                    if let Some(err) = &self.edit_error {
                        let used = text.chars().count() + 1;
                        spans.push(Span::styled(
                            format!(" ✗ {}", clip(err, room.saturating_sub(used + 3))),
                            theme.error(),
                        ));
                    }
                }
                _ => {
                    let value = match f.kind() {
                        Kind::Choice(_) if focused => format!("◀ {} ▶", f.get(&self.exp)),
                        _ => f.get(&self.exp),
                    };
                    let value = clip(&value, room);
                    let used = value.chars().count();
                    let vstyle = if !enabled {
                        theme.disabled()
                    } else if focused {
                        theme.focus()
                    } else {
                        theme.value()
                    };
                    spans.push(Span::styled(value, vstyle));
                    let after = room.saturating_sub(used + 2);
                    if let (Some((Some(bad), msg)), true) =
                        (&self.invalid, invalid_field == Some(f))
                    {
                        // The path is implied by the row; the reason is what helps.
                        let reason = msg
                            .strip_prefix(bad.path())
                            .and_then(|m| m.strip_prefix(": "))
                            .unwrap_or(msg);
                        spans.push(Span::styled(
                            format!("  ✗ {}", clip(reason, after.saturating_sub(2))),
                            theme.error(),
                        ));
                    } else if let Some(a) = self.annotation(f).filter(|_| enabled) {
                        spans.push(Span::styled(
                            format!("  {}", clip(&a, after)),
                            theme.source(),
                        ));
                    }
                }
            }
            lines.push(Line::from(spans));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .render(area, buf);
    }

    fn render_preview(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        let block = Block::default()
            .borders(Borders::LEFT)
            .border_style(theme.border());
        let inner = block.inner(area);
        block.render(area, buf);
        // A one-column margin that wrapped lines keep too.
        let inner = Rect {
            x: inner.x.saturating_add(1).min(inner.right()),
            width: inner.width.saturating_sub(1),
            ..inner
        };
        let p = &self.preview;
        let mut lines = vec![Line::from(Span::styled(
            "Predicted cost · planner",
            theme.pane_title(),
        ))];
        let label_w = p
            .lines
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            .min(14);
        for (label, value) in &p.lines {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{:<label_w$} ", clip(label, label_w)),
                    theme.label(),
                ),
                Span::styled(value.clone(), theme.value()),
            ]));
        }
        match p.fits {
            Some(true) => lines.push(Line::from(Span::styled("fits ✓", theme.ok()))),
            Some(false) => lines.push(Line::from(Span::styled("does not fit ✗", theme.error()))),
            None => {}
        }
        if let Some(e) = &p.error {
            lines.push(Line::from(Span::styled(format!("✗ {e}"), theme.error())));
        }
        lines.push(Line::raw(""));
        lines.push(match (&self.edit_error, &self.invalid) {
            (Some(e), _) => Line::from(Span::styled(
                format!("✗ {}: {e}", self.focused().path()),
                theme.error(),
            )),
            (None, None) => Line::from(Span::styled("config valid ✓", theme.ok())),
            (None, Some((_, msg))) => Line::from(Span::styled(format!("✗ {msg}"), theme.error())),
        });
        if let Some((msg, is_err)) = &self.note {
            let style = if *is_err { theme.error() } else { theme.ok() };
            lines.push(Line::raw(""));
            lines.push(Line::from(Span::styled(msg.clone(), style)));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .render(inner, buf);
    }
}

pub const SETUP_KEYS: &[(&str, &str)] = &[
    ("Tab ↓ / ↑", "next / previous field"),
    ("◀ ▶  + -", "change the value by one notch"),
    ("type", "retype a number, or edit text in place"),
    ("F2", "edit the value as it is"),
    ("Enter", "accept an edit; otherwise start the run"),
    ("Esc", "cancel an edit; otherwise quit"),
    ("w", "save the setup as a preset TOML"),
    ("?", "this help"),
    ("q", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_and_steps_move_along_1_2_5() {
        assert_eq!(one_two_five(1e-3, true), 2e-3);
        assert_eq!(one_two_five(2e-3, true), 5e-3);
        assert_eq!(one_two_five(5e-3, true), 1e-2);
        assert_eq!(one_two_five(1e-3, false), 5e-4);
        assert_eq!(one_two_five(200.0, true), 500.0);
    }

    #[test]
    fn neurons_step_to_a_valid_m() {
        let mut e = Experiment::default();
        assert_eq!(e.method.meft.neurons, 4096);
        Field::Neurons.step(&mut e, true);
        let m = e.method.meft.neurons;
        assert!(m > 4096 && m % e.method.meft.resolved_experts() == 0, "{m}");
        assert!(e.validate().is_ok());
    }

    #[test]
    fn experts_step_through_divisors() {
        let mut e = Experiment::default();
        e.method.meft.experts = 256;
        Field::Experts.step(&mut e, true);
        assert_eq!(e.method.meft.experts, 512);
        Field::Experts.step(&mut e, false);
        Field::Experts.step(&mut e, false);
        assert_eq!(e.method.meft.experts, 128);
    }

    #[test]
    fn typed_values_are_checked() {
        let mut e = Experiment::default();
        assert!(Field::Neurons.set(&mut e, "abc").is_err());
        assert!(Field::Method.set(&mut e, "adapter").is_err());
        assert!(Field::Lr.set(&mut e, "3e-4").is_ok());
        assert_eq!(e.train.lr, 3e-4);
    }
}
