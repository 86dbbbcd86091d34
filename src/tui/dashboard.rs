//! The dashboard screen: title bar, the five panes, the status bar and key
//! hints, laid out for anything from 80×24 up. Live runs and replays draw
//! the same screen; only the hint row and the overlays differ.

use crate::tui::overlay;
use crate::tui::panes::{activations, device, host, loss, status, traffic, Pane};
use crate::tui::state::{DashboardState, Phase};
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
}

pub const LIVE_KEYS: &[(&str, &str)] = &[
    ("space", "pause / resume training"),
    ("c", "write a checkpoint now"),
    ("e", "evaluate now"),
    ("s", "screenshot to <run>/screenshots/"),
    ("l", "loss: linear / log scale"),
    ("t", "loss: x axis steps / wall time"),
    ("[ ]", "activations: previous / next layer"),
    ("?", "this help"),
    ("q", "quit (asks while training runs)"),
];

pub const REPLAY_KEYS: &[(&str, &str)] = &[
    ("← →", "one step back / forward"),
    ("PgUp PgDn", "ten steps back / forward"),
    ("Home End", "first / last step"),
    ("s", "screenshot to <run>/screenshots/"),
    ("l", "loss: linear / log scale"),
    ("t", "loss: x axis steps / wall time"),
    ("[ ]", "activations: previous / next layer"),
    ("?", "this help"),
    ("q", "quit"),
];

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
    panes(state, body, buf);
    status::status_bar(state, status_row, buf);

    match chrome.replay {
        Some(pos) => {
            let at = format!("{}/{}", pos.index, pos.count);
            let items = [
                ("replay", at.as_str()),
                ("←→", "step"),
                ("PgUp/Dn", "±10"),
                ("Home/End", "ends"),
                ("s", "screenshot"),
                ("l", "log"),
                ("t", "time"),
                ("[ ]", "layer"),
                ("?", "help"),
                ("q", "quit"),
            ];
            overlay::hints(&items, 2, &theme, hint_row, buf);
        }
        None if state.phase.is_live() => {
            let pause = if state.phase == Phase::Paused {
                "resume"
            } else {
                "pause"
            };
            let items = [
                ("space", pause),
                ("c", "checkpoint"),
                ("e", "eval"),
                ("s", "screenshot"),
                ("l", "log"),
                ("t", "time"),
                ("[ ]", "layer"),
                ("?", "help"),
                ("q", "quit"),
            ];
            overlay::hints(&items, 2, &theme, hint_row, buf);
        }
        // Over (or not yet started): nothing to send to the trainer.
        None => {
            let items = [
                ("s", "screenshot"),
                ("l", "log scale"),
                ("t", "time axis"),
                ("[ ]", "layer"),
                ("?", "help"),
                ("q", "quit"),
            ];
            overlay::hints(&items, 2, &theme, hint_row, buf);
        }
    }

    if chrome.help {
        let keys = if chrome.replay.is_some() {
            REPLAY_KEYS
        } else {
            LIVE_KEYS
        };
        overlay::help("keys", keys, &theme, area, buf);
    }
    if chrome.confirm_quit {
        overlay::confirm(
            "Training is still running. Stop it and quit?",
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
    let [loss_a, device_a, host_a] = Layout::horizontal([
        Constraint::Percentage(44),
        Constraint::Percentage(28),
        Constraint::Percentage(28),
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
