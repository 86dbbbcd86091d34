//! The setup screen's right side: the plan's own knobs, the planner's
//! comparison of MEFT with the dense Parallel Adapter of the same M and
//! LoRA as a table, the verdict on the config, and what the focused knob
//! does. Figures are shortened (`8.4M`) rather than wrapped when the pane is
//! narrow, so no value is ever split.

use super::fields::Field;
use super::state::Setup;
use crate::tui::theme::Theme;
use crate::tui::units::{bytes, bytes_short};
use crate::tui::CostRow;
use crate::units::ratio;
use ratatui::text::{Line, Span};

impl Setup {
    /// The comparison table: a header, then one line per method.
    pub(super) fn table_lines(&self, width: usize, theme: &Theme) -> Vec<Line<'static>> {
        let p = &self.preview;
        if p.rows.is_empty() {
            return Vec::new();
        }
        // `label_room`: how wide a method's name may be with its detail.
        let cells = |short: bool, label_room: usize| -> Vec<[String; 5]> {
            let size = |n: u64| if short { bytes_short(n) } else { bytes(n) };
            let fit = |r: &CostRow| match (r.fits, short) {
                (true, true) => "✓",
                (false, true) => "✗",
                (true, false) => "✓ fits",
                (false, false) => "✗ over",
            };
            let head = [
                String::new(),
                "device".into(),
                "host".into(),
                if short { "B/step" } else { "bytes/step" }.into(),
                if short {
                    "fits".into()
                } else {
                    format!("fits {}", bytes(p.gpu_mem))
                },
            ];
            let mut out = vec![head];
            out.extend(p.rows.iter().map(|r| {
                // The longest name that fits: with its size, abbreviated
                // with its size, then without.
                let name = [
                    format!("{} {}", r.method, r.detail),
                    format!("{} {}", r.abbrev, r.detail),
                    r.method.clone(),
                ]
                .into_iter()
                .find(|n| n.chars().count() <= label_room)
                .unwrap_or_else(|| r.abbrev.clone());
                let name = name.trim_end().to_string();
                [
                    name,
                    size(r.device),
                    size(r.host),
                    size(r.per_step),
                    fit(r).into(),
                ]
            }));
            out
        };
        let widths = |rows: &[[String; 5]]| -> [usize; 5] {
            let mut w = [0; 5];
            for r in rows {
                for (i, c) in r.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
            w
        };
        let total = |w: &[usize; 5], gap: usize| w.iter().sum::<usize>() + gap * 4;
        // The longest form that fits: full units, then short units, then
        // narrower gaps, then each method's size left out where it does
        // not fit beside the figures.
        let mut chosen = (cells(false, usize::MAX), 2);
        for (short, gap) in [(false, 2), (true, 2), (true, 1)] {
            let table = cells(short, usize::MAX);
            let fits = total(&widths(&table), gap) <= width;
            chosen = (table, gap);
            if fits {
                break;
            }
        }
        if total(&widths(&chosen.0), chosen.1) > width {
            let w = widths(&chosen.0);
            let figures = w[1..].iter().sum::<usize>() + chosen.1 * 4;
            chosen.0 = cells(true, width.saturating_sub(figures));
        }
        let (table, gap) = chosen;
        let w = widths(&table);
        let sep = " ".repeat(gap);
        let line = |r: &[String; 5]| -> String {
            format!(
                "{:<a$}{sep}{:>b$}{sep}{:>c$}{sep}{:>d$}{sep}{:<e$}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3],
                e = w[4]
            )
        };
        let mut lines = vec![Line::from(Span::styled(line(&table[0]), theme.label()))];
        for (cells, row) in table[1..].iter().zip(&p.rows) {
            let style = match (row.chosen, row.fits) {
                (_, false) => theme.error(),
                (true, true) => theme.value(),
                (false, true) => theme.text(),
            };
            lines.push(Line::from(Span::styled(line(cells), style)));
        }
        lines
    }

