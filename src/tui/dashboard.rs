//! The dashboard screen: title bar, the five panes (or the Events pane in
//! their place), the status bar and key hints, laid out for anything from
//! 80×24 up. Live runs and replays draw the same screen; only the hint row
//! and the overlays differ, and a picture for a report has a caption where
//! the hints would be. The key tables of both, and of the overlays over
//! them, live here too.

use crate::tui::app::Action;
use crate::tui::keys::{self, Binding, Key, Wording};
use crate::tui::overlay;
use crate::tui::panes::{activations, device, events, host, loss, status, traffic, Pane};
use crate::tui::state::{DashboardState, Phase};
use crossterm::event::KeyCode;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};

/// Where the replay cursor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPosition {
    /// 1-based index of the shown step among the recorded ones.
    pub index: usize,
    pub count: usize,
}

/// What the app draws around the panes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chrome {
    pub replay: Option<ReplayPosition>,
    pub help: bool,
    pub confirm_quit: bool,
    /// The run trains in its own process: quitting may leave it training.
    pub detachable: bool,
    /// A replay opened from the runs screen: Esc and `q` go back to it.
    pub from_runs: bool,
    /// Drawn as a picture: the caption replaces the key hints (which mean
    /// nothing on paper) and no overlay is drawn.
    pub picture: bool,
}

const PAUSE: Binding<Action> = Binding::new(&[Key::Char(' ', Action::TogglePause)])
    .hint("space", "pause")
    .on("resume")
    .help("space", "pause / resume training");
const CHECKPOINT: Binding<Action> = Binding::new(&[Key::Char('c', Action::Checkpoint)])
    .hint("c", "checkpoint")
    .help("c", "write a checkpoint now");
const EVAL: Binding<Action> = Binding::new(&[Key::Char('e', Action::EvalNow)])
    .hint("e", "eval")
    .help("e", "evaluate now");
const STEP: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::Left, Action::Seek(-1)),
    Key::Code(KeyCode::Right, Action::Seek(1)),
])
.hint("←→", "step")
.help("← →", "one step back / forward");
const TEN_STEPS: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::PageUp, Action::Seek(-10)),
    Key::Code(KeyCode::PageDown, Action::Seek(10)),
])
.hint("PgUp/Dn", "±10")
.help("PgUp PgDn", "ten steps back / forward");
const ENDS: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::Home, Action::SeekStart),
    Key::Code(KeyCode::End, Action::SeekEnd),
])
.hint("Home/End", "ends")
.help("Home End", "first / last step");
const SCREENSHOT: Binding<Action> = Binding::new(&[Key::Char('s', Action::Screenshot)])
    .hint("s", "screenshot")
    .help("s", "screenshot to <run>/screenshots/");
const LOG_SCALE: Binding<Action> = Binding::new(&[Key::Char('y', Action::ToggleLogScale)])
    .hint("y", "log y")
    .long("log scale")
    .help("y", "loss: linear / log scale");
const EVENTS: Binding<Action> = Binding::new(&[Key::Char('l', Action::ToggleEvents)])
    .hint("l", "events")
    .help("l", "events: evals with samples, warnings, errors");
const PANES: Binding<Action> = Binding::new(&[
    Key::Char('l', Action::ToggleEvents),
    Key::Code(KeyCode::Esc, Action::ToggleEvents),
])
.hint("l", "panes")
.help("l Esc", "back to the panes");
const SCROLL: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::Up, Action::ScrollEvents(1)),
    Key::Code(KeyCode::Down, Action::ScrollEvents(-1)),
])
.hint("↑↓", "scroll")
.help("↑ ↓", "events: one line back / forward");
const PAGE: Binding<Action> = Binding::new(&[
    Key::Code(KeyCode::PageUp, Action::PageEvents(1)),
    Key::Code(KeyCode::PageDown, Action::PageEvents(-1)),
])
.hint("PgUp/Dn", "page")
.help("PgUp PgDn", "events: one page back / forward");
const TIME_AXIS: Binding<Action> = Binding::new(&[Key::Char('t', Action::ToggleTimeAxis)])
    .hint("t", "time")
    .long("time axis")
    .help("t", "loss: x axis steps / wall time");
