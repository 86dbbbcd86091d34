//! Drawing the setup screen: the rows of knobs on the left, the planner's
//! comparison, the verdict and the focused knob's description on the right,
//! the key hints, and the preset, save and help overlays.

use super::fields::{Field, Kind, FIELDS};
use super::keys::{
    EDIT_KEYS, FIELD_KEYS, HELP_KEYS, PICKER_KEYS, PRESET_ROW_KEYS, SAVE_PROMPT_KEYS,
    TEXT_FIELD_KEYS,
};
use super::state::Setup;
use crate::tui::keys;
use crate::tui::overlay;
use crate::tui::panes::{clip, frame};
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};

impl Setup {
    /// What the field shows beside its value (derived figures).
    fn annotation(&self, f: Field) -> Option<String> {
        let m = &self.exp.method.meft;
        match f {
            Field::TopK if m.neurons > 0 => Some(format!(
                "{:.2} % of M",
                m.top_k as f64 * 100.0 / m.neurons as f64
            )),
            Field::Experts => {
                let e = m.resolved_experts();
                let keys = m.neurons.checked_div(e).unwrap_or(0);
                Some(if m.experts == 0 {
                    format!("auto → {e} × {keys} keys")
                } else {
                    format!("× {keys} keys")
                })
            }
            Field::Steps if self.exp.train.steps == 0 => Some("Epochs set the length".into()),
            Field::Epochs if self.exp.train.steps > 0 => Some("off: Steps is set".into()),
            Field::Preset => self
                .preset
                .and_then(|i| self.presets.all.get(i))
                .map(|p| p.path.display().to_string()),
            Field::MicroBatch if self.exp.train.micro_batch > 0 => Some(format!(
                "{} accumulation",
                self.exp.train.batch / self.exp.train.micro_batch.max(1)
            )),
            _ => None,
        }
    }

    pub fn render(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        if overlay::too_small(area, theme, buf) {
            return;
        }
        let [main, hint_row] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
        let inner = frame("meft · new run", theme, main, buf);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(inner);
        self.render_fields(theme, left, buf);
        self.render_preview(theme, right, buf);

        if let Some(path) = &self.save_prompt {
            let inner = overlay::dialog("save preset", 60, 5, theme, area, buf);
            let prompt_keys = keys::short_hints(SAVE_PROMPT_KEYS)
                .iter()
                .map(|(k, a)| format!("{k} {a}"))
                .collect::<Vec<_>>()
                .join(" · ");
            Paragraph::new(vec![
                Line::from(Span::styled("path of the preset TOML:", theme.label())),
                Line::from(vec![
                    Span::styled(path.clone(), theme.value()),
                    Span::styled("█", theme.key()),
                ]),
                Line::from(Span::styled(prompt_keys, theme.source())),
            ])
            .render(inner, buf);
        }
        if let Some(row) = self.picker {
            self.render_picker(row, theme, area, buf);
        }
        // The overlays name their own keys; the bar stays on the screen's.
        let bar = if self.edit.is_some() {
            EDIT_KEYS
        } else if self.focused().kind() == Kind::Preset {
            PRESET_ROW_KEYS
        } else if self.focused().kind() == Kind::Text {
            TEXT_FIELD_KEYS
        } else {
            FIELD_KEYS
        };
        overlay::hints(&keys::short_hints(bar), 3, theme, hint_row, buf);
        if self.help {
            overlay::help("setup keys", FIELD_KEYS, HELP_KEYS, theme, area, buf);
        }
    }

