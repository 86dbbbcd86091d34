//! The setup screen's key tables: moving between fields and changing them,
//! typing into a field or the save prompt, and the help overlay. Which
//! table is in force follows the screen's state.

use super::fields::Kind;
use super::state::Setup;
use crate::tui::keys::{self, Binding, Key};
use crossterm::event::{KeyCode, KeyEvent};

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
    /// Open the runs screen.
    Runs,
    Help,
    Quit,
}

use SetupInput as I;

const ENTER: Binding<I> = Binding::new(&[Key::Code(KeyCode::Enter, I::Enter)]);
const ESC: Binding<I> = Binding::new(&[Key::Code(KeyCode::Esc, I::Esc)]);
const START: Binding<I> = ENTER
    .hint("Enter", "start")
    .help("Enter", "start · accept an edit · on Preset: presets");
const MOVE: Binding<I> = Binding::new(&[
    Key::Code(KeyCode::Tab, I::Next),
    Key::Code(KeyCode::Down, I::Next),
    Key::Code(KeyCode::BackTab, I::Prev),
    Key::Code(KeyCode::Up, I::Prev),
])
.hint("Tab/↑↓", "move")
.help("Tab ↓ / ↑", "next / previous field");
const CHANGE: Binding<I> = Binding::new(&[
    Key::Code(KeyCode::Right, I::Increase),
    Key::Code(KeyCode::Left, I::Decrease),
    Key::Char('+', I::Increase),
    Key::Char('=', I::Increase),
    Key::Char('-', I::Decrease),
])
.hint("◀▶ +/-", "change")
.help("◀ ▶  + -", "change the value by one notch");
const TYPE: Binding<I> = Binding::new(&[Key::Typed(I::Char)]);
const RETYPE: Binding<I> = TYPE
    .hint("type", "edit")
    .help("type", "retype a number, or edit text in place");
const EDIT: Binding<I> =
    Binding::new(&[Key::Code(KeyCode::F(2), I::Edit)]).help("F2", "edit the value as it is");
const SAVE: Binding<I> = Binding::new(&[Key::Char('w', I::Save)])
    .hint("w", "save")
    .help("w", "save the setup as a preset TOML");
const RUNS: Binding<I> = Binding::new(&[Key::Char('r', I::Runs)])
    .hint("r", "runs")
    .help("r", "runs: every run, their loss curves overlaid");
const HELP: Binding<I> = Binding::new(&[Key::Char('?', I::Help)])
    .hint("?", "help")
    .help("?", "this help");
const LEAVE: Binding<I> = ESC
    .hint("Esc", "quit")
    .help("Esc", "cancel an edit; otherwise quit");
const QUIT: Binding<I> =
    Binding::new(&[Key::Char('q', I::Quit), Key::Ctrl('c', I::Quit)]).help("q", "quit");
/// Backspace deletes while typing; on a field it starts an edit of the
/// value, one character shorter.
const ERASE: Binding<I> = Binding::new(&[Key::Code(KeyCode::Backspace, I::Backspace)]);
const CANCEL: Binding<I> = ESC.hint("Esc", "cancel");
const CTRL_C: Binding<I> = Binding::new(&[Key::Ctrl('c', I::Quit)]);

/// Moving between fields and changing them.
pub const FIELD_KEYS: &[Binding<I>] = &[
    START, MOVE, CHANGE, RETYPE, EDIT, SAVE, RUNS, HELP, LEAVE, QUIT, ERASE,
];

/// On a text field `r` is a letter of the text.
pub const TEXT_FIELD_KEYS: &[Binding<I>] = &[
    START, MOVE, CHANGE, RETYPE, EDIT, SAVE, HELP, LEAVE, QUIT, ERASE,
];

/// On the preset row Enter lists the presets rather than starting; the
/// bar says how to start all the same.
pub const PRESET_ROW_KEYS: &[Binding<I>] = &[
    ENTER.hint("Enter", "presets"),
    Binding::new(&[]).hint("↓ Enter", "start"),
    MOVE,
    CHANGE.hint("◀▶", "next preset"),
    SAVE,
    RUNS,
    HELP,
    LEAVE,
    QUIT,
    EDIT,
];

/// The preset list.
pub const PICKER_KEYS: &[Binding<I>] = &[
    Binding::new(&[
        Key::Code(KeyCode::Down, I::Next),
        Key::Code(KeyCode::Tab, I::Next),
        Key::Code(KeyCode::Up, I::Prev),
        Key::Code(KeyCode::BackTab, I::Prev),
    ])
    .hint("↑↓", "choose"),
    ENTER.hint("Enter", "load"),
    Binding::new(&[Key::Code(KeyCode::Esc, I::Esc), Key::Char('q', I::Esc)]).hint("Esc", "cancel"),
    CTRL_C,
];

/// Typing a field's value.
pub const EDIT_KEYS: &[Binding<I>] = &[
    ENTER.hint("Enter", "accept"),
    CANCEL,
    ERASE.hint("Backspace", "delete"),
    TYPE,
    CTRL_C,
];

/// Typing the path a preset is saved to.
pub const SAVE_PROMPT_KEYS: &[Binding<I>] =
    &[ENTER.hint("Enter", "save"), CANCEL, ERASE, TYPE, CTRL_C];

/// The help overlay over the setup screen.
pub const HELP_KEYS: &[Binding<I>] = &[Binding::new(&[
    Key::Char('?', I::Help),
    Key::Code(KeyCode::Esc, I::Esc),
    Key::Char('q', I::Quit),
    Key::Code(KeyCode::Enter, I::Enter),
])
.hint("? or Esc", "closes this help")];

impl Setup {
    /// The key table in force.
    pub(super) fn keys(&self) -> &'static [Binding<I>] {
        if self.help {
            HELP_KEYS
        } else if self.picker.is_some() {
            PICKER_KEYS
        } else if self.save_prompt.is_some() {
            SAVE_PROMPT_KEYS
        } else if self.edit.is_some() {
            EDIT_KEYS
        } else if self.focused().kind() == Kind::Preset {
            PRESET_ROW_KEYS
        } else if self.focused().kind() == Kind::Text {
            TEXT_FIELD_KEYS
        } else {
            FIELD_KEYS
        }
    }

    /// Translate a key into a setup input, given the screen's state.
    pub fn input_for(&self, key: KeyEvent) -> Option<SetupInput> {
        let input = keys::action(self.keys(), key)?;
        match (input, key.code) {
            // In a text field + and - are text, not notches.
            (I::Increase | I::Decrease, KeyCode::Char(c))
                if self.focused().kind() == Kind::Text =>
            {
                Some(I::Char(c))
            }
            (input, _) => Some(input),
        }
    }
}
