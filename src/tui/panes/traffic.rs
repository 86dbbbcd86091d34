//! PCIe bytes per step: what the counting link moved host→device and
//! device→host, by kind, with its recent history, against the planner's
//! dense-offload figure and NVML's PCIe counters when a driver reports them.

use super::{bars_with_axes_exact, frame, AxisLabels};
use crate::event::Kind;
use crate::tui::state::DashboardState;
use crate::tui::units::{bytes, bytes_f, bytes_short, resample, spark};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

/// One direction: name, bytes this step, history, style, bytes by kind.
type Section<'a> = (&'a str, u64, &'a [f64], Style, Vec<(&'a str, u64)>);

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let inner = frame("PCIe bytes / step", theme, area, buf);
    let Some(t) = state.last_traffic() else {
        Paragraph::new(Span::styled("waiting for the first step…", theme.source()))
            .render(inner, buf);
        return;
    };
    let w = inner.width as usize;

    let h2d_hist: Vec<f64> = state.steps.iter().map(|p| p.h2d as f64).collect();
    let d2h_hist: Vec<f64> = state.steps.iter().map(|p| p.d2h as f64).collect();

    let mut tail: Vec<Line> = Vec::new();
    let moved = t.h2d() + t.d2h();
    match state.planned.dense_offload {
        Some(dense) if dense > 0 => {
            let ratio = moved as f64 / dense as f64;
            let head = vec![
                Span::styled("planned ", theme.source()),
                Span::styled(format!("dense offload {}/step", bytes(dense)), theme.text()),
            ];
            let verdict = vec![
                Span::styled(" → MEFT moves ", theme.label()),
                Span::styled(format!("{ratio:.3}×"), theme.value()),
            ];
            let wide: usize = head
                .iter()
                .chain(verdict.iter())
                .map(|s| s.content.chars().count())
                .sum();
            if wide <= w {
                tail.push(Line::from([head, verdict].concat()));
            } else {
                tail.push(Line::from(head));
                let mut v = vec![Span::raw("       ")];
                v.extend(verdict);
                tail.push(Line::from(v));
            }
        }
        _ => tail.push(Line::from(Span::styled(
            "planned dense offload: not in the plan",
            theme.source(),
        ))),
    }
    if let Some(c) = state.last_step.as_ref().and_then(|s| s.row_cache) {
        let rate = c
            .hit_rate()
            .map_or("–".into(), |h| format!("{:.0} %", 100.0 * h));
        tail.push(Line::from(vec![
            Span::styled("row cache ", theme.label()),
            Span::styled(format!("hits {rate}"), theme.value()),
            Span::styled(
                format!(" · {} crossed", crate::units::count(c.misses as f64)),
                theme.text(),
            ),
        ]));
    }
    if let Some(tel) = &state.telemetry {
        let pcie: Vec<String> = tel
            .gpus
            .iter()
            .filter_map(|g| {
                let tx = g.pcie_tx?;
                let rx = g.pcie_rx.unwrap_or(0);
                Some(format!(
                    "GPU{} tx {}/s rx {}/s",
                    g.index,
                    bytes_f(tx as f64),
                    bytes_f(rx as f64)
                ))
            })
            .collect();
        if !pcie.is_empty() {
            tail.push(Line::from(vec![
                Span::styled("NVML    ", theme.source()),
                Span::styled(pcie.join(" · "), theme.text()),
            ]));
        }
    }

    // Rows beyond the text become history bars with axes, split between
    // directions; more than four rows of bars adds weight, not information.
    let text_rows = 4 + tail.len() as u16;
    let spare = inner.height.saturating_sub(text_rows);
    let chart_rows = if spare >= 6 { (spare / 2).min(5) } else { 0 };

    let mut y = inner.y;
    let bottom = inner.y + inner.height;
    let put = |line: Line, y: &mut u16, buf: &mut Buffer| {
        if *y < bottom {
            Paragraph::new(line).render(Rect::new(inner.x, *y, inner.width, 1), buf);
            *y += 1;
        }
    };
    let sections: [Section; 2] = [
        (
            "H→D",
            t.h2d(),
            &h2d_hist,
            theme.h2d(),
            vec![
                ("rows", t[Kind::Rows]),
                ("map", t[Kind::Map]),
                ("ids", t[Kind::Ids]),
            ],
        ),
        (
            "D→H",
            t.d2h(),
            &d2h_hist,
            theme.d2h(),
            vec![
                ("grads", t[Kind::Grads]),
                ("queries", t[Kind::Queries]),
                ("routing", t[Kind::Routing]),
            ],
        ),
    ];
    for (name, total, hist, style, kinds) in sections {
        let head = format!("{name} {:>8} ", bytes(total));
        let mut spans = vec![
            Span::styled("link ", theme.source()),
            Span::styled(head.clone(), theme.value()),
        ];
        if chart_rows == 0 {
            // No room for bars: the recent history rides on the same row.
            let room = w.saturating_sub(head.chars().count() + 5);
            let recent = resample(&hist[hist.len().saturating_sub(room)..], room);
            let max = recent.iter().copied().fold(0.0, f64::max);
            spans.push(Span::styled(spark(&recent, max), style));
        }
        put(Line::from(spans), &mut y, buf);
        put(kinds_line(&kinds, w, theme), &mut y, buf);
        if chart_rows > 0 && y + chart_rows <= bottom {
            // The newest steps, one column each, as many as the pane holds.
            let cols = w.saturating_sub(6);
            let shown = &state.steps[state.steps.len().saturating_sub(cols)..];
            let recent = &hist[hist.len().saturating_sub(cols)..];
            let max = recent.iter().copied().fold(0.0, f64::max);
            let labels = AxisLabels {
                y_top: bytes_short(max as u64),
                x_left: shown.first().map_or(String::new(), |p| p.step.to_string()),
                x_mid: "step".into(),
                x_right: shown.last().map_or(String::new(), |p| p.step.to_string()),
            };
            let r = Rect::new(inner.x, y, inner.width, chart_rows);
            bars_with_axes_exact(recent, &labels, r, style, theme, buf);
            y += chart_rows;
        }
    }
    for line in tail {
        put(line, &mut y, buf);
    }
}

