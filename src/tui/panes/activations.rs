//! Activations of the selected layer: how often each neuron was picked
//! (hot → cold), the histogram of kept activation values, and across layers
//! the union size |U| and β = |U| / picks from the latest step.

use super::{bars, clip, frame};
use crate::tui::dashboard::LAYER;
use crate::tui::state::DashboardState;
use crate::tui::units::{count, fit_width, spark, value};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let layers = state.layers();
    let selected = state.selected_layer();
    let title = match selected {
        Some(l) => {
            let keys = LAYER.hint.map_or("", |h| h.keys);
            format!("Activations · layer {l}/{}  {keys}", layers.len())
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

    // The strip across layers and β take the last two rows; the histogram
    // of one layer gets everything above.
    let strip_rows = if sparse { 2 } else { 0 };
    match selected.and_then(|l| state.histograms.get(&l)) {
        Some(h) => {
            line(
                Line::from(vec![
                    Span::styled("histogram ", theme.source()),
                    Span::styled(
                        clip(
                            &format!(
                                "{} steps · {}/{} picked",
                                h.window,
                                count(h.distinct as f64),
                                count(h.neurons as f64)
                            ),
                            w.saturating_sub(10),
                        ),
                        theme.label(),
                    ),
                ]),
                &mut y,
                buf,
            );
            let avail = bottom.saturating_sub(y).saturating_sub(strip_rows);
            // Small panes show the activation histogram inline on one row;
            // taller ones give it a label row and bars of its own.
            let (pick_rows, act_rows) = if avail <= 5 {
                (avail.saturating_sub(1), 0)
            } else {
                let act = avail * 2 / 5;
                (avail - act - 1, act)
            };
            if pick_rows > 0 {
                let picks: Vec<f64> = h.picks_sorted.iter().map(|&v| v as f64).collect();
                let r = Rect::new(inner.x, y, inner.width, pick_rows);
                bars(&fit_width(&picks, w), r, theme.bars(), buf);
                // Sorted hot → cold, so the top right is free for the label.
                let label = "picks per neuron, hot → cold";
                let n = label.chars().count().min(w) as u16;
                Paragraph::new(Span::styled(label, theme.label()))
                    .render(Rect::new(inner.x + inner.width - n, y, n, 1), buf);
                y += pick_rows;
            }
            let head = format!(
                "kept activations [{}, {}] ",
                value(h.act_lo as f64),
                value(h.act_hi as f64)
            );
            let acts: Vec<f64> = h.act_bins.iter().map(|&v| v as f64).collect();
            if act_rows == 0 {
                let room = w.saturating_sub(head.chars().count());
                let cols = fit_width(&acts, room);
                let max = cols.iter().copied().fold(0.0, f64::max);
                line(
                    Line::from(vec![
                        Span::styled(head, theme.label()),
                        Span::styled(spark(&cols, max), theme.smoothed()),
                    ]),
                    &mut y,
                    buf,
                );
            } else {
                line(Line::from(Span::styled(head, theme.label())), &mut y, buf);
                let r = Rect::new(inner.x, y, inner.width, act_rows.min(bottom - y));
                bars(&fit_width(&acts, w), r, theme.smoothed(), buf);
                y += r.height;
            }
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

    if let Some(s) = state.last_step.as_ref().filter(|_| sparse) {
        // Keep the strip at the bottom whatever the histogram used.
        y = y.max(bottom.saturating_sub(2));
        let u: Vec<f64> = s.union_sizes.iter().map(|&v| v as f64).collect();
        let max = u.iter().copied().fold(0.0, f64::max);
        let sel = selected.map(|l| l as usize).unwrap_or(0);
        let sel_u = s.union_sizes.get(sel).copied().unwrap_or(0);
        line(
            Line::from(vec![
                Span::styled(format!("step {} ", s.step), theme.source()),
                Span::styled("|U| by layer ", theme.label()),
                Span::styled(spark(&u, max), theme.bars()),
                Span::styled(format!("  L{sel} {}", count(sel_u as f64)), theme.value()),
            ]),
            &mut y,
            buf,
        );
        let betas: Vec<f64> = (0..s.union_sizes.len())
            .filter_map(|l| state.beta(l))
            .collect();
        let mean = if betas.is_empty() {
            None
        } else {
            Some(betas.iter().sum::<f64>() / betas.len() as f64)
        };
        // The strip's first row names the step both rows come from.
        let mut spans = vec![Span::styled("β = |U|/picks  ", theme.label())];
        match state.beta(sel) {
            Some(b) => spans.push(Span::styled(format!("L{sel} {b:.2}"), theme.value())),
            None => spans.push(Span::styled("n/a", theme.source())),
        }
        if let Some(m) = mean {
            spans.push(Span::styled(format!(" · mean {m:.2}"), theme.label()));
        }
        line(Line::from(spans), &mut y, buf);
    }
}
