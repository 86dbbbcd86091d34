//! Host memory: process RSS, system memory and CPU from sysinfo, and the
//! bytes the run owns in host memory (the MEFT store) from the host ledger.

use super::{entry, frame, source_lines, PaneLines};
use crate::tui::state::DashboardState;
use crate::tui::units::{bytes, bytes_of};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Widget;

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let inner = frame("Host memory", theme, area, buf);
    let w = inner.width;
    let mut lines: Vec<Line> = Vec::new();
    match &state.telemetry {
        Some(t) => {
            lines.extend(source_lines("sysinfo", None, None, w, theme));
            lines.push(entry("RSS", bytes(t.rss), w, theme));
            lines.push(entry("system", bytes_of(t.sys_used, t.sys_total), w, theme));
            let cores = if t.cores > 0 {
                format!("{:.0}% of {}", t.cpu_process_pct, t.cores)
            } else {
                format!("{:.0}%", t.cpu_process_pct)
            };
            lines.push(entry("CPU cores", cores, w, theme));
        }
        None => lines.extend(source_lines(
            "sysinfo",
            None,
            Some("no sample yet".into()),
            w,
            theme,
        )),
    }
    match &state.ledger {
        Some(l) if !l.host.is_empty() => {
            let total: u64 = l.host.values().sum();
            lines.extend(source_lines("ledger", Some(bytes(total)), None, w, theme));
            for (k, v) in &l.host {
                let label = if *k == crate::event::Category::Store {
                    "MEFT store"
                } else {
                    k.name()
                };
                lines.push(entry(label, bytes(*v), w, theme));
            }
        }
        Some(_) => lines.extend(source_lines(
            "ledger",
            None,
            Some("no host bytes".into()),
            w,
            theme,
        )),
        None => lines.extend(source_lines(
            "ledger",
            None,
            Some("no ledger yet".into()),
            w,
            theme,
        )),
    }
    PaneLines(lines).render(inner, buf);
}
