//! Events: what happened in the run besides its steps — evaluations with
//! their decoded samples (prompt, answer, gold, score), checkpoints,
//! pauses, warnings and errors — oldest first, newest at the bottom,
//! scrolled back with ↑↓ and PgUp/PgDn. Long text wraps between words
//! under its own column, so no value is ever cut.

use super::frame;
use crate::tui::state::{DashboardState, Happening, LogEntry};
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};
use std::collections::BTreeMap;

/// Width of the event-kind column: the longest kind, `checkpoint`.
const KIND_W: usize = 10;

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let width = area.width.saturating_sub(2) as usize;
    let lines = lines(state, width);
    let height = area.height.saturating_sub(3) as usize;
    let back = state
        .view
        .events_scroll
        .min(lines.len().saturating_sub(height));
    let end = lines.len() - back;
    let start = end.saturating_sub(height);
    let position = if lines.len() <= height {
        format!("{} events", state.log.len())
    } else if back == 0 {
        format!(
            "{} events · lines {}–{} of {}, newest",
            state.log.len(),
            start + 1,
            end,
            lines.len()
        )
    } else {
        format!(
            "{} events · lines {}–{} of {}",
            state.log.len(),
            start + 1,
            end,
            lines.len()
        )
    };
    let inner = frame(&format!("Events · {position}"), theme, area, buf);
    if inner.height == 0 {
        return;
    }
    let step_w = step_width(state);
    let header = Line::from(vec![
        Span::styled(format!("{:>step_w$}  ", "step"), theme.source()),
        Span::styled(format!("{:<KIND_W$}  ", "event"), theme.source()),
        Span::styled("detail", theme.source()),
    ]);
    Paragraph::new(header).render(Rect { height: 1, ..inner }, buf);
    if lines.is_empty() {
        let text = "none yet: evaluations, checkpoints, warnings and errors appear here";
        Paragraph::new(Span::styled(text, theme.source())).render(
            Rect::new(
                inner.x,
                inner.y + 1,
                inner.width,
                inner.height.saturating_sub(1),
            ),
            buf,
        );
        return;
    }
    for (i, line) in lines[start..end].iter().enumerate() {
        let y = inner.y + 1 + i as u16;
        if y >= inner.y + inner.height {
            break;
        }
        Paragraph::new(line.clone()).render(Rect::new(inner.x, y, inner.width, 1), buf);
    }
}

/// How many lines the log takes in a pane `width` columns wide (its frame included).
pub fn line_count(state: &DashboardState, width: u16) -> usize {
    lines(state, width.saturating_sub(2) as usize).len()
}

fn step_width(state: &DashboardState) -> usize {
    let max = state.log.iter().map(|e| e.step).max().unwrap_or(0);
    max.to_string().len().max(4)
}

/// Every entry as lines of at most `width` columns.
fn lines(state: &DashboardState, width: usize) -> Vec<Line<'static>> {
    let theme = &state.view.theme;
    let step_w = step_width(state);
    let indent = step_w + 2 + KIND_W + 2;
    let room = width.saturating_sub(indent).max(12);
    let mut out = Vec::new();
    for entry in &state.log {
        let (kind, style, rows) = describe(entry, theme);
        for (i, (label, text, text_style)) in rows.into_iter().enumerate() {
            // A labelled row (`prompt  …`) wraps under its text, not its label.
            let label_w = label.chars().count();
            for (j, piece) in wrap(&text, room.saturating_sub(label_w).max(8))
                .into_iter()
                .enumerate()
            {
                let mut spans = if i == 0 && j == 0 {
                    vec![
                        Span::styled(format!("{:>step_w$}  ", entry.step), theme.label()),
                        Span::styled(format!("{kind:<KIND_W$}  "), style),
                    ]
                } else {
                    vec![Span::raw(" ".repeat(indent))]
                };
                if j == 0 {
                    spans.push(Span::styled(label, theme.source()));
                } else {
                    spans.push(Span::raw(" ".repeat(label_w)));
                }
                spans.push(Span::styled(piece, text_style));
                out.push(Line::from(spans));
            }
        }
    }
    out
}

/// A detail row: its label (may be empty), its text and the text's style.
type Row = (&'static str, String, Style);

/// The kind column, its style, and the detail rows.
fn describe(entry: &LogEntry, theme: &Theme) -> (&'static str, Style, Vec<Row>) {
    let text = theme.text();
    match &entry.what {
        Happening::Started { resumed_from } => (
            "started",
            theme.ok(),
            vec![(
                "",
                match resumed_from {
                    Some(s) => format!("resumed from the checkpoint of step {s}"),
                    None => "training started".into(),
                },
                text,
            )],
        ),
        Happening::Eval {
            n,
            metrics,
            validation,
        } => (
            if *validation { "val" } else { "eval" },
            theme.eval(),
            vec![(
                "",
                format!("{} on {n} examples", metric_list(metrics, " · ")),
                theme.value(),
            )],
        ),
        Happening::Sample {
            prompt,
            answer,
            gold,
            scores,
        } => (
            "  sample",
            theme.eval(),
            vec![
                ("prompt  ", one_line(prompt), text),
                ("answer  ", one_line(answer), theme.value()),
                ("gold    ", one_line(gold), text),
                match scores {
                    Some(s) if !s.is_empty() => ("score   ", metric_list(s, " · "), theme.label()),
                    _ => (
                        "score   ",
                        "not recorded in this log".into(),
                        theme.source(),
                    ),
                },
            ],
        ),
        Happening::Checkpoint { path } => {
            ("checkpoint", theme.ok(), vec![("", path.clone(), text)])
        }
        Happening::Paused => (
            "paused",
            theme.warn(),
            vec![("", "paused by the user".into(), text)],
        ),
        Happening::Resumed => (
            "resumed",
            theme.ok(),
            vec![("", "training resumed".into(), text)],
        ),
        Happening::Warning(w) => {
            // The kind column already says it is a warning.
            let w = w.strip_prefix("warning: ").unwrap_or(w);
            ("warning", theme.warn(), vec![("", one_line(w), text)])
        }
        Happening::Stopped => (
            "stopped",
            theme.warn(),
            vec![(
                "",
                "stopped before the last step; a checkpoint was written".into(),
                text,
            )],
        ),
        Happening::Finished => (
            "finished",
            theme.ok(),
            vec![("", "the last step is done".into(), text)],
        ),
        Happening::Error(e) => ("error", theme.error(), vec![("", one_line(e), text)]),
    }
}

fn metric_list(metrics: &BTreeMap<String, f64>, sep: &str) -> String {
    metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Prompts and answers may hold line breaks; the pane shows them as ⏎.
fn one_line(s: &str) -> String {
    s.trim().replace("\r\n", " ⏎ ").replace('\n', " ⏎ ")
}

/// Break `text` between words into lines of at most `width` columns; a
/// word longer than a line (a path, say) is split where the line ends.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        let sep = usize::from(used > 0);
        if used + sep + word.len() <= width {
            if sep == 1 {
                line.push(' ');
            }
            line.extend(word);
            continue;
        }
        if used > 0 {
            out.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            out.push(word.drain(..width).collect());
        }
        line = word.into_iter().collect();
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_between_words_and_splits_long_ones() {
        assert_eq!(wrap("em 0.22 · f1 0.32", 9), vec!["em 0.22 ·", "f1 0.32"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 5), vec![""]);
    }
}
