//! The runs screen: every run under the runs directory as a table (one
//! [`RunRecord`] per row, read by the core), a selection to open in replay,
//! marks, and for the marked runs their loss curves overlaid with a step
//! cursor and a readout of each run's loss at that step. The key table
//! lives here; drawing is in [`view`].

pub mod view;

use crate::train::runs::{self, RunRecord};
use crate::tui::app::Action;
use crate::tui::keys::{Binding, Key};
use crossterm::event::KeyCode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a key changes on the runs screen itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsInput {
    /// Move the selection by this many rows.
    Select(i64),
    /// Mark or unmark the selected run.
    Mark,
    /// Move the step cursor by this many of the marked runs' steps.
    Cursor(i64),
    CursorStart,
    CursorEnd,
}

use RunsInput as R;

const MOVE: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::Up, Action::Runs(R::Select(-1))),
    Key::Code(KeyCode::Down, Action::Runs(R::Select(1))),
])
.hint("↑↓", "select")
.help("↑ ↓", "select a run");
const OPEN: Binding<Action> = Binding::new(&[Key::Code(KeyCode::Enter, Action::OpenSelected)])
    .hint("Enter", "replay")
    .help("Enter", "open the selected run in replay");
const MARK: Binding<Action> = Binding::new(&[Key::Char(' ', Action::Runs(R::Mark))])
    .hint("space", "mark")
    .help("space", "mark / unmark: marked runs' losses overlaid");
const CURSOR: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::Left, Action::Runs(R::Cursor(-1))),
    Key::Code(KeyCode::Right, Action::Runs(R::Cursor(1))),
    Key::Code(KeyCode::PageUp, Action::Runs(R::Cursor(-10))),
    Key::Code(KeyCode::PageDown, Action::Runs(R::Cursor(10))),
    Key::Code(KeyCode::Home, Action::Runs(R::CursorStart)),
    Key::Code(KeyCode::End, Action::Runs(R::CursorEnd)),
])
.hint("←→", "step")
.help(
    "← → PgUp PgDn",
    "step cursor: one / ten steps; Home End: ends",
);
const CHAT: Binding<Action> = Binding::new(&[Key::Char('c', Action::ChatSelected)])
    .hint("c", "chat")
    .help("c", "chat with the selected run (Ctrl-D comes back)");
const CLONE: Binding<Action> = Binding::new(&[Key::Char('n', Action::TuneNext)])
    .hint("n", "clone")
    .help(
        "n",
        "the setup with the selected run's settings, to change and go again",
    );
const RELOAD: Binding<Action> = Binding::new(&[Key::Char('r', Action::OpenRuns)])
    .hint("r", "reload")
    .help("r", "read the runs directory again");
const HELP: Binding<Action> = Binding::new(&[Key::Char('?', Action::ToggleHelp)])
    .hint("?", "help")
    .help("?", "this help");
const BACK: Binding<Action> = Binding::new(&[Key::Code(KeyCode::Esc, Action::Back)])
    .hint("Esc", "back")
    .help("Esc", "back to the screen before");
const QUIT: Binding<Action> = Binding::new(&[Key::Char('q', Action::RequestQuit)])
    .hint("q", "quit")
    .help("q", "quit (asks while training runs)");

/// The runs screen's keys.
pub const RUNS_KEYS: &[Binding<Action>] = &[
    MOVE, OPEN, MARK, CURSOR, CHAT, CLONE, RELOAD, HELP, BACK, QUIT,
];

/// The runs under a directory, the selected row, the marked runs and the
/// step cursor over their losses.
#[derive(Debug, Clone)]
pub struct RunsScreen {
    pub root: PathBuf,
    /// The directory as the title names it.
    pub label: String,
    pub records: Vec<RunRecord>,
    /// Why the directory could not be listed.
    pub error: Option<String>,
    pub selected: usize,
    /// Marked runs, by directory, so a reload keeps them.
    pub marked: BTreeSet<PathBuf>,
    /// The step the cursor stands on; `None` follows the last marked step.
    cursor: Option<u64>,
    /// What the last action said (a run that cannot be opened).
    pub note: Option<String>,
}

