//! Key bindings. Every screen and overlay has one table of [`Binding`]s,
//! and the key dispatch, the command bar and the help overlay are all read
//! from it, so a key and the words that name it cannot drift apart.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A key press a binding answers to, with the action it stands for.
#[derive(Debug)]
pub enum Key<A: 'static> {
    /// This character, Ctrl not held.
    Char(char, A),
    /// This character with Ctrl held.
    Ctrl(char, A),
    /// This key other than a character (Enter, F2, ←), whatever modifiers are held.
    Code(KeyCode, A),
    /// Any character (Ctrl not held) that no `Char` or `Ctrl` key of the
    /// table takes; the action is made from the character.
    Typed(fn(char) -> A),
}

/// How the command bar names a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The keys as the bar writes them: `[ ]`, `PgUp/Dn`.
    pub keys: &'static str,
    pub label: &'static str,
    /// The label while what the key toggles is on: `pause` becomes `resume`.
    pub on: Option<&'static str>,
    /// The label spelled out, for a bar with room to spare.
    pub long: Option<&'static str>,
}

/// Which of a hint's labels the command bar shows; a hint without that
/// label shows its plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    Short,
    On,
    Long,
}

impl Hint {
    pub fn label_in(&self, wording: Wording) -> &'static str {
        match wording {
            Wording::Short => None,
            Wording::On => self.on,
            Wording::Long => self.long,
        }
        .unwrap_or(self.label)
    }
}

/// One command of a screen: the keys that give it, and how the command bar
/// and the help overlay name it. Keys that do opposite things (`[ ]`, `← →`)
/// are one binding, as the bar and the help name them together.
#[derive(Debug)]
pub struct Binding<A: 'static> {
    pub keys: &'static [Key<A>],
    /// `None` keeps the binding out of the command bar.
    pub hint: Option<Hint>,
    /// The help overlay's row: the keys as written there, and what they do.
    /// `None` keeps the binding out of the help.
    pub help: Option<(&'static str, &'static str)>,
}

impl<A: 'static> Binding<A> {
    pub const fn new(keys: &'static [Key<A>]) -> Self {
        Self {
            keys,
            hint: None,
            help: None,
        }
    }

    pub const fn hint(self, keys: &'static str, label: &'static str) -> Self {
        Self {
            hint: Some(Hint {
                keys,
                label,
                on: None,
                long: None,
            }),
            ..self
        }
    }

    /// The hint's label while what the key toggles is on.
    pub const fn on(self, label: &'static str) -> Self {
        Self {
            hint: match self.hint {
                Some(h) => Some(Hint {
                    on: Some(label),
                    ..h
                }),
                None => None,
            },
            ..self
        }
    }

    /// The hint's label spelled out.
    pub const fn long(self, label: &'static str) -> Self {
        Self {
            hint: match self.hint {
                Some(h) => Some(Hint {
                    long: Some(label),
                    ..h
                }),
                None => None,
            },
            ..self
        }
    }

    pub const fn help(self, keys: &'static str, what: &'static str) -> Self {
        Self {
            help: Some((keys, what)),
            ..self
        }
    }

    /// The actions of the binding's fixed keys.
    pub fn actions(&self) -> impl Iterator<Item = &A> {
        self.keys.iter().filter_map(|k| match k {
            Key::Char(_, a) | Key::Ctrl(_, a) | Key::Code(_, a) => Some(a),
            Key::Typed(_) => None,
        })
    }
}

/// What `key` stands for in `table`: the first fixed key that matches, else
/// the first `Typed` one.
pub fn action<A: Clone>(table: &[Binding<A>], key: KeyEvent) -> Option<A> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let keys = || table.iter().flat_map(|b| b.keys.iter());
    let fixed = keys().find_map(|k| match (k, key.code) {
        (Key::Char(c, a), KeyCode::Char(pressed)) if !ctrl && *c == pressed => Some(a),
        (Key::Ctrl(c, a), KeyCode::Char(pressed)) if ctrl && *c == pressed => Some(a),
        (Key::Code(code, a), pressed) if *code == pressed => Some(a),
        _ => None,
    });
    if let Some(a) = fixed {
        return Some(a.clone());
    }
    match key.code {
        KeyCode::Char(c) if !ctrl => keys().find_map(|k| match k {
            Key::Typed(make) => Some(make(c)),
            _ => None,
        }),
        _ => None,
    }
}

/// The command bar's items, `key label`, in table order; `wording` says
/// which label each binding shows, or leaves it out with `None`.
pub fn hints<A>(
    table: &[Binding<A>],
    wording: impl Fn(&Binding<A>) -> Option<Wording>,
) -> Vec<(&'static str, &'static str)> {
    table
        .iter()
        .filter_map(|b| Some((b.hint?, wording(b)?)))
        .map(|(h, w)| (h.keys, h.label_in(w)))
        .collect()
}

/// Every hint of `table` with its plain label.
pub fn short_hints<A>(table: &[Binding<A>]) -> Vec<(&'static str, &'static str)> {
    hints(table, |_| Some(Wording::Short))
}

/// The help overlay's rows, in table order.
pub fn help_rows<A>(table: &[Binding<A>]) -> Vec<(&'static str, &'static str)> {
    table.iter().filter_map(|b| b.help).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Act {
        Back,
        Forward,
        Quit,
        Type(char),
    }

    const TABLE: &[Binding<Act>] = &[
        Binding::new(&[Key::Char('[', Act::Back), Key::Char(']', Act::Forward)])
            .hint("[ ]", "move")
            .long("move a layer")
            .help("[ ]", "previous / next"),
        Binding::new(&[Key::Typed(Act::Type)]).hint("type", "edit"),
        Binding::new(&[Key::Char('q', Act::Quit), Key::Ctrl('c', Act::Quit)]).help("q", "quit"),
    ];

    fn press(code: KeyCode, modifiers: KeyModifiers) -> Option<Act> {
        action(TABLE, KeyEvent::new(code, modifiers))
    }

    #[test]
    fn fixed_keys_win_over_typing_and_ctrl_is_its_own_key() {
        assert_eq!(
            press(KeyCode::Char(']'), KeyModifiers::NONE),
            Some(Act::Forward)
        );
        assert_eq!(
            press(KeyCode::Char('q'), KeyModifiers::NONE),
            Some(Act::Quit)
        );
        assert_eq!(
            press(KeyCode::Char('x'), KeyModifiers::SHIFT),
            Some(Act::Type('x'))
        );
        assert_eq!(
            press(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Act::Quit)
        );
        assert_eq!(press(KeyCode::Char('q'), KeyModifiers::CONTROL), None);
        assert_eq!(press(KeyCode::Enter, KeyModifiers::NONE), None);
    }

    #[test]
    fn bar_and_help_read_the_same_table() {
        assert_eq!(short_hints(TABLE), vec![("[ ]", "move"), ("type", "edit")]);
        let long = hints(TABLE, |b| b.help.map(|_| Wording::Long));
        assert_eq!(long, vec![("[ ]", "move a layer")]);
        assert_eq!(
            help_rows(TABLE),
            vec![("[ ]", "previous / next"), ("q", "quit")]
        );
    }
}
