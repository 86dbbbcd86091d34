//! Line charts for reports: series of (x, y) points overlaid on one pair
//! of axes, with ticks, axis titles and a legend, as SVG text or as PNG
//! (that SVG rasterised by resvg with the screenshots' fonts). Each series
//! has its own dash pattern as well as its own colour, so a chart printed
//! in grey still reads. Text is placed glyph by glyph at the monospace
//! font's advance, so it lands where it was laid out whatever renders it.

use anyhow::{anyhow, bail, Context};
use std::fmt::Write as _;
use std::path::Path;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// Points in x order; non-finite ones are left out of the line.
    pub points: Vec<(f64, f64)>,
}

/// A chart: its title, its axes' titles and its series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_title: String,
    pub y_title: String,
    pub series: Vec<Series>,
    /// A dot at every point (for a few points per line, where a single
    /// point would otherwise not show).
    pub markers: bool,
    /// The x axis in powers of ten (positive x only).
    pub x_log: bool,
}

/// The chart's geometry in SVG units (PNG pixels at scale 1).
const WIDTH: f64 = 880.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = WIDTH - 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = TOP + 360.0;
/// The legend starts this far below the plot area; one row per series.
const LEGEND_GAP: f64 = 62.0;
const LEGEND_ROW: f64 = 20.0;
/// The monospace font's advance per em (DejaVu Sans Mono: 1233/2048).
const ADVANCE: f64 = 0.602;
const TEXT: &str = "#1b1d23";
const GRID: &str = "#e3e5e8";
/// Colours apart for most colour vision, and dash patterns apart for none.
const COLOURS: [&str; 8] = [
    "#1f5fa8", "#c0392b", "#2a8a3e", "#7d3c98", "#d9820b", "#178a94", "#7a5230", "#c2478f",
];
const DASHES: [&str; 8] = [
    "",
    "9 4",
    "2 3",
    "10 3 2 3",
    "5 5",
    "14 3 2 3 2 3",
    "1.5 6",
    "18 6",
];
/// PNG pixels per SVG unit: sharp enough for a printed report.
const PNG_SCALE: f32 = 2.0;

/// Where text sits relative to its x.
#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// `s` as SVG text at one x per character, `size` px, anchored at `x`.
fn text(out: &mut String, x: f64, y: f64, s: &str, size: f64, anchor: Anchor, extra: &str) {
    let n = s.chars().count() as f64;
    let width = n * ADVANCE * size;
    let x0 = match anchor {
        Anchor::Start => x,
        Anchor::Middle => x - width / 2.0,
        Anchor::End => x - width,
    };
    let xs: Vec<String> = (0..s.chars().count())
        .map(|i| format!("{:.1}", x0 + i as f64 * ADVANCE * size))
        .collect();
    let _ = write!(
        out,
        r#"<text x="{}" y="{y:.1}" font-size="{size}"{extra}>"#,
        xs.join(" ")
    );
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push_str("</text>\n");
}

/// At most `max` characters, the cut marked with "…".
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Ticks 1, 2 or 5 × 10ⁿ apart covering [lo, hi], about `target` of them,
/// and the decimals their labels need.
pub fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        // One value: a unit-wide range around it.
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (ticks, decimals)
}

/// Ticks of a log10 axis covering [lo, hi] (in log10 units): the powers
/// of ten, and 2× and 5× them when the range spans under three decades.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = match hi > lo {
        true => (lo, hi),
        false => (lo - 0.5, hi + 0.5),
    };
    let (first, last) = (lo.floor() as i32, hi.ceil() as i32);
    let mut out = Vec::new();
    for e in first..=last {
        out.push(e as f64);
        if last - first < 3 && e < last {
            out.push(e as f64 + 2f64.log10());
            out.push(e as f64 + 5f64.log10());
        }
    }
    // Trim to the range, keeping one tick beyond each end.
    let start = out.iter().rposition(|&t| t <= lo + 1e-9).unwrap_or(0);
    let end = out
        .iter()
        .position(|&t| t >= hi - 1e-9)
        .unwrap_or(out.len() - 1);
    out[start..=end].to_vec()
}

