//! The dashboard's panes. Each one is a plain function of
//! [`DashboardState`] onto a rectangle of a [`Buffer`], so every pane can be
//! drawn and checked without a terminal.

pub mod activations;
pub mod device;
pub mod events;
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
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Widget};

/// The signature every pane has.
pub type Pane = fn(&DashboardState, Rect, &mut Buffer);

/// Values line up in this many columns at most, so on a wide terminal a
/// label does not drift far from its number.
const ROW_WIDTH: u16 = 34;

/// Lines drawn one per row from the top of an area, never wrapped (each
/// pane fits its own lines to its width); rows past the bottom are left out.
pub struct PaneLines<'a>(pub Vec<Line<'a>>);

impl Widget for PaneLines<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        for (i, line) in self.0.into_iter().enumerate().take(area.height as usize) {
            Paragraph::new(line).render(Rect::new(area.x, area.y + i as u16, area.width, 1), buf);
        }
    }
}

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
        // Without a value the remark stands in the value's column.
        let gap = if spans.len() > 1 { "  " } else { "" };
        spans.push(Span::styled(format!("{gap}{x}"), theme.label()));
    }
    Line::from(spans)
}

/// A source heading, its value and a remark, as lines of at most `width`
/// columns: one line when all fit, else the remark on lines of its own
/// under the value, broken between words. Nothing is cut.
pub fn source_lines<'a>(
    source: &str,
    value: Option<String>,
    extra: Option<String>,
    width: u16,
    theme: &Theme,
) -> Vec<Line<'a>> {
    let w = width as usize;
    let head = 8 + value.as_ref().map_or(0, |v| v.chars().count());
    let extra_len = extra.as_ref().map_or(0, |x| x.chars().count() + 2);
    if head + extra_len <= w || extra.is_none() {
        return vec![source_line(source, value, extra, theme)];
    }
    let mut lines = vec![source_line(source, value, None, theme)];
    let x = extra.unwrap_or_default();
    // Under the value when the remark fits there, else from the left edge.
    let indent = if x.chars().count() + 8 <= w { 8 } else { 1 };
    for piece in events::wrap(&x, w.saturating_sub(indent)) {
        lines.push(Line::from(vec![
            Span::raw(" ".repeat(indent)),
            Span::styled(piece, theme.label()),
        ]));
    }
    lines
}

/// ` label ……… value`, the value right-aligned within [`ROW_WIDTH`]. A
/// label too long for the row is shortened; the value never is.
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
    let room = w.saturating_sub(value.chars().count() + 2);
    let label = format!(" {}", short_label(label, room));
    let pad = w.saturating_sub(label.chars().count() + value.chars().count() + 1);
    Line::from(vec![
        Span::styled(label, label_style),
        Span::raw(" ".repeat(pad + 1)),
        Span::styled(value, value_style),
    ])
}

/// A category or source name in at most `max` columns: the name, else its
/// usual abbreviation, else cut with an ellipsis.
pub fn short_label(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        return label.to_string();
    }
    let short = match label {
        "accumulators" => "accum.",
        "activations" => "activ.",
        "adapter act" => "adapt. act",
        "trainable" => "train.",
        "optimizer" => "optim.",
        "backward" => "bwd",
        "MEFT store" => "store",
        "CPU cores" => "CPU",
        other => other,
    };
    clip(short, max)
}

/// Cut `s` to `max` characters, marking the cut with an ellipsis. Text
/// with spaces is cut between words, and never right after a figure (which
/// would read as a whole value): `at step 20 of …` becomes `at step …`.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    if s.chars().nth(max - 1) != Some(' ') {
        if let Some(i) = t.rfind(' ') {
            t.truncate(i);
        }
    }
    // Room for " …" after the last whole word, and no figure before it.
    loop {
        let kept = t.trim_end();
        let fits = kept.chars().count() + 2 <= max;
        if !kept.contains(' ') || (fits && !kept.ends_with(|c: char| c.is_ascii_digit())) {
            break;
        }
        let cut = kept.rfind(' ').unwrap_or(0);
        t.truncate(cut);
    }
    let mut t = t.trim_end().to_string();
    if t.contains(' ') && t.chars().count() + 2 <= max {
        t.push(' ');
    }
    t.push('…');
    t
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