/// One marked run's loss at the cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Readout {
    pub name: String,
    /// The loss at the cursor, else at the last step recorded before it, as
    /// (that step, its loss); `None` before the run's first step.
    pub at: Option<(u64, f64)>,
    /// The run's last recorded step.
    pub last: Option<u64>,
}

impl Readout {
    /// `2.2500`, with the step it was recorded at when that is not the
    /// cursor's (`2.2500 at 20, its last`), or "–" before the first step.
    pub fn text(&self, cursor: u64) -> String {
        match self.at {
            None => runs::ABSENT.into(),
            Some((s, l)) if s == cursor => runs::decimal(l),
            Some((s, l)) if Some(s) == self.last => {
                format!("{} at {s}, its last", runs::decimal(l))
            }
            Some((s, l)) => format!("{} at {s}", runs::decimal(l)),
        }
    }
}

impl RunsScreen {
    /// Every run under `root`; a directory that cannot be read is said on screen.
    pub fn load(root: &Path) -> Self {
        let mut s = Self {
            root: root.to_path_buf(),
            label: root.display().to_string(),
            records: Vec::new(),
            error: None,
            selected: 0,
            marked: BTreeSet::new(),
            cursor: None,
            note: None,
        };
        s.reload();
        s
    }

    /// Read the directory again, keeping the selection and the marks on
    /// the runs that are still there.
    pub fn reload(&mut self) {
        let selected = self.selected_record().map(|r| r.dir.clone());
        match runs::list(&self.root) {
            Ok(records) => {
                self.records = records;
                self.error = None;
            }
            Err(e) => {
                self.records.clear();
                self.error = Some(crate::fsx::error_line(&e));
            }
        }
        let dirs: BTreeSet<PathBuf> = self.records.iter().map(|r| r.dir.clone()).collect();
        self.marked.retain(|d| dirs.contains(d));
        self.selected = selected
            .and_then(|d| self.records.iter().position(|r| r.dir == d))
            .unwrap_or(0);
        self.note = None;
    }

    pub fn selected_record(&self) -> Option<&RunRecord> {
        self.records.get(self.selected)
    }

    pub fn is_marked(&self, r: &RunRecord) -> bool {
        self.marked.contains(&r.dir)
    }

    /// The marked runs, in the table's order.
    pub fn marked_records(&self) -> Vec<&RunRecord> {
        self.records.iter().filter(|r| self.is_marked(r)).collect()
    }

    /// Every step any marked run recorded, in order: where the cursor can stand.
    pub fn steps(&self) -> Vec<u64> {
        let steps: BTreeSet<u64> = self
            .marked_records()
            .iter()
            .flat_map(|r| r.losses.iter().map(|l| l.0))
            .collect();
        steps.into_iter().collect()
    }

    /// The step under the cursor: the one it was put on while the marked
    /// runs recorded it, else the nearest recorded before it (or the
    /// first), and the last step until it is moved.
    pub fn cursor_step(&self) -> Option<u64> {
        let steps = self.steps();
        match self.cursor {
            None => steps.last().copied(),
            Some(c) => steps
                .iter()
                .rev()
                .find(|&&s| s <= c)
                .or(steps.first())
                .copied(),
        }
    }

    /// Each marked run's loss at the cursor.
    pub fn readout(&self) -> Vec<Readout> {
        let Some(step) = self.cursor_step() else {
            return Vec::new();
        };
        self.marked_records()
            .iter()
            .map(|r| Readout {
                name: r.name.clone(),
                at: r.loss_at(step),
                last: r.steps_done(),
            })
            .collect()
    }

