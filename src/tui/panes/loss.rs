//! Loss: the raw per-step loss and its smoothed (EMA) curve in braille,
//! eval points marked on the curve. `l` switches to a log scale, `t` puts
//! wall time on the x axis instead of steps.

use super::frame;
use crate::tui::state::DashboardState;
use crate::tui::units::{duration, value};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph, Widget};

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let title = match (state.view.log_loss, state.view.wall_time_axis) {
        (false, false) => "Loss",
        (true, false) => "Loss · log",
        (false, true) => "Loss · by time",
        (true, true) => "Loss · log · by time",
    };
    let inner = frame(title, theme, area, buf);
    if inner.height < 3 || inner.width < 10 {
        return;
    }
    let Some(last) = state.steps.last() else {
        Paragraph::new(Span::styled("waiting for the first step…", theme.source()))
            .render(inner, buf);
        return;
    };

    let log = state.view.log_loss;
    // Log of a non-positive loss is undefined; such points are left out.
    let y_of = |v: f64| -> Option<f64> {
        if !v.is_finite() {
            None
        } else if log {
            (v > 0.0).then(|| v.log10())
        } else {
            Some(v)
        }
    };
    let by_time = state.view.wall_time_axis;
    let x_of = |step: u64, wall_ms: f64| {
        if by_time {
            wall_ms / 1000.0
        } else {
            step as f64
        }
    };
    let raw: Vec<(f64, f64)> = state
        .steps
        .iter()
        .filter_map(|p| Some((x_of(p.step, p.wall_ms), y_of(p.loss)?)))
        .collect();
    let ema: Vec<(f64, f64)> = state
        .steps
        .iter()
        .filter_map(|p| Some((x_of(p.step, p.wall_ms), y_of(p.ema)?)))
        .collect();
    let evals: Vec<(f64, f64)> = state
        .evals
        .iter()
        .filter_map(|e| {
            let at = state.steps.iter().rev().find(|p| p.step <= e.step)?;
            let v = e
                .metrics
                .get("loss")
                .or_else(|| e.metrics.get("eval_loss"))
                .copied()
                .unwrap_or(at.ema);
            Some((x_of(at.step, at.wall_ms), y_of(v)?))
        })
        .collect();

    // Caption: the latest figures, each in its series' style.
    let mut caption = vec![
        Span::styled("raw ", theme.raw()),
        Span::styled(value(last.loss), theme.value()),
        Span::styled(" · ", theme.source()),
        Span::styled("EMA ", theme.smoothed()),
        Span::styled(value(last.ema), theme.value()),
    ];
    if let Some(e) = state.evals.last() {
        // As many metrics as the row holds, always at least the first.
        let used: usize = caption.iter().map(|s| s.content.chars().count()).sum();
        let room = (inner.width as usize).saturating_sub(used + 5);
        let at = format!(" @{}", e.step);
        let mut shown = String::new();
        for (k, v) in &e.metrics {
            let item = format!(
                "{}{k} {}",
                if shown.is_empty() { "" } else { " " },
                value(*v)
            );
            if !shown.is_empty() && shown.chars().count() + item.chars().count() + at.len() > room {
                break;
            }
            shown.push_str(&item);
        }
        if shown.chars().count() + at.len() <= room {
            shown.push_str(&at);
        }
        caption.push(Span::styled(" · ", theme.source()));
        caption.push(Span::styled("● ", theme.eval()));
        caption.push(Span::styled(shown, theme.text()));
    }
    Paragraph::new(Line::from(caption)).render(Rect { height: 1, ..inner }, buf);
    let chart_area = Rect {
        y: inner.y + 1,
        height: inner.height - 1,
        ..inner
    };

    let (x_lo, x_hi) = bounds(raw.iter().map(|p| p.0));
    let (mut y_lo, mut y_hi) = bounds(raw.iter().chain(ema.iter()).map(|p| p.1));
    let pad = ((y_hi - y_lo) * 0.05).max(1e-9);
    y_lo -= pad;
    y_hi += pad;
    let y_label = |y: f64| {
        let v = if log { 10f64.powf(y) } else { y };
        Span::styled(value(v), theme.label())
    };
    let x_label = |x: f64| {
        let s = if by_time {
            duration(x)
        } else {
            format!("{x:.0}")
        };
        Span::styled(s, theme.label())
    };
    let x_title = if by_time { "time" } else { "step" };
    let datasets = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.raw())
            .data(&raw),
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.smoothed())
            .data(&ema),
        Dataset::default()
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(theme.eval())
            .data(&evals),
    ];
    Chart::new(datasets)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds([x_lo, x_hi])
                .style(theme.border())
                .labels(vec![
                    x_label(x_lo),
                    Span::styled(x_title, theme.source()),
                    x_label(x_hi),
                ]),
        )
        .y_axis(
            Axis::default()
                .bounds([y_lo, y_hi])
                .style(theme.border())
                .labels(vec![y_label(y_lo), y_label(y_hi)]),
        )
        .render(chart_area, buf);
}

/// Min and max of the values, widened when they coincide so the chart has
/// a non-empty range to draw in.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}
