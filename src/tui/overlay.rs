//! What sits on top of a screen: the key-hint row, the help overlay, the
//! quit confirmation, and the "terminal too small" notice.

use crate::tui::keys::{self, Binding};
use crate::tui::panes::titled_box;
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Widget, Wrap};

/// The smallest terminal every screen is laid out for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// Draw the notice and return true when `area` is below 80×24.
pub fn too_small(area: Rect, theme: &Theme, buf: &mut Buffer) -> bool {
    if area.width >= MIN_WIDTH && area.height >= MIN_HEIGHT {
        return false;
    }
    let text = vec![
        Line::from(Span::styled("terminal too small", theme.error())),
        Line::from(format!(
            "need {MIN_WIDTH}×{MIN_HEIGHT}, have {}×{}",
            area.width, area.height
        )),
        Line::from(Span::styled("resize, or q to quit", theme.source())),
    ];
    let y = area.y + area.height.saturating_sub(3) / 2;
    Paragraph::new(text)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true })
        .render(Rect::new(area.x, y, area.width, area.height.min(3)), buf);
    true
}

/// `key action · key action · …`, dropping hints from the middle of the
/// list when the row is narrow; the last `keep` hints always stay.
pub fn hints(items: &[(&str, &str)], keep: usize, theme: &Theme, area: Rect, buf: &mut Buffer) {
    // " " + "key action" items joined by " · ".
    let width = |it: &[(&str, &str)]| -> usize {
        it.iter()
            .map(|(k, a)| k.chars().count() + a.chars().count() + 1)
            .sum::<usize>()
            + 3 * it.len().saturating_sub(1)
            + 1
    };
    let keep = keep.min(items.len());
    let (head, tail) = items.split_at(items.len() - keep);
    let mut shown: Vec<(&str, &str)> = head.to_vec();
    let joined = |head: &[(&str, &str)]| {
        let both: Vec<(&str, &str)> = head.iter().chain(tail.iter()).copied().collect();
        width(&both)
    };
    while !shown.is_empty() && joined(&shown) > area.width as usize {
        shown.pop();
    }
    shown.extend_from_slice(tail);
    let mut spans = vec![Span::raw(" ")];
    for (i, (k, a)) in shown.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", theme.source()));
        }
        spans.push(Span::styled(k.to_string(), theme.key()));
        spans.push(Span::styled(format!(" {a}"), theme.label()));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

/// A centred box of `w`×`h` (clamped to `area`) with a title; returns its inner area.
pub fn dialog(title: &str, w: u16, h: u16, theme: &Theme, area: Rect, buf: &mut Buffer) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    Clear.render(r, buf);
    titled_box(title, theme.pane_title(), theme, r, buf)
}

/// The help overlay: one row per binding of `table`, then how to close it
/// (the hint of `close`, the overlay's own table).
pub fn help<A>(
    title: &str,
    table: &[Binding<A>],
    close: &[Binding<A>],
    theme: &Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let rows = keys::help_rows(table);
    // The frame, the rows, and the line that says how to close it.
    let h = rows.len() as u16 + 3;
    let inner = dialog(title, 60, h, theme, area, buf);
    let mut lines: Vec<Line> = rows
        .iter()
        .map(|(k, a)| {
            Line::from(vec![
                Span::styled(format!(" {k:<12}"), theme.key()),
                Span::styled(a.to_string(), theme.text()),
            ])
        })
        .collect();
    for (k, a) in keys::short_hints(close) {
        lines.push(Line::from(Span::styled(
            format!(" {k} {a}"),
            theme.source(),
        )));
    }
    Paragraph::new(lines).render(inner, buf);
}

/// A yes/no question in a small box, answered with the keys of `table`.
pub fn confirm<A>(
    question: &str,
    table: &[Binding<A>],
    theme: &Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let inner = dialog("quit?", 50, 5, theme, area, buf);
    let mut answers = Vec::new();
    for (i, (k, a)) in keys::short_hints(table).into_iter().enumerate() {
        if i > 0 {
            answers.push(Span::styled(" · ", theme.label()));
        }
        answers.push(Span::styled(k, theme.key()));
        answers.push(Span::styled(format!(" {a}"), theme.label()));
    }
    let lines = vec![Line::from(question.to_string()), Line::from(answers)];
    Paragraph::new(lines)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true })
        .render(inner, buf);
}