/// A log axis tick's value, 10^t, short: "5e-3", "500", "2K", "10K", "1M".
fn power_label(t: f64) -> String {
    let v = 10f64.powf(t);
    if v < 0.99 {
        return format!("{v:.0e}");
    }
    let v = v.round();
    let (n, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "K"),
        v => (v, ""),
    };
    format!("{}{unit}", n.round())
}

fn label(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    // "-0" and "-0.0" read as 0.
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

impl Chart {
    fn finite(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.points.iter().map(|&(x, y)| (self.x_of(x), y)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }

    /// Where `x` sits on the axis: itself, or its log10 on a log axis.
    fn x_of(&self, x: f64) -> f64 {
        match (self.x_log, x > 0.0) {
            (false, _) => x,
            (true, true) => x.log10(),
            (true, false) => f64::NAN,
        }
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let pts: Vec<(f64, f64)> = self.finite().collect();
        let range = |f: fn(&(f64, f64)) -> f64| {
            let lo = pts.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = pts.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() {
                (lo, hi)
            } else {
                (0.0, 1.0)
            }
        };
        let (xt, xd) = {
            let (lo, hi) = range(|p| p.0);
            match self.x_log {
                true => (log_ticks(lo, hi), 0),
                false => ticks(lo, hi, 8),
            }
        };
        let (yt, yd) = {
            let (lo, hi) = range(|p| p.1);
            ticks(lo, hi, 6)
        };
        let (x0, x1) = (xt[0], xt[xt.len() - 1]);
        let (y0, y1) = (yt[0], yt[yt.len() - 1]);
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (RIGHT - LEFT);
        let sy = |y: f64| BOTTOM - (y - y0) / (y1 - y0) * (BOTTOM - TOP);
        let height = BOTTOM + LEGEND_GAP + self.series.len() as f64 * LEGEND_ROW + 8.0;

        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.1} {height:.1}">"#
        );
        let _ = writeln!(
            out,
            r##"<rect x="0" y="0" width="{WIDTH:.1}" height="{height:.1}" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            out,
            r#"<g font-family="{}, monospace" fill="{TEXT}">"#,
            crate::tui::export::FONT_FAMILY
        );
        text(
            &mut out,
            LEFT,
            TOP - 20.0,
            &self.title,
            15.0,
            Anchor::Start,
            r#" font-weight="bold""#,
        );
        // Grid and tick labels.
        for &x in &xt {
            let px = sx(x);
            let _ = writeln!(
                out,
                r#"<line x1="{px:.1}" y1="{TOP:.1}" x2="{px:.1}" y2="{:.1}" stroke="{GRID}"/>"#,
                BOTTOM + 5.0
            );
            text(
                &mut out,
                px,
                BOTTOM + 20.0,
                &match self.x_log {
                    true => power_label(x),
                    false => label(x, xd),
                },
                12.0,
                Anchor::Middle,
                "",
            );
        }
        for &y in &yt {
            let py = sy(y);
            let _ = writeln!(
                out,
                r#"<line x1="{:.1}" y1="{py:.1}" x2="{RIGHT:.1}" y2="{py:.1}" stroke="{GRID}"/>"#,
                LEFT - 5.0
            );
            text(
                &mut out,
                LEFT - 8.0,
                py + 4.0,
                &label(y, yd),
                12.0,
                Anchor::End,
                "",
            );
        }
        let _ = writeln!(
            out,
            r#"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="{TEXT}"/>"#,
            RIGHT - LEFT,
            BOTTOM - TOP
        );
        text(
            &mut out,
            (LEFT + RIGHT) / 2.0,
            BOTTOM + 42.0,
            &self.x_title,
            13.0,
            Anchor::Middle,
            "",
        );
        // The y title runs upwards: in the rotated frame x is minus the
        // screen's y and y is the screen's x.
        text(
            &mut out,
            -(TOP + BOTTOM) / 2.0,
            LEFT - 52.0,
            &self.y_title,
            13.0,
            Anchor::Middle,
            r#" transform="rotate(-90)""#,
        );
        out.push_str("</g>\n");

        // The lines, clipped to the plot area.
        let _ = writeln!(
            out,
            r#"<clipPath id="plot"><rect x="{LEFT:.1}" y="{TOP:.1}" width="{:.1}" height="{:.1}"/></clipPath>"#,
            RIGHT - LEFT,
            BOTTOM - TOP
        );
        for (i, s) in self.series.iter().enumerate() {
            let style = line_style(i);
            let points: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| (self.x_of(x), y))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if !points.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline clip-path="url(#plot)" points="{}" {style}/>"#,
                    points.join(" ")
                );
            }
            if self.markers {
                for p in &points {
                    let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                        COLOURS[i % COLOURS.len()]
                    );
                }
            }
            // The legend: a sample of the line, then its label.
            let ly = BOTTOM + LEGEND_GAP + i as f64 * LEGEND_ROW;
            let _ = writeln!(
                out,
                r#"<line x1="{LEFT:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" {style}/>"#,
                ly - 4.0,
                LEFT + 44.0,
                ly - 4.0
            );
            let max = ((RIGHT - LEFT - 56.0) / (ADVANCE * 12.0)) as usize;
            let mut name = s.label.clone();
            if points.is_empty() {
                name += " (no points)";
            }
            let _ = writeln!(
                out,
                r#"<g font-family="{}, monospace" fill="{TEXT}">"#,
                crate::tui::export::FONT_FAMILY
            );
            text(
                &mut out,
                LEFT + 56.0,
                ly,
                &fit(&name, max),
                12.0,
                Anchor::Start,
                "",
            );
            out.push_str("</g>\n");
        }
        out.push_str("</svg>\n");
        out
    }

    /// The chart as a PNG image.
    pub fn png(&self) -> anyhow::Result<Vec<u8>> {
        let opt = crate::tui::export::font_options()?;
        let tree =
            resvg::usvg::Tree::from_str(&self.svg(), &opt).context("laying out the chart")?;
        let size = tree.size().to_int_size().scale_by(PNG_SCALE);
        let (w, h) = size.map(|s| (s.width(), s.height())).unwrap_or((0, 0));
        let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h)
            .ok_or_else(|| anyhow!("cannot make a {w}x{h} image"))?;
        let scale = resvg::tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE);
        resvg::render(&tree, scale, &mut pixmap.as_mut());
        pixmap.encode_png().context("encoding the PNG")
    }

    /// Write the chart to `out` as its extension says (.svg or .png).
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let bytes = match format_of(out)? {
            Format::Svg => self.svg().into_bytes(),
            Format::Png => self.png()?,
        };
        crate::fsx::write_atomic(out, &bytes)
            .with_context(|| format!("{}: cannot write", out.display()))
    }
}

