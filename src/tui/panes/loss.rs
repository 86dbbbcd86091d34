//! Loss: the raw per-step loss as dots, its smoothed (EMA) curve in
//! braille, the validation loss (every `train.eval_every` steps) as its own
//! line of bars, test evaluations marked as blocks on the curve. Each has its
//! own glyph, so they read apart without colour. `y` switches to a log scale,
//! `t` puts wall time on the x axis instead of steps.

use super::frame;
use crate::event::EvalSplit;
use crate::tui::state::DashboardState;
use crate::tui::units::{duration, value};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph, Widget};

/// The glyphs each series is drawn with, named again in the legend: they
/// tell the series apart where colour does not (`NO_COLOR`).
pub const RAW_GLYPH: &str = "•";
pub const EMA_GLYPH: &str = "⠤";
pub const EVAL_GLYPH: &str = "█";
pub const VAL_GLYPH: &str = "▄";

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
    // The validation loss at each validation, placed at its step.
    let validation: Vec<(f64, f64)> = state
        .evals
        .iter()
        .filter(|e| e.split == EvalSplit::Validation)
        .filter_map(|e| {
            let at = state.steps.iter().rev().find(|p| p.step <= e.step)?;
            Some((x_of(at.step, at.wall_ms), y_of(e.loss?)?))
        })
        .collect();
    let evals: Vec<(f64, f64)> = state
        .evals
        .iter()
        .filter(|e| e.split == EvalSplit::Test)
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

    // Caption: the latest figures, each after its series' glyph, so the
    // legend reads without colour. It takes a second row when one is too
    // narrow; an item never breaks.
    let w = inner.width as usize;
    let mut items: Vec<Vec<Span>> = vec![
        vec![
            Span::styled(format!("{RAW_GLYPH} raw "), theme.raw()),
            Span::styled(value(last.loss), theme.value()),
        ],
        vec![
            Span::styled(format!("{EMA_GLYPH} EMA "), theme.smoothed()),
            Span::styled(value(last.ema), theme.value()),
        ],
    ];
    let last_val = state
        .evals
        .iter()
        .rev()
        .find(|e| e.split == EvalSplit::Validation)
        .and_then(|e| Some((e.step, e.loss?)));
    if let Some((step, loss)) = last_val {
        items.push(vec![
            Span::styled(format!("{VAL_GLYPH} val "), theme.eval()),
            Span::styled(value(loss), theme.value()),
            Span::styled(format!(" @{step}"), theme.source()),
        ]);
    }
    if let Some(e) = state
        .evals
        .iter()
        .rev()
        .find(|e| e.split == EvalSplit::Test)
    {
        let mut spans = vec![Span::styled(format!("{EVAL_GLYPH} eval"), theme.eval())];
        let mut len = 6;
        let at = format!(" @{}", e.step);
        for (i, (k, v)) in e.metrics.iter().enumerate() {
            let item = format!(" {k} {}", value(*v));
            // As many metrics as a row holds, always at least the first.
            if i > 0 && len + item.chars().count() + at.len() > w {
                break;
            }
            len += item.chars().count();
            spans.push(Span::styled(item, theme.text()));
        }
        if len + at.len() <= w {
            spans.push(Span::styled(at, theme.source()));
        }
        items.push(spans);
    }
    let caption = fit_items(items, w, theme);
    let caption_rows = caption.len() as u16;
    for (i, l) in caption.into_iter().enumerate() {
        Paragraph::new(l).render(
            Rect {
                y: inner.y + i as u16,
                height: 1,
                ..inner
            },
            buf,
        );
    }
    if inner.height <= caption_rows + 2 {
        return;
    }
    let chart_area = Rect {
        y: inner.y + caption_rows,
        height: inner.height - caption_rows,
        ..inner
    };

    let (x_lo, x_hi) = bounds(raw.iter().map(|p| p.0));
    let (mut y_lo, mut y_hi) = bounds(raw.iter().chain(&ema).chain(&validation).map(|p| p.1));
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
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(theme.raw())
            .data(&raw),
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.smoothed())
            .data(&ema),
        Dataset::default()
            .marker(Marker::Bar)
            .graph_type(GraphType::Line)
            .style(theme.eval())
            .data(&validation),
        Dataset::default()
            .marker(Marker::Block)
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

/// Legend items on as few rows as hold them (two at most), joined by ` · `.
fn fit_items<'a>(
    items: Vec<Vec<Span<'a>>>,
    w: usize,
    theme: &crate::tui::theme::Theme,
) -> Vec<Line<'a>> {
    let len = |it: &Vec<Span>| -> usize { it.iter().map(|s| s.content.chars().count()).sum() };
    let mut rows: Vec<(usize, Vec<Span>)> = vec![(0, Vec::new())];
    for it in items {
        let n = len(&it);
        let fits = rows
            .last()
            .is_some_and(|(used, _)| *used == 0 || used + 3 + n <= w);
        if !fits && rows.len() < 2 {
            rows.push((0, Vec::new()));
        }
        if let Some((used, spans)) = rows.last_mut() {
            if *used > 0 {
                spans.push(Span::styled(" · ", theme.source()));
                *used += 3;
            }
            *used += n;
            spans.extend(it);
        }
    }
    rows.into_iter().map(|(_, s)| Line::from(s)).collect()
}

/// Min and max of the values, widened when they coincide so the chart has
/// a non-empty range to draw in.
pub(crate) fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
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