    /// The bytes a dense offload of the same adapter moves and MEFT's share,
    /// in the longest wording that fits.
    pub(super) fn offload_line(&self, width: usize, theme: &Theme) -> Option<Line<'static>> {
        let (dense, r) = self.preview.dense_offload?;
        let long = format!(
            "a dense offload of the same M moves {}/step; MEFT {} of it",
            bytes(dense),
            ratio(r)
        );
        let short = format!(
            "dense offload {}/step · MEFT {}",
            bytes_short(dense),
            ratio(r)
        );
        let text = if long.chars().count() <= width {
            long
        } else {
            short
        };
        Some(Line::from(Span::styled(text, theme.source())))
    }

    /// The chosen method's bytes by category, packed into lines whole items
    /// at a time, then the planner's assumptions; for wide panes only.
    pub(super) fn breakdown_lines(&self, width: usize, theme: &Theme) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        for (place, items) in &self.preview.breakdown {
            let items: Vec<String> = items
                .iter()
                .map(|(k, v)| format!("{k} {}", bytes(*v)))
                .collect();
            let lead = format!("{place:<7}");
            for (i, packed) in pack(&items, width.saturating_sub(lead.len()))
                .into_iter()
                .enumerate()
            {
                let head = if i == 0 {
                    lead.clone()
                } else {
                    " ".repeat(lead.len())
                };
                lines.push(Line::from(vec![
                    Span::styled(head, theme.label()),
                    Span::styled(packed, theme.value()),
                ]));
            }
        }
        for n in &self.preview.notes {
            lines.push(Line::from(Span::styled(format!("· {n}"), theme.source())));
        }
        lines
    }

    /// What the focused row does: its label and where it lives, then the
    /// description with its valid range.
    pub(super) fn help_lines(&self, width: usize, theme: &Theme) -> Vec<Line<'static>> {
        let f = self.focused();
        let place = if f.is_config() {
            f.path().to_string()
        } else if f == Field::Preset {
            format!("{}/", self.presets.root.display())
        } else {
            format!("meft {}", f.path())
        };
        let place = format!(" · {place}");
        let mut title = vec![Span::styled(f.label().to_string(), theme.key())];
        if f.label().chars().count() + place.chars().count() <= width {
            title.push(Span::styled(place, theme.source()));
        }
        vec![
            Line::from(title),
            Line::from(Span::styled(f.help(&self.exp), theme.text())),
        ]
    }

    /// Whether the config can start, or the one reason it cannot.
    pub(super) fn verdict_lines(&self, theme: &Theme) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        match (&self.preview.error, &self.invalid) {
            // The planner refuses what validation refuses: say it once.
            (Some(_), Some(_)) => lines.push(Line::from(Span::styled(
                "no prediction until the config is valid",
                theme.source(),
            ))),
            (Some(e), None) => lines.push(Line::from(Span::styled(
                format!("✗ planner: {e}"),
                theme.error(),
            ))),
            (None, _) => {}
        }
        lines.push(match (&self.edit_error, &self.invalid) {
            (Some(e), _) => Line::from(Span::styled(
                format!("✗ {}: {e}", self.focused().label()),
                theme.error(),
            )),
            (None, None) => Line::from(Span::styled("config valid ✓", theme.ok())),
            (None, Some((_, msg))) => {
                let lead = if self.refused {
                    "✗ cannot start: "
                } else {
                    "✗ "
                };
                Line::from(Span::styled(format!("{lead}{msg}"), theme.error()))
            }
        });
        if let Some((msg, is_err)) = &self.note {
            let style = if *is_err { theme.error() } else { theme.ok() };
            lines.push(Line::from(Span::styled(msg.clone(), style)));
        }
        lines
    }
}

/// Items joined with " · ", a new line whenever the next would pass `width`;
/// an item is never split.
fn pack(items: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for item in items {
        let joined = if line.is_empty() {
            item.clone()
        } else {
            format!("{line} · {item}")
        };
        if joined.chars().count() > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
            line = item.clone();
        } else {
            line = joined;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::pack;

    #[test]
    fn packing_keeps_items_whole() {
        let items: Vec<String> = ["base 24 MiB", "rows 7 MiB", "activations 250 MiB"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            pack(&items, 26),
            ["base 24 MiB · rows 7 MiB", "activations 250 MiB"]
        );
        assert_eq!(pack(&items, 5).len(), 3);
    }
}
