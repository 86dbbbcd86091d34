//! Device memory: the ledger by category, the planner's prediction next to
//! it, and NVML's reading — or, without a driver, the reason, never a zero.

use super::{clip, entry, frame, source_line};
use crate::tui::state::DashboardState;
use crate::tui::units::{bytes, bytes_of};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let inner = frame("Device memory", theme, area, buf);
    let w = inner.width;
    let mut lines: Vec<Line> = Vec::new();
    let planned = &state.planned;
    match &state.ledger {
        Some(l) => {
            let total: u64 = l.device.values().sum();
            let peak = (state.peak_device_ledger > total)
                .then(|| format!("peak {}", bytes(state.peak_device_ledger)));
            lines.push(source_line("ledger", Some(bytes(total)), peak, theme));
            if let Some(p) = planned.device_total {
                lines.push(source_line("planned", Some(bytes(p)), None, theme));
            }
            // Wide panes put the planned figure beside each category.
            let with_plan = w >= 34 && !planned.device.is_empty();
            for (k, v) in &l.device {
                let mut line = entry(&clip(k.name(), 12), bytes(*v), w.min(24), theme);
                if with_plan {
                    if let Some(p) = planned.device.get(k.name()) {
                        line.spans.push(Span::styled(
                            format!("  plan {}", bytes(*p)),
                            theme.source(),
                        ));
                    }
                }
                lines.push(line);
            }
        }
        None => {
            lines.push(source_line(
                "ledger",
                None,
                Some("no ledger yet".into()),
                theme,
            ));
            if let Some(p) = planned.device_total {
                lines.push(source_line("planned", Some(bytes(p)), None, theme));
            }
        }
    }
    match &state.telemetry {
        Some(t) if !t.gpus.is_empty() => {
            for g in &t.gpus {
                let util = g
                    .util_pct
                    .map(|u| format!(" · {u:.0} %"))
                    .unwrap_or_default();
                lines.push(source_line(
                    "NVML",
                    Some(bytes_of(g.mem_used, g.mem_total)),
                    Some(format!("GPU{} {}{util}", g.index, g.name)),
                    theme,
                ));
            }
        }
        Some(t) => {
            let why = t.gpu_unavailable.as_deref().unwrap_or("no GPU reported");
            lines.push(Line::from(vec![
                Span::styled("NVML    ", theme.source()),
                Span::styled(why.to_string(), theme.label()),
            ]));
        }
        None => lines.push(source_line(
            "NVML",
            None,
            Some("no sample yet".into()),
            theme,
        )),
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}