/// Public for the Activations pane, whose title names these keys.
pub const LAYER: Binding<Action> = Binding::new(&[
    Key::Char('[', Action::PrevLayer),
    Key::Char(']', Action::NextLayer),
])
.hint("[ ]", "layer")
.help("[ ]", "activations: previous / next layer");
/// Not listed in the help itself, whose last line says how to close it.
const HELP: Binding<Action> = Binding::new(&[Key::Char('?', Action::ToggleHelp)]).hint("?", "help");
const QUIT: Binding<Action> = Binding::new(&[
    Key::Char('q', Action::RequestQuit),
    Key::Code(KeyCode::Esc, Action::RequestQuit),
])
.hint("q", "quit")
.help("q", "quit");
const LR: Binding<Action> = Binding::new(&[
    Key::Char('+', Action::ScaleLr(true)),
    Key::Char('=', Action::ScaleLr(true)),
    Key::Char('-', Action::ScaleLr(false)),
])
.hint("+/-", "lr")
.help("+ -", "learning rate × 2 / ÷ 2 from the next step");
const NEXT: Binding<Action> = Binding::new(&[Key::Char('n', Action::TuneNext)])
    .hint("n", "next run")
    .help(
        "n",
        "the setup with this run's settings, to change and go again",
    );
/// A live run's quit: `q` asks while it trains, `d` leaves it training
/// (a run in its own process; `meft attach` comes back to it).
const LIVE_QUIT: Binding<Action> = Binding::new(&[
    Key::Char('q', Action::RequestQuit),
    Key::Code(KeyCode::Esc, Action::RequestQuit),
    Key::Char('d', Action::Detach),
])
.hint("q", "quit")
.help("q d", "quit (asks if training) · d: keep it training");
/// The same over the Events pane, where Esc goes back to the panes.
const LIVE_QUIT_Q: Binding<Action> = Binding::new(&[
    Key::Char('q', Action::RequestQuit),
    Key::Char('d', Action::Detach),
])
.hint("q", "quit")
.help("q d", "quit (asks if training) · d: keep it training");
const RUNS: Binding<Action> = Binding::new(&[Key::Char('r', Action::OpenRuns)])
    .hint("r", "runs")
    .help("r", "runs: every run, their loss curves overlaid");
const BACK: Binding<Action> = Binding::new(&[
    Key::Char('q', Action::Back),
    Key::Code(KeyCode::Esc, Action::Back),
])
.hint("Esc", "back")
.help("Esc q", "back to the runs");
/// Over the Events pane Esc goes back to the panes, so only `q` quits.
const QUIT_Q: Binding<Action> = Binding::new(&[Key::Char('q', Action::RequestQuit)])
    .hint("q", "quit")
    .help("q", "quit");

/// A live run's dashboard, and the same once the run is over.
pub const LIVE_KEYS: &[Binding<Action>] = &[
    PAUSE, CHECKPOINT, EVAL, EVENTS, SCREENSHOT, LR, LOG_SCALE, TIME_AXIS, LAYER, RUNS, HELP,
    LIVE_QUIT,
];

/// A live run's dashboard once the run is over: nothing to ask of the
/// trainer, and `n` to go again with its settings.
pub const OVER_KEYS: &[Binding<Action>] = &[
    EVENTS, SCREENSHOT, LOG_SCALE, TIME_AXIS, LAYER, RUNS, NEXT, HELP, QUIT,
];

/// A live run's Events pane.
pub const LIVE_EVENTS_KEYS: &[Binding<Action>] = &[
    PANES,
    SCROLL,
    PAGE,
    PAUSE,
    CHECKPOINT,
    EVAL,
    SCREENSHOT,
    HELP,
    LIVE_QUIT_Q,
];

/// A recorded run's dashboard.
pub const REPLAY_KEYS: &[Binding<Action>] = &[
    STEP, TEN_STEPS, ENDS, EVENTS, SCREENSHOT, LOG_SCALE, TIME_AXIS, LAYER, RUNS, NEXT, HELP, QUIT,
];

/// A recorded run opened from the runs screen, which Esc goes back to.
pub const REPLAY_FROM_RUNS_KEYS: &[Binding<Action>] = &[
    STEP, TEN_STEPS, ENDS, EVENTS, SCREENSHOT, LOG_SCALE, TIME_AXIS, LAYER, HELP, BACK,
];

/// A recorded run's Events pane: PgUp/PgDn page through the events there.
pub const REPLAY_EVENTS_KEYS: &[Binding<Action>] =
    &[STEP, SCROLL, PAGE, ENDS, PANES, SCREENSHOT, HELP, QUIT_Q];

/// Its Events pane when opened from the runs screen: `q` goes back there.
pub const REPLAY_EVENTS_FROM_RUNS_KEYS: &[Binding<Action>] = &[
    STEP,
    SCROLL,
    PAGE,
    ENDS,
    PANES,
    SCREENSHOT,
    HELP,
    Binding::new(&[Key::Char('q', Action::Back)])
        .hint("q", "back")
        .help("q", "back to the runs"),
];