    /// One knob's row: marker, label, value, and its annotation or ✗.
    fn row_line(&self, f: Field, width: usize, theme: &Theme) -> Line<'static> {
        const LABEL_W: usize = 12;
        let focused = f == self.focused();
        let enabled = self.enabled(f);
        // A field that does not apply to the method is greyed out whatever the focus.
        let style = |on_focus: Style, normal: Style| {
            if !enabled {
                theme.disabled()
            } else if focused {
                on_focus
            } else {
                normal
            }
        };
        let mut spans = vec![
            Span::styled(if focused { "▸" } else { " " }, theme.key()),
            Span::styled(
                format!("{:<LABEL_W$}", f.label()),
                style(theme.key(), theme.label()),
            ),
        ];
        let room = width.saturating_sub(LABEL_W + 2);
        let bad = self.invalid.as_ref().and_then(|(b, _)| *b) == Some(f);
        match (&self.edit, focused) {
            (Some(text), true) => {
                // The end of a long text stays in view while typing.
                let shown = room.saturating_sub(3);
                let tail: String = {
                    let n = text.chars().count();
                    text.chars().skip(n.saturating_sub(shown)).collect()
                };
                spans.push(Span::styled(tail, theme.focus()));
                spans.push(Span::styled("█", theme.key()));
                if self.edit_error.is_some() {
                    // The reason is told once, on the right.
                    spans.push(Span::styled(" ✗", theme.error()));
                }
            }
            _ => {
                let value = if f.kind() == Kind::Preset {
                    self.preset_label()
                } else if f.is_knob() {
                    f.knob_get(&self.knobs)
                } else {
                    f.get(&self.exp)
                };
                let value = match f.kind() {
                    Kind::Choice(_) | Kind::Preset if focused => format!("◀ {value} ▶"),
                    _ => value,
                };
                let value = clip(&value, room.saturating_sub(if bad { 3 } else { 0 }));
                let used = value.chars().count();
                spans.push(Span::styled(value, style(theme.focus(), theme.value())));
                if bad {
                    // The reason is told once, on the right.
                    spans.push(Span::styled("  ✗", theme.error()));
                } else if let Some(was) = self.was(f) {
                    let a = format!("  was {was}");
                    if used + a.chars().count() <= room {
                        spans.push(Span::styled(a, theme.key()));
                    }
                } else if let Some(a) = self.annotation(f).filter(|_| enabled) {
                    // An annotation shows whole or not at all.
                    if used + 2 + a.chars().count() <= room {
                        spans.push(Span::styled(format!("  {a}"), theme.source()));
                    }
                }
            }
        }
        Line::from(spans)
    }

    fn render_fields(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        let w = area.width as usize;
        let lines: Vec<Line> = FIELDS
            .iter()
            .filter(|f| !f.is_knob())
            .map(|&f| self.row_line(f, w, theme))
            .collect();
        Paragraph::new(lines).render(area, buf);
    }

    fn render_preview(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        let block = Block::default()
            .borders(Borders::LEFT)
            .border_style(theme.border());
        let inner = block.inner(area);
        block.render(area, buf);
        // A one-column margin that wrapped lines keep too.
        let inner = Rect {
            x: inner.x.saturating_add(1).min(inner.right()),
            width: inner.width.saturating_sub(1),
            ..inner
        };
        let w = inner.width as usize;
        let mut lines = vec![Line::from(Span::styled(
            "Predicted cost · planner",
            theme.pane_title(),
        ))];
        for f in FIELDS.iter().filter(|f| f.is_knob()) {
            lines.push(self.row_line(*f, w, theme));
        }
        if !self.preview.union_note.is_empty() {
            lines.push(Line::from(Span::styled(
                format!("|U| {}", self.preview.union_note),
                theme.source(),
            )));
        }
        lines.extend(self.table_lines(w, theme));
        lines.extend(self.offload_line(w, theme));
        lines.push(Line::raw(""));
        lines.extend(self.verdict_lines(theme));
        lines.push(Line::raw(""));
        lines.extend(self.help_lines(w, theme));
        // A tall, wide pane has room for how the chosen method's bytes add up.
        if inner.height >= 40 && w >= 60 {
            lines.push(Line::raw(""));
            lines.push(Line::from(Span::styled(
                format!("{} by category · planner", self.exp.method.kind),
                theme.pane_title(),
            )));
            lines.extend(self.breakdown_lines(w, theme));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .render(inner, buf);
    }

    /// The preset list over the screen, the loaded one marked.
    fn render_picker(&self, row: usize, theme: &Theme, area: Rect, buf: &mut Buffer) {
        let presets = &self.presets;
        let n = presets.all.len();
        let about = |e: &crate::config::Experiment| {
            let m = &e.method.meft;
            let size = match e.method.kind {
                crate::config::MethodKind::Meft => format!("M {} K {}", m.neurons, m.top_k),
                crate::config::MethodKind::Parallel => {
                    format!("size {}", e.method.parallel.size)
                }
                crate::config::MethodKind::Lora => format!("r {}", e.method.lora.rank),
                _ => String::new(),
            };
            format!(
                "{} · {} {size} · {}",
                e.data.task, e.method.kind, e.model.reference
            )
        };
        let label_w = (0..n)
            .map(|i| presets.label(i).chars().count())
            .max()
            .unwrap_or(0);
        let about_w = presets
            .all
            .iter()
            .map(|p| about(&p.exp).chars().count())
            .max()
            .unwrap_or(0);
        // As wide as the longest line wants, within the screen.
        let want = (label_w + about_w + 6).max(40) as u16;
        let h = (n as u16 + 3).min(area.height.saturating_sub(2));
        let inner = overlay::dialog(
            "presets",
            want.min(area.width.saturating_sub(4)),
            h,
            theme,
            area,
            buf,
        );
        let w = inner.width as usize;
        let visible = (inner.height as usize).saturating_sub(1).max(1);
        let first = row.saturating_sub(visible - 1);
        let label_w = label_w.min(w / 2);
        let mut lines: Vec<Line> = Vec::new();
        if n == 0 {
            lines.push(Line::from(Span::styled(
                format!("no presets in {}", presets.root.display()),
                theme.error(),
            )));
        }
        for (i, p) in presets.all.iter().enumerate().skip(first).take(visible) {
            let about = about(&p.exp);
            let marker = if self.preset == Some(i) { "●" } else { " " };
            let focused = i == row;
            let style = if focused {
                theme.focus()
            } else {
                theme.value()
            };
            let label = clip(&presets.label(i), label_w);
            let room = w.saturating_sub(label_w + 4);
            lines.push(Line::from(vec![
                Span::styled(if focused { "▸" } else { " " }, theme.key()),
                Span::styled(marker, theme.ok()),
                Span::styled(format!("{label:<label_w$}  "), style),
                Span::styled(whole_words(&about, room), theme.source()),
            ]));
        }
        let keys_line = keys::short_hints(PICKER_KEYS)
            .iter()
            .map(|(k, a)| format!("{k} {a}"))
            .collect::<Vec<_>>()
            .join(" · ");
        lines.push(Line::from(Span::styled(keys_line, theme.source())));
        Paragraph::new(lines).render(inner, buf);
    }
}

/// As many whole words of `s` as fit in `max` columns (an ellipsis when
/// some are left out), so a figure is never cut.
fn whole_words(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out = String::new();
    for word in s.split(' ') {
        let next = if out.is_empty() {
            word.to_string()
        } else {
            format!("{out} {word}")
        };
        if next.chars().count() + 1 > max {
            break;
        }
        out = next;
    }
    if out.is_empty() {
        return String::new();
    }
    out.push('…');
    out
}
