//! Activations of the selected layer: how often each neuron was picked
//! (hot → cold), the histogram of kept activation values, and across layers
//! the union size |U| and β = |U| / picks from the latest step. Layers are
//! numbered from 1, as people count them.

use super::{bars_with_axes, frame, AxisLabels};
use crate::event::HistogramEvent;
use crate::tui::dashboard::LAYER;
use crate::tui::state::DashboardState;
use crate::tui::theme::Theme;
use crate::tui::units::{count, fit_width, spark, value};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

/// Columns one layer takes in the per-layer table.
const LAYER_COL: usize = 6;

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let layers = state.layers();
    let selected = state.selected_layer();
    let title = match selected {
        Some(l) => {
            let keys = LAYER.hint.map_or("", |h| h.keys);
            format!("Activations · layer {}/{}  {keys}", l + 1, layers.len())
        }
        None => "Activations".to_string(),
    };
    let inner = frame(&title, theme, area, buf);
    if inner.height == 0 || inner.width < 8 {
        return;
    }
    let w = inner.width as usize;
    let mut y = inner.y;
    let bottom = inner.y + inner.height;
    let line = |l: Line, y: &mut u16, buf: &mut Buffer| {
        if *y < bottom {
            Paragraph::new(l).render(Rect::new(inner.x, *y, inner.width, 1), buf);
            *y += 1;
        }
    };

    let sparse = state
        .last_step
        .as_ref()
        .is_some_and(|s| !s.union_sizes.is_empty());
    if state.last_step.is_some() && !sparse && state.histograms.is_empty() {
        line(
            Line::from(Span::styled(
                "no sparse adapter: picks and |U| are MEFT's",
                theme.source(),
            )),
            &mut y,
            buf,
        );
        return;
    }

    // The strip across layers takes the last rows (a table of per-layer
    // columns when the pane is wide enough); one layer's histograms get
    // everything above.
    let n_layers = state.last_step.as_ref().map_or(0, |s| s.union_sizes.len());
    let table = sparse && inner.height >= 12 && (n_layers + 1) * LAYER_COL + 4 <= w;
    let strip_rows = match (sparse, table) {
        (false, _) => 0,
        (true, true) => 3,
        (true, false) => 2,
    };
    match selected.and_then(|l| state.histograms.get(&l)) {
        Some(h) => {
            line(histogram_head(h, w, theme), &mut y, buf);
            let avail = bottom.saturating_sub(y).saturating_sub(strip_rows);
            histograms(h, Rect::new(inner.x, y, inner.width, avail), theme, buf);
            y += avail;
        }
        None => line(
            Line::from(Span::styled(
                "histogram: none yet for this layer",
                theme.source(),
            )),
            &mut y,
            buf,
        ),
    }

    if sparse {
        // Keep the strip at the bottom whatever the histogram used.
        y = y.max(bottom.saturating_sub(strip_rows));
        let rows = if table {
            layer_table(state, theme)
        } else {
            layer_strip(state, w, theme)
        };
        for l in rows {
            line(l, &mut y, buf);
        }
    }
}

/// `picks per neuron · 10 steps · 1.2k of 4.1k picked`, as much as fits.
fn histogram_head<'a>(h: &HistogramEvent, w: usize, theme: &Theme) -> Line<'a> {
    let parts = [
        "picks per neuron".to_string(),
        format!("last {} steps", h.window),
        format!(
            "{} of {} picked",
            count(h.distinct as f64),
            count(h.neurons as f64)
        ),
    ];
    let mut text = String::new();
    for p in parts {
        let add = if text.is_empty() {
            p
        } else {
            format!(" · {p}")
        };
        if text.chars().count() + add.chars().count() <= w {
            text.push_str(&add);
        }
    }
    Line::from(Span::styled(text, theme.label()))
}

