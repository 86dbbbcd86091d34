//! The setup screen's state: the experiment being edited, the preset it
//! came from, the focused row, the text being typed, validation, the plan's
//! own knobs and the planner's prediction, and how a [`SetupInput`] changes
//! them.

use super::fields::{Field, Kind, FIELDS};
use super::keys::SetupInput;
use super::presets::{for_task, Presets};
use crate::config::{ConfigError, Experiment, Task};
use crate::telemetry::plan::PAPER_UNION_FRACTION;
use crate::tui::{CostPreview, PlanKnobs, Previewer, UnionAssumption};
use std::path::PathBuf;

/// The device memory a plan is checked against until the user picks
/// another: the paper's card (Hao et al. 2024 train LLaMA-7B on 24 GB).
const PAPER_GPU_MEM: u64 = 24 << 30;

/// What the app should do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    Stay,
    Start,
    /// Open the runs screen.
    Runs,
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
    pub(super) knobs: PlanKnobs,
    pub(super) presets: Presets,
    /// The preset the fields were loaded from, by index into `presets`.
    pub(super) preset: Option<usize>,
    /// The open preset list: its highlighted row.
    pub(super) picker: Option<usize>,
    /// Enter was pressed on an invalid config.
    pub(super) refused: bool,
    /// The path being typed for `w`.
    pub(super) save_prompt: Option<String>,
    pub(super) note: Option<(String, bool)>,
    pub help: bool,
    /// The run these settings were taken from (`n`): its name and config,
    /// against which changed fields are marked.
    pub(super) base: Option<Box<(String, Experiment)>>,
}

impl Setup {
    pub fn new(exp: Experiment, presets: Presets, previewer: Previewer) -> Self {
        let knobs = PlanKnobs {
            union: UnionAssumption::Fraction(PAPER_UNION_FRACTION),
            gpu_mem: PAPER_GPU_MEM,
        };
        let preview = previewer(&exp, &knobs);
        let preset = presets.all.iter().position(|p| p.exp == exp);
        let mut s = Self {
            exp,
            focus: 0,
            edit: None,
            edit_error: None,
            invalid: None,
            preview,
            previewer,
            knobs,
            presets,
            preset,
            picker: None,
            refused: false,
            save_prompt: None,
            note: None,
            help: false,
            base: None,
        };
        s.revalidate();
        s
    }

    /// Take the settings of the run `from` (its config `exp`) to change and
    /// go again: the run name gets a suffix, and each field shows what it
    /// was once changed.
    pub fn tune(&mut self, exp: Experiment, from: &str) {
        let mut next = exp.clone();
        next.name = next_name(&exp.name);
        self.exp = next;
        self.base = Some(Box::new((from.to_string(), exp)));
        self.preset = None;
        self.focus = 1;
        self.edit = None;
        self.picker = None;
        self.refused = false;
        self.note = Some((
            format!("the settings of {from}: change a field, Enter starts"),
            false,
        ));
        self.revalidate();
    }

    /// What field `f` held in the run these settings came from, when it
    /// differs now.
    pub(super) fn was(&self, f: Field) -> Option<String> {
        let (_, base) = self.base.as_deref()?;
        if !f.is_config() || f == Field::Name {
            return None;
        }
        let old = f.get(base);
        (old != f.get(&self.exp)).then_some(old)
    }

    pub fn focused(&self) -> Field {
        FIELDS[self.focus.min(FIELDS.len() - 1)]
    }

    pub fn is_editing(&self) -> bool {
        self.edit.is_some() || self.save_prompt.is_some()
    }

    /// How many presets the list offers.
    pub fn preset_count(&self) -> usize {
        self.presets.all.len()
    }

    /// The `i`th preset's name in the list.
    pub fn preset_name(&self, i: usize) -> String {
        self.presets.label(i)
    }

    /// The planner's figures on screen.
    pub fn preview(&self) -> &CostPreview {
        &self.preview
    }

    /// The preset row's value: its name, marked when a field has changed since.
    pub(super) fn preset_label(&self) -> String {
        match self
            .preset
            .and_then(|i| self.presets.all.get(i).map(|p| (i, p)))
        {
            Some((i, p)) if p.exp == self.exp => self.presets.label(i),
            Some((i, _)) => format!("{} (edited)", self.presets.label(i)),
            None => match self.base.as_deref() {
                Some((from, _)) => format!("from {from}"),
                None => "none".into(),
            },
        }
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
        self.preview = (self.previewer)(&self.exp, &self.knobs);
    }

    /// Replace every field with the preset's.
    fn load_preset(&mut self, i: usize) {
        if let Some(p) = self.presets.all.get(i) {
            self.exp = p.exp.clone();
            self.preset = Some(i);
            self.revalidate();
        }
    }

