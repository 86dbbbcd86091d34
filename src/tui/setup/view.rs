//! Drawing the setup screen: the rows of knobs on the left, the planner's
//! prediction and the validation verdict on the right, the key hints, and
//! the save and help overlays.

use super::fields::{Field, Kind, FIELDS};
use super::keys::{EDIT_KEYS, FIELD_KEYS, HELP_KEYS, SAVE_PROMPT_KEYS};
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
            Field::Steps if self.exp.train.steps == 0 => Some("use epochs".into()),
            Field::Epochs if self.exp.train.steps > 0 => Some("steps win".into()),
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
        // The overlays name their own keys; the bar stays on the screen's.
        let bar = if self.edit.is_some() {
            EDIT_KEYS
        } else {
            FIELD_KEYS
        };
        overlay::hints(&keys::short_hints(bar), 3, theme, hint_row, buf);
        if self.help {
            overlay::help("setup keys", FIELD_KEYS, HELP_KEYS, theme, area, buf);
        }
    }

    fn render_fields(&self, theme: &Theme, area: Rect, buf: &mut Buffer) {
        const LABEL_W: usize = 12;
        let w = area.width as usize;
        let invalid_field = self.invalid.as_ref().and_then(|(f, _)| *f);
        let mut lines: Vec<Line> = Vec::new();
        for (i, &f) in FIELDS.iter().enumerate() {
            let focused = i == self.focus;
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
            let label_style = style(theme.key(), theme.label());
            let mut spans = vec![
                Span::styled(if focused { "▸" } else { " " }, theme.key()),
                Span::styled(format!("{:<LABEL_W$}", f.label()), label_style),
            ];
            let room = w.saturating_sub(LABEL_W + 2);
            match (&self.edit, focused) {
                (Some(text), true) => {
                    spans.push(Span::styled(
                        clip(text, room.saturating_sub(1)),
                        theme.focus(),
                    ));
                    spans.push(Span::styled("█", theme.key()));
                    if let Some(err) = &self.edit_error {
                        let used = text.chars().count() + 1;
                        spans.push(Span::styled(
                            format!(" ✗ {}", clip(err, room.saturating_sub(used + 3))),
                            theme.error(),
                        ));
                    }
                }
                _ => {
                    let value = match f.kind() {
                        Kind::Choice(_) if focused => format!("◀ {} ▶", f.get(&self.exp)),
                        _ => f.get(&self.exp),
                    };
                    let value = clip(&value, room);
                    let used = value.chars().count();
                    spans.push(Span::styled(value, style(theme.focus(), theme.value())));
                    let after = room.saturating_sub(used + 2);
                    if let (Some((Some(bad), msg)), true) =
                        (&self.invalid, invalid_field == Some(f))
                    {
                        // The path is implied by the row; the reason is what helps.
                        let reason = msg
                            .strip_prefix(bad.path())
                            .and_then(|m| m.strip_prefix(": "))
                            .unwrap_or(msg);
                        spans.push(Span::styled(
                            format!("  ✗ {}", clip(reason, after.saturating_sub(2))),
                            theme.error(),
                        ));
                    } else if let Some(a) = self.annotation(f).filter(|_| enabled) {
                        spans.push(Span::styled(
                            format!("  {}", clip(&a, after)),
                            theme.source(),
                        ));
                    }
                }
            }
            lines.push(Line::from(spans));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .render(area, buf);
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
        let p = &self.preview;
        let mut lines = vec![Line::from(Span::styled(
            "Predicted cost · planner",
            theme.pane_title(),
        ))];
        let label_w = p
            .lines
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            .min(14);
        for (label, value) in &p.lines {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{:<label_w$} ", clip(label, label_w)),
                    theme.label(),
                ),
                Span::styled(value.clone(), theme.value()),
            ]));
        }
        match p.fits {
            Some(true) => lines.push(Line::from(Span::styled("fits ✓", theme.ok()))),
            Some(false) => lines.push(Line::from(Span::styled("does not fit ✗", theme.error()))),
            None => {}
        }
        if let Some(e) = &p.error {
            lines.push(Line::from(Span::styled(format!("✗ {e}"), theme.error())));
        }
        lines.push(Line::raw(""));
        lines.push(match (&self.edit_error, &self.invalid) {
            (Some(e), _) => Line::from(Span::styled(
                format!("✗ {}: {e}", self.focused().path()),
                theme.error(),
            )),
            (None, None) => Line::from(Span::styled("config valid ✓", theme.ok())),
            (None, Some((_, msg))) => Line::from(Span::styled(format!("✗ {msg}"), theme.error())),
        });
        if let Some((msg, is_err)) = &self.note {
            let style = if *is_err { theme.error() } else { theme.ok() };
            lines.push(Line::raw(""));
            lines.push(Line::from(Span::styled(msg.clone(), style)));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .render(inner, buf);
    }
}