/// The picks (hot → cold) and the kept activation values, with axes.
fn histograms(h: &HistogramEvent, area: Rect, theme: &Theme, buf: &mut Buffer) {
    let picks: Vec<f64> = h.picks_sorted.iter().map(|&v| v as f64).collect();
    let acts: Vec<f64> = h.act_bins.iter().map(|&v| v as f64).collect();
    let max_pick = picks.iter().copied().fold(0.0, f64::max);
    let max_act = acts.iter().copied().fold(0.0, f64::max);
    let picks_axes = AxisLabels {
        y_top: count(max_pick),
        x_left: "1".into(),
        x_mid: "neuron, hot → cold".into(),
        x_right: count(h.neurons as f64),
    };
    if area.height <= 5 {
        // Small panes: the picks with their axes, and the activation
        // histogram on one row between its two ends.
        let pick_rows = area.height.saturating_sub(1);
        if pick_rows >= 2 {
            let r = Rect::new(area.x, area.y, area.width, pick_rows);
            bars_with_axes(&picks, &picks_axes, r, theme.bars(), theme, buf);
        }
        if area.height >= 1 {
            let lo = value(h.act_lo as f64);
            let hi = value(h.act_hi as f64);
            let head = "kept values ";
            let room = (area.width as usize)
                .saturating_sub(head.len() + lo.chars().count() + hi.chars().count() + 2);
            let cols = fit_width(&acts, room);
            let l = Line::from(vec![
                Span::styled(head, theme.label()),
                Span::styled(format!("{lo} "), theme.label()),
                Span::styled(spark(&cols, max_act), theme.smoothed()),
                Span::styled(format!(" {hi}"), theme.label()),
            ]);
            let y = area.y + area.height - 1;
            Paragraph::new(l).render(Rect::new(area.x, y, area.width, 1), buf);
        }
        return;
    }
    let act_rows = (area.height * 2 / 5).max(3);
    let pick_rows = area.height - act_rows;
    bars_with_axes(
        &picks,
        &picks_axes,
        Rect::new(area.x, area.y, area.width, pick_rows),
        theme.bars(),
        theme,
        buf,
    );
    let y = area.y + pick_rows;
    Paragraph::new(Span::styled(
        "kept activation values (count)",
        theme.label(),
    ))
    .render(Rect::new(area.x, y, area.width, 1), buf);
    bars_with_axes(
        &acts,
        &AxisLabels {
            y_top: count(max_act),
            x_left: value(h.act_lo as f64),
            x_mid: "value".into(),
            x_right: value(h.act_hi as f64),
        },
        Rect::new(area.x, y + 1, area.width, act_rows - 1),
        theme.smoothed(),
        theme,
        buf,
    );
}

/// Two rows: |U| by layer as a sparkline with the selected layer's value,
/// and β for the selected layer with the mean over layers.
fn layer_strip<'a>(state: &DashboardState, w: usize, theme: &Theme) -> Vec<Line<'a>> {
    let Some(s) = state.last_step.as_ref() else {
        return Vec::new();
    };
    let u: Vec<f64> = s.union_sizes.iter().map(|&v| v as f64).collect();
    let max = u.iter().copied().fold(0.0, f64::max);
    let sel = state.selected_layer().map_or(0, |l| l as usize);
    let sel_u = s.union_sizes.get(sel).copied().unwrap_or(0);
    let head = format!("step {} ", s.step);
    let tail = format!("  L{} {}", sel + 1, count(sel_u as f64));
    let room = w.saturating_sub(head.len() + "|U| by layer ".len() + tail.chars().count());
    let cols = if u.len() > room {
        crate::tui::units::resample(&u, room)
    } else {
        u
    };
    let first = Line::from(vec![
        Span::styled(head, theme.source()),
        Span::styled("|U| by layer ", theme.label()),
        Span::styled(spark(&cols, max), theme.bars()),
        Span::styled(tail, theme.value()),
    ]);
    let mut spans = vec![Span::styled("β = |U|/picks  ", theme.label())];
    match state.beta(sel) {
        Some(b) => spans.push(Span::styled(format!("L{} {b:.2}", sel + 1), theme.value())),
        None => spans.push(Span::styled("n/a", theme.source())),
    }
    if let Some(m) = mean_beta(state) {
        spans.push(Span::styled(format!(" · mean {m:.2}"), theme.label()));
    }
    vec![first, Line::from(spans)]
}

/// Three rows: layer numbers, |U| and β, one column per layer.
fn layer_table<'a>(state: &DashboardState, theme: &Theme) -> Vec<Line<'a>> {
    let Some(s) = state.last_step.as_ref() else {
        return Vec::new();
    };
    let sel = state.selected_layer().map_or(0, |l| l as usize);
    let cell = |text: String, selected: bool| {
        let style = if selected {
            theme.value()
        } else {
            theme.text()
        };
        Span::styled(format!("{text:>LAYER_COL$}"), style)
    };
    let mut layer = vec![Span::styled(format!("{:<6}", "layer"), theme.label())];
    let mut unions = vec![Span::styled(format!("{:<6}", "|U|"), theme.label())];
    let mut betas = vec![Span::styled(format!("{:<6}", "β"), theme.label())];
    for (l, &u) in s.union_sizes.iter().enumerate() {
        layer.push(cell((l + 1).to_string(), l == sel));
        unions.push(cell(count(u as f64), l == sel));
        betas.push(cell(
            state
                .beta(l)
                .map_or_else(|| "n/a".into(), |b| format!("{b:.2}")),
            l == sel,
        ));
    }
    layer.push(Span::styled(format!("   step {}", s.step), theme.source()));
    if let Some(m) = mean_beta(state) {
        betas.push(Span::styled(
            format!("   mean {m:.2} (β = |U|/picks)"),
            theme.label(),
        ));
    }
    vec![Line::from(layer), Line::from(unions), Line::from(betas)]
}

fn mean_beta(state: &DashboardState) -> Option<f64> {
    let n = state.last_step.as_ref()?.union_sizes.len();
    let betas: Vec<f64> = (0..n).filter_map(|l| state.beta(l)).collect();
    (!betas.is_empty()).then(|| betas.iter().sum::<f64>() / betas.len() as f64)
}
