//! Drawing the runs screen: the title bar, the table of runs, the marked
//! runs' losses overlaid (one marker per run, so they read apart without
//! colour) with the step cursor and its readout, the selected run's details
//! and the key hints.

use super::{Readout, RunsScreen, RUNS_KEYS};
use crate::train::runs::{decimal, grouped, RunRecord, RunState, ABSENT};
use crate::tui::dashboard::{HELP_KEYS, QUIT_KEYS};
use crate::tui::keys;
use crate::tui::overlay;
use crate::tui::panes::{frame, loss::bounds, PaneLines};
use crate::tui::theme::Theme;
use crate::tui::units::value;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph, Widget};

/// Each marked run's marker on the chart and the glyph that names it in
/// the readout, in the order the runs are marked in the table.
const MARKERS: [(Marker, GraphType, &str); 4] = [
    (Marker::Braille, GraphType::Line, "⠤"),
    (Marker::Dot, GraphType::Scatter, "•"),
    (Marker::Block, GraphType::Scatter, "█"),
    (Marker::Bar, GraphType::Scatter, "▄"),
];

/// What the app draws over the screen.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunsChrome {
    pub help: bool,
    pub confirm_quit: bool,
    /// The live run trains in its own process: quitting may leave it.
    pub detachable: bool,
}

