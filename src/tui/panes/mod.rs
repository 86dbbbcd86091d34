//! The dashboard's panes. Each one is a plain function of
//! [`DashboardState`] onto a rectangle of a [`Buffer`], so every pane can be
//! drawn and checked without a terminal.

pub mod activations;
pub mod device;
pub mod host;
pub mod loss;
pub mod status;
pub mod traffic;

use crate::tui::state::DashboardState;
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Widget};

/// The signature every pane has.
pub type Pane = fn(&DashboardState, Rect, &mut Buffer);

/// Values line up in this many columns at most, so on a wide terminal a
/// label does not drift far from its number.
const ROW_WIDTH: u16 = 34;

/// Draw the pane's frame and return the inner area.
pub fn frame(title: &str, theme: &Theme, area: Rect, buf: &mut Buffer) -> Rect {
    titled_box(title, theme.border(), theme, area, buf)
}

/// A box with ` title ` in its top border; returns the inner area.
pub fn titled_box(title: &str, border: Style, theme: &Theme, area: Rect, buf: &mut Buffer) -> Rect {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Plain)
        .border_style(border)
        .title(Span::styled(format!(" {title} "), theme.pane_title()));
    let inner = block.inner(area);
    block.render(area, buf);
    inner
}

/// A source heading with an optional headline value: `ledger   412 MiB`.
pub fn source_line<'a>(
    source: &str,
    value: Option<String>,
    extra: Option<String>,
    theme: &Theme,
) -> Line<'a> {
    let mut spans = vec![Span::styled(format!("{source:<8}"), theme.source())];
    if let Some(v) = value {
        spans.push(Span::styled(v, theme.value()));
    }
    if let Some(x) = extra {
        spans.push(Span::styled(format!("  {x}"), theme.label()));
    }
    Line::from(spans)
}

/// ` label ……… value`, the value right-aligned within [`ROW_WIDTH`].
pub fn entry<'a>(label: &str, value: String, width: u16, theme: &Theme) -> Line<'a> {
    entry_styled(label, value, width, theme.label(), theme.text())
}

pub fn entry_styled<'a>(
    label: &str,
    value: String,
    width: u16,
    label_style: Style,
    value_style: Style,
) -> Line<'a> {
    let w = width.min(ROW_WIDTH) as usize;
    let label = format!(" {label}");
    let pad = w.saturating_sub(label.chars().count() + value.chars().count() + 1);
    Line::from(vec![
        Span::styled(label, label_style),
        Span::raw(" ".repeat(pad + 1)),
        Span::styled(value, value_style),
    ])
}

/// Cut `s` to `max` characters, marking the cut with an ellipsis.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Vertical bars filling `area` from the bottom, eighth-block resolution.
pub fn bars(values: &[f64], area: Rect, style: Style, buf: &mut Buffer) {
    const EIGHTHS: [&str; 9] = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
    let max = values.iter().copied().fold(0.0f64, f64::max);
    if max <= 0.0 || area.height == 0 {
        return;
    }
    let rows = area.height as f64;
    for (i, &v) in values.iter().take(area.width as usize).enumerate() {
        let x = area.x + i as u16;
        let mut eighths = ((v.max(0.0) / max) * rows * 8.0).round() as u64;
        if v > 0.0 && eighths == 0 {
            // A neuron picked at all shows at least a sliver.
            eighths = 1;
        }
        for r in 0..area.height {
            let y = area.y + area.height - 1 - r;
            let fill = eighths.saturating_sub(r as u64 * 8).min(8) as usize;
            if fill > 0 {
                buf[(x, y)].set_symbol(EIGHTHS[fill]).set_style(style);
            }
        }
    }
}