/// Labels of a bar chart's axes: the value at the top of the y axis, and
/// the x axis's left end, middle (what it counts) and right end.
pub struct AxisLabels {
    pub y_top: String,
    pub x_left: String,
    pub x_mid: String,
    pub x_right: String,
}

/// [`bars`] with a y axis on the left (its top value over a zero baseline) and the x
/// axis's labels on the last row of `area`; the values are stretched or
/// binned to the plot's width.
pub fn bars_with_axes(
    values: &[f64],
    labels: &AxisLabels,
    area: Rect,
    style: Style,
    theme: &Theme,
    buf: &mut Buffer,
) {
    axis_bars(values, false, labels, area, style, theme, buf)
}

/// [`bars_with_axes`] with one column per value from the left (a history
/// of steps), so the x labels name the first and last value shown.
pub fn bars_with_axes_exact(
    values: &[f64],
    labels: &AxisLabels,
    area: Rect,
    style: Style,
    theme: &Theme,
    buf: &mut Buffer,
) {
    axis_bars(values, true, labels, area, style, theme, buf)
}

fn axis_bars(
    values: &[f64],
    exact: bool,
    labels: &AxisLabels,
    area: Rect,
    style: Style,
    theme: &Theme,
    buf: &mut Buffer,
) {
    if area.height < 2 || area.width < 8 {
        return;
    }
    let y_w = labels.y_top.chars().count().max(1) as u16;
    let plot_h = area.height - 1;
    let plot = Rect::new(area.x + y_w + 1, area.y, area.width - y_w - 1, plot_h);
    for r in 0..plot_h {
        let y = area.y + r;
        // The top value; the baseline below the bars is zero.
        let (label, tick) = if r == 0 {
            (labels.y_top.clone(), "┤")
        } else {
            (String::new(), "│")
        };
        let text = format!("{label:>w$}{tick}", w = y_w as usize);
        buf.set_string(area.x, y, text, theme.label());
    }
    let fitted = crate::tui::units::fit_width(values, plot.width as usize);
    bars(if exact { values } else { &fitted }, plot, style, buf);
    // The x axis: its corner, then left · middle · right labels.
    let y = area.y + plot_h;
    buf.set_string(
        area.x,
        y,
        format!("{:>w$}└", "", w = y_w as usize),
        theme.label(),
    );
    // A history fills only as many columns as it has values.
    let w = if exact {
        values.len().min(plot.width as usize)
    } else {
        plot.width as usize
    };
    let left = labels.x_left.as_str();
    let right = labels.x_right.as_str();
    let (l, r) = (left.chars().count(), right.chars().count());
    buf.set_string(plot.x, y, left, theme.label());
    if l + r < w {
        buf.set_string(plot.x + (w - r) as u16, y, right, theme.label());
    }
    let mid = labels.x_mid.as_str();
    let m = mid.chars().count();
    if l + m + r + 2 <= w {
        let x = plot.x + ((w - m) / 2).clamp(l + 1, w - r - m - 1) as u16;
        buf.set_string(x, y, mid, theme.source());
    } else if l + m + 2 <= plot.width as usize && w <= l + r {
        // Too few values for both ends: say what the axis counts after them.
        buf.set_string(plot.x + (l + 1) as u16, y, mid, theme.source());
    }
}

#[cfg(test)]
mod clip_tests {
    use super::clip;

    #[test]
    fn clips_between_words_and_never_after_a_figure() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("accumulators", 8), "accumul…");
        assert_eq!(
            clip("gradient norm 2.9 at step 20 is high", 30),
            "gradient norm 2.9 at step …"
        );
        assert_eq!(clip("saved step 20 and more", 14), "saved step …");
        for max in 1..40 {
            let c = clip("gradient norm 2.9 at step 20 is high", max);
            assert!(c.chars().count() <= max, "{max}: {c:?}");
        }
    }
}