/// `     rows 6.1M · map 256K · ids 12K`: the kinds, biggest first, short
/// byte counts (the pane's unit). Narrow panes drop the separators and the
/// indent, then the smallest kinds, naming how many are left out; a value
/// is never cut.
fn kinds_line<'a>(
    kinds: &[(&str, u64)],
    width: usize,
    theme: &crate::tui::theme::Theme,
) -> Line<'a> {
    let mut sorted: Vec<&(&str, u64)> = kinds.iter().filter(|(_, b)| *b > 0).collect();
    sorted.sort_by_key(|k| std::cmp::Reverse(k.1));
    let items: Vec<String> = sorted
        .iter()
        .map(|(k, b)| format!("{k} {}", bytes_short(*b)))
        .collect();
    // As many kinds as fit, with the roomiest spacing that holds them.
    let mut text = String::new();
    'fit: for keep in (1..=items.len()).rev() {
        for (indent, sep) in [("     ", " · "), ("     ", " "), (" ", " ")] {
            let mut t = format!("{indent}{}", items[..keep].join(sep));
            if keep < items.len() {
                t.push_str(&format!(" +{} more", items.len() - keep));
            }
            if t.chars().count() <= width {
                text = t;
                break 'fit;
            }
        }
    }
    Line::from(Span::styled(text, theme.label()))
}

#[cfg(test)]
mod tests {
    use super::kinds_line;
    use crate::tui::theme::Theme;

    fn text(kinds: &[(&str, u64)], width: usize) -> String {
        kinds_line(kinds, width, &Theme::default())
            .spans
            .iter()
            .map(|s| s.content.to_string())
            .collect()
    }

    #[test]
    fn kinds_tighten_before_any_is_left_out() {
        let kinds = [
            ("grads", 13_107_200),
            ("queries", 2 << 20),
            ("routing", 256 << 10),
        ];
        assert_eq!(
            text(&kinds, 60),
            "     grads 12.5M · queries 2M · routing 256K"
        );
        assert_eq!(text(&kinds, 38), " grads 12.5M queries 2M routing 256K");
        assert_eq!(text(&kinds, 31), " grads 12.5M queries 2M +1 more");
        assert_eq!(text(&kinds, 30), "     grads 12.5M +2 more");
    }
}
