//! The title bar (run · adapter · model · device, progress on the right)
//! and the status bar (phase, last checkpoint, last message, or the
//! Finished summary once the run is over).

use super::clip;
use crate::tui::state::{DashboardState, Phase};
use crate::tui::units::{bytes_short, count, duration, value};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

/// Progress as shown on the right of the title bar. Rate and ETA are for a
/// run that is training: a paused one says so instead.
pub fn progress(state: &DashboardState) -> String {
    let mut parts = vec![format!("step {}/{}", state.step(), state.total_steps())];
    match state.phase {
        Phase::Paused => parts.push("paused".into()),
        Phase::Running => {
            if let Some(tps) = state.tokens_per_s() {
                parts.push(format!("{} tok/s", count(tps)));
            }
            if let Some(eta) = state.eta_s() {
                parts.push(format!("ETA {}", duration(eta)));
            }
        }
        _ => {
            if let Some(tps) = state.tokens_per_s() {
                parts.push(format!("{} tok/s", count(tps)));
            }
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

/// The status row: the phase, then what matters most about it, as many
/// whole items as fit beside the note (which is what the user just asked
/// for); an item is left out rather than cut.
pub fn status_bar(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let (mark, style) = match state.phase {
        Phase::Waiting => ("…", theme.source()),
        Phase::Running => ("●", theme.ok()),
        Phase::Paused => ("‖", theme.warn()),
        Phase::Finished => ("✓", theme.ok()),
        Phase::Stopped => ("■", theme.warn()),
        Phase::Failed => ("✗", theme.error()),
        Phase::Unfinished => ("○", theme.warn()),
    };
    let head = format!(" {mark} {}", state.phase.label());
    let note = state
        .view
        .note
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| format!(" {} ", clip_note(n, area.width as usize / 2)));
    let w = area.width as usize;
    let room =
        w.saturating_sub(head.chars().count() + note.as_ref().map_or(0, |n| n.chars().count()));
    let mut text = String::new();
    for (part, prose) in status_parts(state, area.width) {
        let add = format!(" · {part}");
        let used = text.chars().count();
        if used + add.chars().count() <= room {
            text.push_str(&add);
        } else if prose && used + 12 <= room {
            // An error or message is words, not a figure: shortened, it
            // still says what went wrong.
            text.push_str(&clip(&add, room - used));
        }
    }
    Paragraph::new(Line::from(vec![
        Span::styled(head, style),
        Span::styled(text, theme.text()),
    ]))
    .render(area, buf);
    if let Some(note) = note {
        let n = note.chars().count() as u16;
        let x = area.x + area.width.saturating_sub(n);
        Paragraph::new(Span::styled(note, theme.warn()))
            .render(Rect::new(x, area.y, n.min(area.width), 1), buf);
    }
}

/// A note in at most `max` columns. A note that ends in a path (`screenshot
/// → runs/…/step-30.svg`) keeps the path's end, where the file's name is.
fn clip_note(note: &str, max: usize) -> String {
    let n = note.chars().count();
    if n <= max {
        return note.to_string();
    }
    match note.split_once(" → ") {
        Some((what, path)) if what.chars().count() + 6 < max => {
            let keep = max - what.chars().count() - 4;
            let tail: String = path.chars().skip(path.chars().count() - keep).collect();
            format!("{what} → …{tail}")
        }
        _ => clip(note, max),
    }
}

/// The status row's items after the phase, most important first, each
/// with whether it is prose that may be shortened.
fn status_parts(state: &DashboardState, width: u16) -> Vec<(String, bool)> {
    let mut parts: Vec<String> = Vec::new();
    let mut prose: Vec<String> = Vec::new();
    match state.phase {
        Phase::Running if !progress_fits(state, width) => {
            if let Some(tps) = state.tokens_per_s() {
                parts.push(format!("{} tok/s", count(tps)));
            }
            if let Some(eta) = state.eta_s() {
                parts.push(format!("ETA {}", duration(eta)));
            }
        }
        Phase::Paused => parts.push(format!("at step {}", state.step())),
        Phase::Stopped => parts.push(format!(
            "at step {} of {}; resume with meft run --resume",
            state.step(),
            state.total_steps()
        )),
        Phase::Unfinished => parts.push(format!(
            "the log ends at step {} of {} with no finish recorded",
            state.step(),
            state.total_steps()
        )),
        _ => {}
    }
    match (state.phase, &state.summary, &state.failure) {
        (Phase::Finished, Some(s), _) => {
            parts.push(format!("{} steps in {}", s.steps, duration(s.wall_s)));
            parts.push(format!(
                "loss {} → {}",
                value(s.first_loss),
                value(s.final_loss)
            ));
            for (k, v) in &s.metrics {
                parts.push(format!("{k} {}", value(*v)));
            }
            parts.push(format!("{} tok/s", count(s.tokens_per_s)));
            parts.push(format!("H→D {}/step", bytes_short(s.h2d_per_step as u64)));
        }
        (Phase::Failed, _, Some((step, err))) => {
            parts.push(format!("at step {step}"));
            prose.push(err.clone());
        }
        _ => {}
    }
    if let Some((step, _)) = &state.last_checkpoint {
        parts.push(format!("saved step {step}"));
    }
    if state.phase.is_live() {
        if let Some(m) = &state.last_message {
            prose.push(m.clone());
        }
    }
    let mut out: Vec<(String, bool)> = parts.into_iter().map(|p| (p, false)).collect();
    // An error goes right after the step it happened at.
    let at = usize::from(state.phase == Phase::Failed).min(out.len());
    let failed = state.phase == Phase::Failed;
    for (i, p) in prose.into_iter().enumerate() {
        if failed && i == 0 {
            out.insert(at, (p, true));
        } else {
            out.push((p, true));
        }
    }
    out
}

/// A picture's caption, where the key hints would be: the run, the step,
/// training time to that step, when it started and the machine it ran on
/// (as recorded by the run), as many whole items as fit.
pub fn caption(
    state: &DashboardState,
    theme: &crate::tui::theme::Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let w = area.width as usize;
    let mut text = String::new();
    for item in caption_items(state) {
        let add = if text.is_empty() {
            format!(" {item}")
        } else {
            format!(" · {item}")
        };
        if text.chars().count() + add.chars().count() <= w {
            text.push_str(&add);
        }
    }
    Paragraph::new(Span::styled(text, theme.source())).render(area, buf);
}

fn caption_items(state: &DashboardState) -> Vec<String> {
    let mut items = Vec::new();
    match &state.info {
        Some(i) => items.push(i.run_id.clone()),
        None => items.push("no run recorded".into()),
    }
    items.push(format!("step {}/{}", state.step(), state.total_steps()));
    if let Some(p) = state.steps.last() {
        items.push(format!("{} of training", duration(p.wall_ms / 1000.0)));
    }
    if let Some(i) = &state.info {
        if i.started_unix > 0 {
            items.push(format!("started {}", utc_minute(i.started_unix)));
        }
        items.push(match &i.machine {
            Some(m) => m.clone(),
            None => "machine not recorded".into(),
        });
    }
    items
}

/// `2025-01-01 12:00 UTC` from seconds since the Unix epoch.
pub fn utc_minute(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = crate::units::civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_minute;

    #[test]
    fn dates_read_in_utc() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_735_732_800), "2025-01-01 12:00 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
    }
}