pub fn render(s: &RunsScreen, chrome: RunsChrome, theme: &Theme, area: Rect, buf: &mut Buffer) {
    if overlay::too_small(area, theme, buf) {
        return;
    }
    let [title, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let marked = s.marked_records();
    let title_text = format!(
        " meft · runs in {} · {} run{} · {} marked",
        s.label,
        s.records.len(),
        if s.records.len() == 1 { "" } else { "s" },
        marked.len()
    );
    Paragraph::new(title_text)
        .style(theme.title_bar())
        .render(title, buf);

    if marked.is_empty() {
        table(s, theme, body, buf);
    } else {
        // The table takes its rows (up to two fifths); the chart the rest.
        let want = s.records.len() as u16 + 3;
        let table_h = want.min((body.height * 2 / 5).max(5));
        let [t, c] =
            Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(body);
        table(s, theme, t, buf);
        overlay_pane(s, &marked, theme, c, buf);
    }
    status_line(s, theme, status, buf);
    overlay::hints(&keys::short_hints(RUNS_KEYS), 3, theme, hints, buf);
    if chrome.help {
        overlay::help("runs keys", RUNS_KEYS, HELP_KEYS, theme, area, buf);
    }
    if chrome.confirm_quit {
        overlay::confirm(
            "Training is still running. Stop it and quit?",
            if chrome.detachable {
                crate::tui::dashboard::QUIT_OR_DETACH_KEYS
            } else {
                QUIT_KEYS
            },
            theme,
            area,
            buf,
        );
    }
}

const HEADER: [&str; 7] = ["run", "method", "size", "steps", "loss", "state", "metrics"];
/// Columns of numbers, right-aligned.
const RIGHT: [bool; 7] = [false, false, false, true, true, false, false];
const GAP: usize = 2;

/// The cells of a run's row, as `meft runs` words them.
fn cells(r: &RunRecord) -> [String; 7] {
    let or = |v: Option<String>| v.unwrap_or_else(|| ABSENT.into());
    let steps = match (r.steps_done(), r.total_steps()) {
        (None, None) => ABSENT.to_string(),
        (d, t) => format!("{}/{}", d.unwrap_or(0), or(t.map(|t| t.to_string()))),
    };
    [
        r.name.clone(),
        or(r.method()),
        or(r.size()),
        steps,
        or(r.final_loss().map(decimal)),
        r.state.name().to_string(),
        String::new(),
    ]
}

fn metric_items(r: &RunRecord) -> Vec<String> {
    r.metric_items()
}

/// As many items as fit in `width`, joined by ` · `, and `+N` for the rest.
fn fit_joined(items: &[String], width: usize) -> String {
    let mut out = String::new();
    for (i, it) in items.iter().enumerate() {
        let rest = items.len() - i - 1;
        let sep = if out.is_empty() { "" } else { " · " };
        let more = if rest > 0 {
            format!(" · +{rest}")
        } else {
            String::new()
        };
        let len = |s: &str| s.chars().count();
        if len(&out) + len(sep) + len(it) + len(&more) > width {
            // A first item that fits alone shows without the count (the
            // status line lists them all for the selected run).
            if out.is_empty() && len(it) <= width {
                return it.clone();
            }
            if !out.is_empty() || width >= 3 {
                let left = items.len() - i;
                let sep = if out.is_empty() { "" } else { " · " };
                let tail = format!("{sep}+{left}");
                if len(&out) + len(&tail) <= width {
                    out.push_str(&tail);
                }
            }
            return out;
        }
        out.push_str(sep);
        out.push_str(it);
    }
    out
}

/// Words of `s` that fit in `width`, ` …` marking the cut; a cut never
/// follows a number, so no figure reads shorter than it is.
pub fn clip_words(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    for w in s.split(' ') {
        let next = if out.is_empty() {
            w.to_string()
        } else {
            format!("{out} {w}")
        };
        if next.chars().count() + 2 > width {
            break;
        }
        out = next;
    }
    while out.ends_with(|c: char| c.is_ascii_digit() || ".=".contains(c)) {
        match out.rfind(' ') {
            Some(i) => out.truncate(i),
            None => out.clear(),
        }
    }
    if out.is_empty() {
        return String::new();
    }
    out + " …"
}

fn table(s: &RunsScreen, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let inner = frame("Runs", theme, area, buf);
    if inner.height == 0 {
        return;
    }
    let w = inner.width as usize;
    if let Some(e) = &s.error {
        Paragraph::new(Span::styled(clip_words(e, w), theme.error())).render(inner, buf);
        return;
    }
    if s.records.is_empty() {
        Paragraph::new(Span::styled(
            "no runs here yet: a run started from the setup screen appears here",
            theme.source(),
        ))
        .render(inner, buf);
        return;
    }
    let rows: Vec<[String; 7]> = s.records.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.chars().count()).collect();
    for (r, row) in s.records.iter().zip(&rows) {
        // An unreadable row says why in place of its other cells.
        let n = if r.state == RunState::Unreadable {
            1
        } else {
            6
        };
        for (w, cell) in widths.iter_mut().zip(row).take(n) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The marker columns, then the fixed columns; metrics get what is left.
    let lead = 3;
    let fixed: usize = widths[..6].iter().sum::<usize>() + GAP * 5 + lead;
    let metrics_w = w.saturating_sub(fixed + GAP);
    // The column shows when every run's first metric fits in it (with a
    // count of the rest); otherwise the selected run's metrics are below.
    let show_metrics = s.records.iter().all(|r| {
        let items = metric_items(r);
        items.is_empty() || fit_joined(&items, metrics_w).starts_with(&items[0])
    }) && metrics_w >= HEADER[6].len();
    let ncols = if show_metrics { 7 } else { 6 };
    let line = |cells: &[String], style: Style| -> Vec<Span<'static>> {
        let mut spans = Vec::new();
        for (i, c) in cells.iter().enumerate().take(ncols) {
            let pad = widths[i].saturating_sub(c.chars().count());
            let text = if i == 6 {
                c.clone()
            } else if RIGHT[i] {
                format!("{}{c}", " ".repeat(pad))
            } else {
                format!("{c}{}", " ".repeat(pad))
            };
            let gap = if i == 0 { "" } else { "  " };
            spans.push(Span::styled(format!("{gap}{text}"), style));
        }
        spans
    };
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    let mut head = vec![Span::raw(" ".repeat(lead))];
    head.extend(line(&header, theme.label()));
    let mut lines = vec![Line::from(head)];
    // Rows scroll to keep the selection in sight.
    let shown = (inner.height as usize).saturating_sub(1).max(1);
    let first = s.selected.saturating_sub(shown - 1);
    for (i, (r, row)) in s.records.iter().zip(&rows).enumerate().skip(first) {
        let selected = i == s.selected;
        let mark = if s.is_marked(r) { "●" } else { " " };
        let lead_text = format!("{}{mark} ", if selected { "▸" } else { " " });
        let style = if selected {
            theme.focus()
        } else {
            theme.text()
        };
        let mut spans = vec![Span::styled(lead_text, style)];
        if let Some(problem) = problem_of(r).filter(|_| r.state == RunState::Unreadable) {
            let name = format!("{:<nw$}", row[0], nw = widths[0]);
            let room = w.saturating_sub(lead + widths[0] + GAP);
            let why = clip_words(&format!("unreadable: {problem}"), room);
            spans.push(Span::styled(name, style));
            spans.push(Span::styled(format!("  {why}"), theme.error()));
        } else {
            let mut cells = row.clone();
            cells[6] = fit_joined(&metric_items(r), metrics_w);
            spans.extend(line(&cells, style));
        }
        lines.push(Line::from(spans));
    }
    PaneLines(lines).render(inner, buf);
}