/// The key table of the dashboard as it is drawn.
pub fn screen_keys(state: &DashboardState, chrome: &Chrome) -> &'static [Binding<Action>] {
    match (chrome.replay.is_some(), chrome.from_runs, state.view.events) {
        (false, _, false) if state.phase.is_live() => LIVE_KEYS,
        (false, _, false) => OVER_KEYS,
        (false, _, true) => LIVE_EVENTS_KEYS,
        (true, false, false) => REPLAY_KEYS,
        (true, false, true) => REPLAY_EVENTS_KEYS,
        (true, true, false) => REPLAY_FROM_RUNS_KEYS,
        (true, true, true) => REPLAY_EVENTS_FROM_RUNS_KEYS,
    }
}

/// The help overlay over the dashboard.
pub const HELP_KEYS: &[Binding<Action>] = &[Binding::new(&[
    Key::Char('?', Action::ToggleHelp),
    Key::Code(KeyCode::Esc, Action::ToggleHelp),
    Key::Char('q', Action::ToggleHelp),
])
.hint("? or Esc", "closes this help")];

const YES: Binding<Action> = Binding::new(&[
    Key::Char('y', Action::ConfirmQuit),
    Key::Char('Y', Action::ConfirmQuit),
]);
const NO: Binding<Action> = Binding::new(&[
    Key::Char('n', Action::CancelQuit),
    Key::Char('N', Action::CancelQuit),
    Key::Code(KeyCode::Esc, Action::CancelQuit),
])
.hint("n", "no");

/// The question before quitting a run that trains in its own process.
pub const QUIT_OR_DETACH_KEYS: &[Binding<Action>] = &[
    YES.hint("y", "stop it"),
    Binding::new(&[
        Key::Char('d', Action::Detach),
        Key::Char('D', Action::Detach),
    ])
    .hint("d", "leave it training"),
    NO,
];

/// The question before quitting a live run.
pub const QUIT_KEYS: &[Binding<Action>] = &[YES.hint("y", "yes"), NO];

/// Draw the whole screen into `buf` over `area`.
pub fn render(state: &DashboardState, chrome: &Chrome, area: Rect, buf: &mut Buffer) {
    let theme = state.view.theme;
    if overlay::too_small(area, &theme, buf) {
        return;
    }
    let [title, body, status_row, hint_row] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    status::title_bar(state, title, buf);
    if state.view.events {
        events::render(state, body, buf);
    } else {
        panes(state, body, buf);
    }
    status::status_bar(state, status_row, buf);
    if chrome.picture {
        status::caption(state, &theme, hint_row, buf);
        return;
    }

    let table = screen_keys(state, chrome);
    let at = chrome
        .replay
        .map(|pos| format!("{}/{}", pos.index, pos.count));
    let items: Vec<(&str, &str)> = match &at {
        Some(at) => [("replay", at.as_str())]
            .into_iter()
            .chain(keys::short_hints(table))
            .collect(),
        None if state.phase.is_live() => {
            let wording = if state.phase == Phase::Paused {
                Wording::On
            } else {
                Wording::Short
            };
            keys::hints(table, |_| Some(wording))
        }
        // Over (or not yet started): nothing to send to the trainer, which
        // leaves room to spell the rest out.
        None => keys::hints(table, |b| {
            (!b.actions().any(Action::controls_trainer)).then_some(Wording::Long)
        }),
    };
    overlay::hints(&items, 2, &theme, hint_row, buf);

    if chrome.help {
        overlay::help("keys", table, HELP_KEYS, &theme, area, buf);
    }
    if chrome.confirm_quit {
        overlay::confirm(
            "Training is still running. Stop it and quit?",
            if chrome.detachable {
                QUIT_OR_DETACH_KEYS
            } else {
                QUIT_KEYS
            },
            &theme,
            area,
            buf,
        );
    }
}

/// The pane grid: Loss · Device · Host on top, PCIe · Activations below.
fn panes(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    // Four sevenths on top: at 80×24 that gives the memory panes the rows
    // their ledgers need, and the bottom panes still fit their content.
    let top_h = ((area.height as u32 + 1) * 4 / 7) as u16;
    let [top, bottom] =
        Layout::vertical([Constraint::Length(top_h), Constraint::Min(0)]).areas(area);
    // A wide terminal gives the extra columns to the loss history.
    let loss_pct = if area.width >= 160 { 50 } else { 44 };
    let side = (100 - loss_pct) / 2;
    let [loss_a, device_a, host_a] = Layout::horizontal([
        Constraint::Percentage(loss_pct),
        Constraint::Percentage(side),
        Constraint::Percentage(side),
    ])
    .areas(top);
    let [traffic_a, act_a] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    let grid: [(Pane, Rect); 5] = [
        (loss::render, loss_a),
        (device::render, device_a),
        (host::render, host_a),
        (traffic::render, traffic_a),
        (activations::render, act_a),
    ];
    for (pane, r) in grid {
        pane(state, r, buf);
    }
}