/// A series' stroke: its colour and dash pattern.
fn line_style(i: usize) -> String {
    let dash = DASHES[i % DASHES.len()];
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(r#" stroke-dasharray="{dash}""#)
    };
    format!(
        r#"fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round"{dash}"#,
        COLOURS[i % COLOURS.len()]
    )
}

/// What a chart file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

/// The format `out`'s extension names.
pub fn format_of(out: &Path) -> anyhow::Result<Format> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("svg") => Ok(Format::Svg),
        Some("png") => Ok(Format::Png),
        _ => bail!("{}: a chart is written as .svg or .png", out.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_lines() -> Chart {
        Chart {
            title: "loss".into(),
            x_title: "step".into(),
            y_title: "loss".into(),
            series: vec![
                Series {
                    label: "up".into(),
                    points: vec![(0.0, 0.0), (5.0, 5.0), (10.0, 10.0)],
                },
                Series {
                    label: "down".into(),
                    points: vec![(0.0, 10.0), (5.0, f64::NAN), (10.0, 0.0)],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn ticks_are_round_numbers_covering_the_range() {
        assert_eq!(
            ticks(0.0, 10.0, 5),
            (vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0], 0)
        );
        assert_eq!(ticks(1.0, 200.0, 8).0.first(), Some(&0.0));
        assert_eq!(ticks(1.0, 200.0, 8).0.last(), Some(&200.0));
        let (t, d) = ticks(2.13, 2.61, 6);
        assert_eq!(d, 1);
        assert_eq!(
            t.iter().map(|v| label(*v, d)).collect::<Vec<_>>(),
            ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7"]
        );
        // One value still gets an axis.
        assert!(ticks(3.0, 3.0, 6).0.len() > 1);
    }

    #[test]
    fn two_known_series_land_where_a_ruler_says() {
        let svg = two_lines().svg();
        // x 0..10 spans 80..856, y 0..10 spans 408..48.
        assert!(
            svg.contains(r#"points="80.0,408.0 468.0,228.0 856.0,48.0""#),
            "{svg}"
        );
        // The NaN point is left out of the second line.
        assert!(svg.contains(r#"points="80.0,48.0 856.0,408.0""#), "{svg}");
        // Distinct dash patterns: solid, then the first dashed one.
        assert!(svg.contains(r##"stroke="#1f5fa8" stroke-width="1.8" stroke-linejoin="round"/>"##));
        assert!(svg.contains(r#"stroke-dasharray="9 4""#));
        // Tick labels 0, 2, …, 10 on both axes; "10" centred under x = 856
        // at 12 px (two glyphs of 7.224).
        assert!(
            svg.contains(r#"<text x="848.8 856.0" y="428.0" font-size="12">10</text>"#),
            "{svg}"
        );
        for t in ["0", "2", "4", "6", "8", "10"] {
            assert!(svg.contains(&format!(">{t}</text>")), "{t}");
        }
        // The legend names both, in order.
        let up = svg.find(">up</text>").unwrap_or(usize::MAX);
        let down = svg.find(">down</text>").unwrap_or(0);
        assert!(up < down);
    }

    #[test]
    fn log_ticks_are_powers_of_ten_and_their_halves_and_fifths() {
        let t: Vec<String> = log_ticks(2.0, 4.0)
            .iter()
            .map(|&t| power_label(t))
            .collect();
        assert_eq!(t, ["100", "200", "500", "1K", "2K", "5K", "10K"]);
        // Wider ranges keep the powers only.
        let t: Vec<String> = log_ticks(3.3, 7.2)
            .iter()
            .map(|&t| power_label(t))
            .collect();
        assert_eq!(t, ["1K", "10K", "100K", "1M", "10M", "100M"]);
        let t: Vec<String> = log_ticks(-2.5, -2.0)
            .iter()
            .map(|&t| power_label(t))
            .collect();
        assert_eq!(t, ["2e-3", "5e-3", "1e-2"]);
    }

    #[test]
    fn markers_draw_a_dot_per_point_on_a_log_axis() {
        let svg = Chart {
            series: vec![Series {
                label: "one".into(),
                points: vec![(1000.0, 0.5), (0.0, 0.7)],
            }],
            markers: true,
            x_log: true,
            ..Default::default()
        }
        .svg();
        // x = 0 has no place on a log axis: one dot, at 1K.
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains(">1K</text>"));
    }

    #[test]
    fn an_empty_chart_still_draws_axes() {
        let svg = Chart {
            series: vec![Series {
                label: "none".into(),
                points: vec![(1.0, f64::NAN)],
            }],
            ..Default::default()
        }
        .svg();
        assert!(svg.contains("none (no points)"));
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn the_png_is_a_png() -> anyhow::Result<()> {
        let png = two_lines().png()?;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height at twice the SVG's units.
        let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        assert_eq!(w, 1760);
        Ok(())
    }

    #[test]
    fn formats_by_extension() {
        assert_eq!(format_of(Path::new("a.SVG")).ok(), Some(Format::Svg));
        assert_eq!(format_of(Path::new("a.png")).ok(), Some(Format::Png));
        let err = format_of(Path::new("a.jpg")).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("a.jpg: a chart is written as .svg or .png")
        );
    }
}