/// Why a run could not be read, its files named within its directory.
fn problem_of(r: &RunRecord) -> Option<String> {
    let p = r.problem.as_ref()?;
    let dir = format!("{}{}", r.dir.display(), std::path::MAIN_SEPARATOR);
    Some(p.replace(&dir, ""))
}

/// The selected run's details, or what the last action said.
fn status_line(s: &RunsScreen, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let w = (area.width as usize).saturating_sub(1);
    let (text, style) = match (&s.note, s.selected_record()) {
        (Some(n), _) => (clip_words(n, w), theme.error()),
        (None, None) => (String::new(), theme.text()),
        (None, Some(r)) => match problem_of(r) {
            Some(p) => (clip_words(&format!("✗ {}: {p}", r.name), w), theme.error()),
            None => {
                let mut items = vec![r.name.clone()];
                items.extend(r.info.as_ref().map(|i| i.adapter.clone()));
                items.extend(metric_items(r));
                items.extend(
                    r.trainable_params()
                        .map(|p| format!("{} trainable", grouped(p))),
                );
                items.extend(
                    r.peak_device_ledger()
                        .map(|b| format!("peak ledger {}", crate::units::bytes(b))),
                );
                // The most telling first; what does not fit is left off.
                let mut text = String::new();
                for it in items {
                    let sep = if text.is_empty() { "" } else { " · " };
                    if text.chars().count() + sep.chars().count() + it.chars().count() > w {
                        break;
                    }
                    text = format!("{text}{sep}{it}");
                }
                (text, theme.label())
            }
        },
    };
    Paragraph::new(Span::styled(format!(" {text}"), style)).render(area, buf);
}

/// The marked runs' losses on one pair of axes, the cursor as a vertical
/// line, and above the chart one row per run: its marker, name and loss
/// at the cursor.
fn overlay_pane(
    s: &RunsScreen,
    marked: &[&RunRecord],
    theme: &Theme,
    area: Rect,
    buf: &mut Buffer,
) {
    let cursor = s.cursor_step();
    let title = match cursor {
        Some(c) => format!("Loss · cursor at step {c}"),
        None => "Loss".to_string(),
    };
    let inner = frame(&title, theme, area, buf);
    if inner.height < 3 || inner.width < 20 {
        return;
    }
    let readout = s.readout();
    let name_w = marked
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let rows = readout_lines(&readout, cursor, name_w, inner.width as usize, theme);
    let legend_h = (rows.len() as u16).min(inner.height.saturating_sub(4));
    PaneLines(rows).render(
        Rect {
            height: legend_h,
            ..inner
        },
        buf,
    );
    let chart = Rect {
        y: inner.y + legend_h,
        height: inner.height - legend_h,
        ..inner
    };
    let series: Vec<Vec<(f64, f64)>> = marked
        .iter()
        .map(|r| {
            r.losses
                .iter()
                .filter(|l| l.1.is_finite())
                .map(|&(st, l)| (st as f64, l))
                .collect()
        })
        .collect();
    let (x_lo, x_hi) = bounds(series.iter().flatten().map(|p| p.0));
    let (mut y_lo, mut y_hi) = bounds(series.iter().flatten().map(|p| p.1));
    let pad = ((y_hi - y_lo) * 0.05).max(1e-9);
    y_lo -= pad;
    y_hi += pad;
    let datasets: Vec<Dataset> = series
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (marker, kind, _) = MARKERS[i % MARKERS.len()];
            Dataset::default()
                .marker(marker)
                .graph_type(kind)
                .style(theme.series(i))
                .data(data)
        })
        .collect();
    let x_labels = vec![
        Span::styled(format!("{x_lo:.0}"), theme.label()),
        Span::styled("step", theme.source()),
        Span::styled(format!("{x_hi:.0}"), theme.label()),
    ];
    let y_labels = vec![
        Span::styled(value(y_lo), theme.label()),
        Span::styled(value(y_hi), theme.label()),
    ];
    // Where the chart puts its plot: right of the widest y label (or of the
    // first x label, less one) and the y axis, above the x axis and labels.
    let label_w = y_labels
        .iter()
        .map(|l| l.width())
        .chain(x_labels.first().map(|l| l.width().saturating_sub(1)))
        .max()
        .unwrap_or(0)
        .min(chart.width as usize / 3) as u16;
    Chart::new(datasets)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds([x_lo, x_hi])
                .style(theme.border())
                .labels(x_labels),
        )
        .y_axis(
            Axis::default()
                .bounds([y_lo, y_hi])
                .style(theme.border())
                .labels(y_labels),
        )
        .render(chart, buf);
    if let Some(c) = cursor {
        let plot = Rect {
            x: chart.x + label_w + 1,
            width: chart.width.saturating_sub(label_w + 1),
            height: chart.height.saturating_sub(2),
            ..chart
        };
        cursor_line(c as f64, (x_lo, x_hi), plot, theme, buf);
    }
}

