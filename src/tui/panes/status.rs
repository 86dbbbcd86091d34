//! The title bar (run · adapter · model · device, progress on the right)
//! and the status bar (phase, last checkpoint, last message, or the
//! Finished summary once the run is over).

use super::clip;
use crate::tui::state::{DashboardState, Phase};
use crate::tui::units::{bytes_f, count, duration, value};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

/// Progress as shown on the right of the title bar.
pub fn progress(state: &DashboardState) -> String {
    let mut parts = vec![format!("step {}/{}", state.step(), state.total_steps())];
    if let Some(tps) = state.tokens_per_s() {
        parts.push(format!("{} tok/s", count(tps)));
    }
    if state.phase.is_live() {
        if let Some(eta) = state.eta_s() {
            parts.push(format!("ETA {}", duration(eta)));
        }
    }
    parts.join(" · ")
}

fn identity(state: &DashboardState) -> String {
    match &state.info {
        Some(i) => format!(" {} · {} · {} · {}", i.name, i.adapter, i.model, i.device),
        None => " meft · waiting for the run to start".to_string(),
    }
}

/// Whether the whole progress text fits on the title row beside the run's identity.
fn progress_fits(state: &DashboardState, width: u16) -> bool {
    identity(state).chars().count() + progress(state).chars().count() + 2 <= width as usize
}

pub fn title_bar(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let left = identity(state);
    // On a narrow row the run's identity comes first; rate and ETA move
    // to the status bar.
    let right = if progress_fits(state, area.width) {
        format!("{} ", progress(state))
    } else {
        format!("step {}/{} ", state.step(), state.total_steps())
    };
    two_sided(&left, &right, theme.title_bar(), area, buf);
}

/// Left text, right text, one style; the left side gives way when the row
/// is too narrow for both.
pub fn two_sided(left: &str, right: &str, style: Style, area: Rect, buf: &mut Buffer) {
    buf.set_style(area, style);
    let w = area.width as usize;
    let r = right.chars().count().min(w);
    let l = clip(left, w.saturating_sub(r + 1));
    let pad = w.saturating_sub(l.chars().count() + r);
    Paragraph::new(Line::from(vec![
        Span::raw(l),
        Span::raw(" ".repeat(pad)),
        Span::raw(clip(right, w)),
    ]))
    .style(style)
    .render(area, buf);
}

pub fn status_bar(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let (mark, style) = match state.phase {
        Phase::Waiting => ("…", theme.source()),
        Phase::Running => ("●", theme.ok()),
        Phase::Paused => ("‖", theme.warn()),
        Phase::Finished => ("✓", theme.ok()),
        Phase::Failed => ("✗", theme.error()),
    };
    let mut spans = vec![Span::styled(
        format!(" {mark} {}", state.phase.label()),
        style,
    )];
    let mut parts: Vec<String> = Vec::new();
    if state.phase.is_live() && !progress_fits(state, area.width) {
        if let Some(tps) = state.tokens_per_s() {
            parts.push(format!("{} tok/s", count(tps)));
        }
        if let Some(eta) = state.eta_s() {
            parts.push(format!("ETA {}", duration(eta)));
        }
    }
    match (state.phase, &state.summary, &state.failure) {
        (Phase::Finished, Some(s), _) => {
            parts.push(format!("{} steps in {}", s.steps, duration(s.wall_s)));
            parts.push(format!(
                "loss {} → {}",
                value(s.first_loss),
                value(s.final_loss)
            ));
            parts.push(format!("{} tok/s", count(s.tokens_per_s)));
            parts.push(format!("H→D {}/step", bytes_f(s.h2d_per_step)));
            for (k, v) in s.metrics.iter().take(2) {
                parts.push(format!("{k} {}", value(*v)));
            }
        }
        (Phase::Failed, _, Some((step, err))) => {
            parts.push(format!("at step {step}: {err}"));
        }
        _ => {}
    }
    if let Some((step, _)) = &state.last_checkpoint {
        parts.push(format!("saved step {step}"));
    }
    if state.phase != Phase::Finished {
        if let Some(m) = &state.last_message {
            parts.push(m.clone());
        }
    }
    if !parts.is_empty() {
        spans.push(Span::styled(
            format!(" · {}", parts.join(" · ")),
            theme.text(),
        ));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
    // A note (e.g. where a screenshot went) is what the user just asked
    // for, so it is drawn over the end of the row rather than cut off.
    if let Some(note) = state.view.note.as_deref().filter(|n| !n.is_empty()) {
        let w = area.width as usize;
        let note = format!(" {} ", clip(note, w * 2 / 3));
        let n = note.chars().count() as u16;
        let x = area.x + area.width.saturating_sub(n);
        Paragraph::new(Span::styled(note, theme.warn()))
            .render(Rect::new(x, area.y, n.min(area.width), 1), buf);
    }
}