    /// A new task brings its runnable preset's run name (unless the user
    /// named the run), cutoff, data, answer length, metrics and paper figure.
    fn task_changed(&mut self, old: Task) {
        let new = self.exp.data.task;
        let root = &self.presets.root;
        let old_name = for_task(&self.presets.all, root, old).map(|p| p.exp.name.as_str());
        let default_name = Experiment::default().name;
        let named_by_default = self.exp.name == old.name()
            || self.exp.name == default_name
            || old_name == Some(self.exp.name.as_str());
        let defaults = for_task(&self.presets.all, root, new).map(|p| p.exp.clone());
        let e = &mut self.exp;
        if named_by_default {
            e.name = defaults
                .as_ref()
                .map_or_else(|| new.name().to_string(), |d| d.name.clone());
        }
        // Metrics belong to a task; the new task's defaults apply.
        e.eval.metrics.clear();
        e.paper = None;
        if let Some(d) = defaults {
            e.train.cutoff_len = d.train.cutoff_len;
            e.eval.max_new_tokens = d.eval.max_new_tokens;
            e.eval.metrics = d.eval.metrics;
            e.paper = d.paper;
            // Generated data follows the task; a file the user chose stays.
            if e.data.train.starts_with("synth:") {
                e.data.train = d.data.train;
            }
        }
    }

    /// Apply a change to the focused row's value, then re-check and re-plan.
    fn change(&mut self, f: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), String> {
        let task = self.exp.data.task;
        f(self)?;
        if self.exp.data.task != task {
            self.task_changed(task);
        }
        self.revalidate();
        Ok(())
    }

    pub fn apply(&mut self, input: SetupInput) -> SetupOutcome {
        use SetupInput as I;
        if self.help {
            if matches!(input, I::Help | I::Esc | I::Quit | I::Enter) {
                self.help = false;
            }
            return SetupOutcome::Stay;
        }
        if let Some(row) = self.picker {
            let n = self.presets.all.len().max(1);
            match input {
                I::Next => self.picker = Some((row + 1) % n),
                I::Prev => self.picker = Some((row + n - 1) % n),
                I::Enter => {
                    self.picker = None;
                    self.load_preset(row);
                }
                I::Esc | I::Quit => self.picker = None,
                _ => {}
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
                        Ok(()) => {
                            // The saved preset joins the list, as the one loaded.
                            self.presets = Presets::load(&self.presets.root);
                            let saved = self.presets.all.iter().position(|p| p.path == path);
                            self.preset = saved.or(self.preset);
                            (format!("saved {}", path.display()), false)
                        }
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
                    let set = self.change(|s| match field.is_knob() {
                        true => field.knob_set(&mut s.knobs, &text),
                        false => field.set(&mut s.exp, &text),
                    });
                    match set {
                        Ok(()) => {
                            self.edit = None;
                            self.edit_error = None;
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
        self.refused = false;
        let kind = field.kind();
        let current = |s: &Self| match field.is_knob() {
            true => field.knob_get(&s.knobs),
            false => field.get(&s.exp),
        };
        match input {
            I::Next => self.move_focus(true),
            I::Prev => self.move_focus(false),
            I::Increase | I::Decrease if kind == Kind::Preset => {
                self.step_preset(input == I::Increase)
            }
            I::Increase | I::Decrease => {
                let up = input == I::Increase;
                let _ = self.change(|s| {
                    match field.is_knob() {
                        true => field.knob_step(&mut s.knobs, up),
                        false => field.step(&mut s.exp, up),
                    }
                    Ok(())
                });
            }
            I::Edit | I::Enter if kind == Kind::Preset => {
                self.picker = Some(self.preset.unwrap_or(0));
            }
            I::Char(_) | I::Backspace if kind == Kind::Preset => {}
            I::Edit => self.edit = Some(current(self)),
            I::Char(c) => {
                // Numbers and choices are retyped whole; text is edited in place.
                let start = match kind {
                    Kind::Text => current(self),
                    _ => String::new(),
                };
                self.edit = Some(format!("{start}{c}"));
            }
            I::Backspace => {
                let mut v = current(self);
                v.pop();
                self.edit = Some(v);
            }
            I::Enter => {
                if self.is_valid() {
                    return SetupOutcome::Start;
                }
                // Go to the field at fault; the verdict says why.
                self.refused = true;
                let bad = self.invalid.as_ref().and_then(|(f, _)| *f);
                if let Some(i) = bad.and_then(|b| FIELDS.iter().position(|f| *f == b)) {
                    self.focus = i;
                }
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
                let path = self.presets.root.join(format!("{stem}.toml"));
                self.save_prompt = Some(path.display().to_string());
            }
            I::Help => self.help = true,
            I::Runs => return SetupOutcome::Runs,
            I::Esc | I::Quit => return SetupOutcome::Quit,
        }
        SetupOutcome::Stay
    }

    /// Show why the launcher refused to start.
    pub fn set_error_note(&mut self, msg: String) {
        self.note = Some((msg, true));
    }

    /// ◀▶ on the preset row: load the next or previous preset.
    fn step_preset(&mut self, up: bool) {
        let n = self.presets.all.len();
        if n == 0 {
            self.note = Some((
                format!("no presets in {}", self.presets.root.display()),
                true,
            ));
            return;
        }
        let next = match (self.preset, up) {
            (None, true) => 0,
            (None, false) => n - 1,
            (Some(i), true) => (i + 1) % n,
            (Some(i), false) => (i + n - 1) % n,
        };
        self.load_preset(next);
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

/// A run name with the next suffix: `nq` → `nq-2`, `nq-2` → `nq-3`.
pub fn next_name(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((stem, n)) if !stem.is_empty() => match n.parse::<u32>() {
            Ok(n) => format!("{stem}-{}", n + 1),
            Err(_) => format!("{name}-2"),
        },
        _ => format!("{name}-2"),
    }
}