/// The cursor's column, found as the chart finds a point's: empty cells of
/// the plot get a thin line, the x axis a tick; the runs' marks stay on top.
fn cursor_line(x: f64, (lo, hi): (f64, f64), plot: Rect, theme: &Theme, buf: &mut Buffer) {
    if plot.width == 0 || plot.height == 0 || hi <= lo {
        return;
    }
    let col = ((x - lo) * (plot.width - 1) as f64 / (hi - lo)).round();
    if !(0.0..plot.width as f64).contains(&col) {
        return;
    }
    let col = plot.x + col as u16;
    for y in plot.y..plot.y + plot.height {
        let cell = &mut buf[(col, y)];
        if cell.symbol() == " " {
            cell.set_symbol("│").set_style(theme.source());
        }
    }
    let axis = plot.y + plot.height;
    if axis < buf.area.bottom() {
        buf[(col, axis)].set_symbol("┴").set_style(theme.source());
    }
}

/// A run's name in `max` columns: cut before the digits it would end in,
/// so a cut name never reads as another run's.
fn clip_name(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_string();
    }
    let mut t: String = name.chars().take(max.saturating_sub(1)).collect();
    while t.ends_with(|c: char| c.is_ascii_digit() || ".=".contains(c)) {
        t.pop();
    }
    t + "…"
}

/// One row per marked run: its marker, name, and loss at the cursor.
fn readout_lines(
    readout: &[Readout],
    cursor: Option<u64>,
    name_w: usize,
    width: usize,
    theme: &Theme,
) -> Vec<Line<'static>> {
    readout
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (_, _, glyph) = MARKERS[i % MARKERS.len()];
            let loss = cursor.map_or_else(|| ABSENT.to_string(), |c| r.text(c));
            // The name gives way to the loss on a narrow pane.
            let room = width.saturating_sub(loss.chars().count() + 10);
            let name = clip_name(&r.name, room.min(name_w));
            Line::from(vec![
                Span::styled(format!(" {glyph} "), theme.series(i)),
                Span::styled(format!("{name:<nw$}", nw = room.min(name_w)), theme.text()),
                Span::styled("  loss ", theme.label()),
                Span::styled(loss, theme.value()),
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_words_never_end_on_a_number() {
        assert_eq!(clip_words("short", 10), "short");
        assert_eq!(
            clip_words("events.jsonl:1: unknown variant bogus", 25),
            "events.jsonl:1: unknown …"
        );
        assert_eq!(
            clip_words("events.jsonl:1: unknown variant bogus", 24),
            "events.jsonl:1: …"
        );
        assert_eq!(clip_name("nq-20250101-120000", 8), "nq-…");
        assert_eq!(clip_name("lora-b", 8), "lora-b");
        assert_eq!(
            clip_words("cannot read step 12 of 30", 20),
            "cannot read step …"
        );
        assert_eq!(
            fit_joined(&["em 0.5000".into(), "f1 0.6000".into()], 14),
            "em 0.5000 · +1"
        );
        assert_eq!(
            fit_joined(&["em 0.5000".into(), "f1 0.6000".into()], 30),
            "em 0.5000 · f1 0.6000"
        );
        assert_eq!(fit_joined(&["em 0.5000".into()], 5), "+1");
        // Room for the first alone: it shows, without the count.
        assert_eq!(
            fit_joined(&["em 0.5000".into(), "f1 0.6000".into()], 9),
            "em 0.5000"
        );
    }
}