    pub fn apply(&mut self, input: RunsInput) {
        self.note = None;
        match input {
            R::Select(d) => {
                let last = self.records.len().saturating_sub(1) as i64;
                self.selected = (self.selected as i64 + d).clamp(0, last.max(0)) as usize;
            }
            R::Mark => {
                if let Some(dir) = self.selected_record().map(|r| r.dir.clone()) {
                    if !self.marked.remove(&dir) {
                        self.marked.insert(dir);
                    }
                }
            }
            R::Cursor(d) => {
                let steps = self.steps();
                if let Some(at) = self.cursor_step() {
                    let i = steps.iter().position(|&s| s == at).unwrap_or(0) as i64;
                    let last = steps.len().saturating_sub(1) as i64;
                    let j = (i + d).clamp(0, last) as usize;
                    self.cursor = steps.get(j).copied();
                }
            }
            R::CursorStart => self.cursor = self.steps().first().copied(),
            R::CursorEnd => self.cursor = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    /// Two runs under a temporary directory: `a` records steps 1–4 with
    /// losses 4, 3, 2.5, 2.25; `b` steps 2, 4, 6 with losses 5, 4, 3.
    fn two_runs() -> (tempfile::TempDir, RunsScreen) {
        let root = tempfile::tempdir().expect("tempdir");
        fixtures::write_run(
            &root.path().join("a"),
            &[(1, 4.0), (2, 3.0), (3, 2.5), (4, 2.25)],
        );
        fixtures::write_run(&root.path().join("b"), &[(2, 5.0), (4, 4.0), (6, 3.0)]);
        let s = RunsScreen::load(root.path());
        (root, s)
    }

    fn values(s: &RunsScreen) -> Vec<String> {
        let at = s.cursor_step().unwrap_or(0);
        s.readout().iter().map(|r| r.text(at)).collect()
    }

    #[test]
    fn the_readout_gives_each_marked_run_its_loss_at_the_cursor() {
        let (_root, mut s) = two_runs();
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.cursor_step(), None);
        s.apply(R::Mark);
        s.apply(R::Select(1));
        s.apply(R::Mark);
        assert_eq!(s.steps(), vec![1, 2, 3, 4, 6]);
        // Until it is moved the cursor stands on the last step.
        assert_eq!(s.cursor_step(), Some(6));
        assert_eq!(values(&s), ["2.2500 at 4, its last", "3.0000"]);
        s.apply(R::Cursor(-2));
        assert_eq!(s.cursor_step(), Some(3));
        // b recorded step 2, not 3.
        assert_eq!(values(&s), ["2.5000", "5.0000 at 2"]);
        s.apply(R::CursorStart);
        assert_eq!(s.cursor_step(), Some(1));
        // b had not started.
        assert_eq!(values(&s), ["4.0000", "–"]);
        s.apply(R::Cursor(-1));
        assert_eq!(s.cursor_step(), Some(1));
        s.apply(R::Cursor(10));
        assert_eq!(s.cursor_step(), Some(6));
        s.apply(R::Cursor(-1));
        assert_eq!(values(&s), ["2.2500", "4.0000"]);
    }

    #[test]
    fn unmarking_keeps_the_cursor_on_a_step_still_recorded() {
        let (_root, mut s) = two_runs();
        s.apply(R::Mark);
        s.apply(R::Select(1));
        s.apply(R::Mark);
        s.apply(R::Cursor(-2));
        assert_eq!(s.cursor_step(), Some(3));
        // Only b: it recorded 2, 4, 6; the cursor falls back to 2.
        s.apply(R::Select(-1));
        s.apply(R::Mark);
        assert_eq!(s.steps(), vec![2, 4, 6]);
        assert_eq!(s.cursor_step(), Some(2));
        assert_eq!(values(&s), ["5.0000"]);
        // Nothing marked: no cursor, no readout.
        s.apply(R::Select(1));
        s.apply(R::Mark);
        assert_eq!(s.cursor_step(), None);
        assert!(s.readout().is_empty());
    }

    #[test]
    fn a_reload_keeps_marks_and_selection_and_a_missing_directory_says_so() {
        let (root, mut s) = two_runs();
        s.apply(R::Select(1));
        s.apply(R::Mark);
        fixtures::write_run(&root.path().join("0-first"), &[(1, 1.0)]);
        s.reload();
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.selected_record().map(|r| r.name.as_str()), Some("b"));
        assert_eq!(s.marked_records().len(), 1);
        let missing = RunsScreen::load(&root.path().join("nowhere"));
        assert!(missing.records.is_empty());
        assert!(
            missing
                .error
                .as_deref()
                .is_some_and(|e| e.contains("cannot read the runs directory")),
            "{:?}",
            missing.error
        );
    }
}
