//! Device memory: the ledger by category, the planner's prediction next to
//! it, and NVML's reading — or, without a driver, a short reason, never a
//! zero and never the loader's own words. Lines are fitted to the pane: a
//! remark moves to its own line, a long label is abbreviated, and when the
//! categories outnumber the rows the smallest are summed into one line.

use super::{entry, frame, source_lines, PaneLines};
use crate::event::Ledger;
use crate::tui::state::DashboardState;
use crate::tui::units::{bytes, bytes_of};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

pub fn render(state: &DashboardState, area: Rect, buf: &mut Buffer) {
    let theme = &state.view.theme;
    let inner = frame("Device memory", theme, area, buf);
    let w = inner.width;
    let planned = &state.planned;
    let mut head: Vec<Line> = Vec::new();
    let mut categories: Vec<Line> = Vec::new();
    match &state.ledger {
        Some(l) => {
            let total: u64 = l.device.values().sum();
            let peak = (state.peak_device_ledger > total)
                .then(|| format!("peak {}", bytes(state.peak_device_ledger)));
            head.extend(source_lines("ledger", Some(bytes(total)), peak, w, theme));
            if let Some(p) = planned.device_total {
                head.extend(source_lines("planned", Some(bytes(p)), None, w, theme));
            }
            categories = category_lines(state, &l.device, w, inner.height, &head);
        }
        None => {
            head.extend(source_lines(
                "ledger",
                None,
                Some("no ledger yet".into()),
                w,
                theme,
            ));
            if let Some(p) = planned.device_total {
                head.extend(source_lines("planned", Some(bytes(p)), None, w, theme));
            }
        }
    }
    let mut lines = head;
    lines.extend(categories);
    lines.extend(nvml_lines(state, w));
    PaneLines(lines).render(inner, buf);
}

fn nvml_lines<'a>(state: &DashboardState, w: u16) -> Vec<Line<'a>> {
    let theme = &state.view.theme;
    match &state.telemetry {
        Some(t) if !t.gpus.is_empty() => {
            let mut lines = Vec::new();
            for g in &t.gpus {
                let util = g
                    .util_pct
                    .map(|u| format!(" · {u:.0} %"))
                    .unwrap_or_default();
                lines.extend(source_lines(
                    "NVML",
                    Some(bytes_of(g.mem_used, g.mem_total)),
                    Some(format!("GPU{} {}{util}", g.index, g.name)),
                    w,
                    theme,
                ));
            }
            lines
        }
        Some(t) => {
            let why = t
                .gpu_unavailable
                .as_deref()
                .map_or_else(|| "no GPU reported".to_string(), gpu_reason);
            source_lines("NVML", None, Some(why), w, theme)
        }
        None => source_lines("NVML", None, Some("no sample yet".into()), w, theme),
    }
}

/// One line per category while they fit under `head` and the NVML lines;
/// past that, the largest ones and a line summing the rest.
fn category_lines<'a>(
    state: &DashboardState,
    device: &Ledger,
    w: u16,
    height: u16,
    head: &[Line],
) -> Vec<Line<'a>> {
    let theme = &state.view.theme;
    let planned = &state.planned;
    let nvml = nvml_lines(state, w).len();
    let room = (height as usize).saturating_sub(head.len() + nvml).max(1);
    // Wide panes put the planned figure beside each category.
    let with_plan = w >= 38 && !planned.device.is_empty();
    let line = |name: &str, v: u64| {
        let mut line = entry(name, bytes(v), w.min(24), theme);
        if with_plan {
            if let Some(p) = planned.device.get(name) {
                line.spans.push(Span::styled(
                    format!("  plan {}", bytes(*p)),
                    theme.source(),
                ));
            }
        }
        line
    };
    let all: Vec<(&str, u64)> = device.iter().map(|(k, v)| (k.name(), *v)).collect();
    if all.len() <= room {
        return all.iter().map(|(k, v)| line(k, *v)).collect();
    }
    let mut by_size = all.clone();
    by_size.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    let keep: Vec<&str> = by_size
        .iter()
        .take(room.saturating_sub(1))
        .map(|(k, _)| *k)
        .collect();
    let mut lines: Vec<Line> = all
        .iter()
        .filter(|(k, _)| keep.contains(k))
        .map(|(k, v)| line(k, *v))
        .collect();
    let rest: Vec<u64> = all
        .iter()
        .filter(|(k, _)| !keep.contains(k))
        .map(|(_, v)| *v)
        .collect();
    lines.push(entry(
        &format!("{} more", rest.len()),
        bytes(rest.iter().sum()),
        w.min(24),
        theme,
    ));
    lines
}

/// Why there are no GPU readings, in a few words. The sampler's reason may
/// carry the dynamic loader's message (or come from an older log that
/// recorded it whole); the pane says what it means instead.
pub fn gpu_reason(raw: &str) -> String {
    let l = raw.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|w| l.contains(w));
    if says(&[
        "libnvidia-ml",
        "libloading",
        "shared object",
        "no nvidia driver",
        "driver not loaded",
    ]) {
        "no NVIDIA driver".into()
    } else if says(&["no nvidia gpu", "reports no devices"]) {
        "no NVIDIA GPU".into()
    } else if says(&["gpu is lost"]) {
        "GPU lost".into()
    } else if says(&["permission"]) {
        "no permission to read the GPU".into()
    } else {
        let text = raw.trim();
        let text = text.strip_prefix("NVML:").unwrap_or(text).trim();
        // The first clause says what; the rest is the library's detail.
        text.split(": ").next().unwrap_or(text).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::gpu_reason;

    #[test]
    fn loader_errors_read_as_a_missing_driver() {
        for raw in [
            "a libloading error occurred: libnvidia-ml.so.1: cannot open shared object file: No such file or directory",
            "no NVIDIA driver (libnvidia-ml.so.1 not found)",
            "no NVIDIA driver: libnvidia-ml.so not found",
        ] {
            assert_eq!(gpu_reason(raw), "no NVIDIA driver", "{raw}");
        }
        assert_eq!(
            gpu_reason("no NVIDIA GPU: the driver reports no devices"),
            "no NVIDIA GPU"
        );
        assert_eq!(gpu_reason("NVML: GPU is lost"), "GPU lost");
        assert_eq!(
            gpu_reason("NVML cannot count devices: Unknown"),
            "NVML cannot count devices"
        );
    }
}
