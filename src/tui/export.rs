//! Pictures of the screen: a [`Buffer`] as SVG, as PNG (the SVG rasterised
//! by resvg, at a chosen scale) and as plain text. `meft screenshot` and the
//! dashboard's `s` key both end here. A picture is for a report: a caption
//! (run, step, training time, machine) takes the place of the key hints.
//!
//! The SVG holds the terminal's grid in every renderer: braille dots, block
//! elements and box-drawing lines are drawn as shapes in their cells, and
//! text is placed character by character at the cell's x, so no font's
//! advance (or a fallback font's) can shift a row.

use crate::event::Event;
use crate::fsx::write_atomic;
use crate::tui::dashboard::{self, Chrome};
use crate::tui::replay::{check_step, state_at};
use crate::tui::state::{DashboardState, ViewOptions};
use anyhow::{anyhow, bail, Context};
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use std::fmt::Write as _;
use std::path::Path;

/// Cell geometry in SVG user units (one unit = one PNG pixel). DejaVu Sans
/// Mono advances 0.602 em, so at 15 px a glyph is 9.03 wide: whole-pixel
/// 9-unit cells keep block and box-drawing glyphs free of anti-aliased
/// seams, and 17-unit rows are just under the font's 1.164 em line, so
/// vertical lines join.
const FONT_SIZE: f64 = 15.0;
const CELL_W: f64 = 9.0;
const CELL_H: f64 = 17.0;
const BASELINE: f64 = 13.6;
pub(crate) const FONT_FAMILY: &str = "DejaVu Sans Mono";
const DEFAULT_FG: &str = "#d7dae0";
const DEFAULT_BG: &str = "#1b1d23";

/// The dashboard (no overlays) drawn into a fresh buffer.
pub fn render_dashboard(state: &DashboardState, width: u16, height: u16) -> Buffer {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    dashboard::render(state, &Chrome::default(), area, &mut buf);
    buf
}

/// The dashboard as a picture: a caption where the key hints would be.
pub fn render_picture(state: &DashboardState, width: u16, height: u16) -> Buffer {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    let chrome = Chrome {
        picture: true,
        ..Chrome::default()
    };
    dashboard::render(state, &chrome, area, &mut buf);
    buf
}

/// What `meft screenshot` draws: which step, at what size, and how many
/// image pixels per SVG unit for a PNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Picture {
    /// The recorded step to show; `None` for the end of the log.
    pub step: Option<u64>,
    /// Columns and rows of the terminal drawn.
    pub size: (u16, u16),
    pub scale: f32,
}

impl Default for Picture {
    fn default() -> Self {
        Self {
            step: None,
            size: (120, 40),
            scale: 1.0,
        }
    }
}

/// The largest `--scale`: a 200×60 dashboard at 8× is already 14400 pixels wide.
pub const MAX_SCALE: f32 = 8.0;

/// Render the dashboard of a recorded run as it was at `pic.step` to
/// `out`; the extension picks the format: `.svg`, `.png` or `.txt`.
pub fn screenshot(events: &[Event], pic: &Picture, out: &Path) -> anyhow::Result<()> {
    let (w, h) = pic.size;
    if w < crate::tui::overlay::MIN_WIDTH || h < crate::tui::overlay::MIN_HEIGHT {
        bail!("--size {w}x{h}: the dashboard needs at least 80x24");
    }
    let format = picture_format(out)?;
    check_scale(pic.scale, &format)?;
    if let Some(step) = pic.step {
        check_step(events, step).map_err(|e| anyhow!(e))?;
    }
    // A picture is for a report, so it keeps colour whatever the terminal's NO_COLOR says.
    let state = state_at(events, pic.step, ViewOptions::default());
    let buf = render_picture(&state, w, h);
    write_scaled(&buf, out, pic.scale)
}

/// A scale is for PNGs (an SVG scales itself), between 1/4 and [`MAX_SCALE`].
pub fn check_scale(scale: f32, format: &str) -> anyhow::Result<()> {
    if !(0.25..=MAX_SCALE).contains(&scale) {
        bail!(
            "--scale {scale}: expected a factor from 0.25 to {MAX_SCALE}, e.g. 2 for a sharper PNG"
        );
    }
    if format != "png" && (scale - 1.0).abs() > f32::EPSILON {
        bail!("--scale {scale}: only a .png picture has pixels to scale; an .svg scales by itself");
    }
    Ok(())
}

/// The picture format `out`'s extension names: svg, png or txt.
pub fn picture_format(out: &Path) -> anyhow::Result<String> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "svg" | "png" | "txt" => Ok(ext),
        _ => bail!(
            "{}: unknown picture format; use a .svg, .png or .txt name",
            out.display()
        ),
    }
}

/// Write `buf` to `out` in the format its extension names, atomically.
pub fn write_buffer(buf: &Buffer, out: &Path) -> anyhow::Result<()> {
    write_scaled(buf, out, 1.0)
}

/// [`write_buffer`] with a PNG of `scale` pixels per SVG unit.
pub fn write_scaled(buf: &Buffer, out: &Path, scale: f32) -> anyhow::Result<()> {
    let bytes = match picture_format(out)?.as_str() {
        "svg" => to_svg(buf).into_bytes(),
        "png" => to_png_scaled(buf, scale)?,
        _ => to_text(buf).into_bytes(),
    };
    write_atomic(out, &bytes).with_context(|| format!("{}: cannot write", out.display()))
}

/// `120x40` → (120, 40).
pub fn parse_size(s: &str) -> anyhow::Result<(u16, u16)> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| anyhow!("--size {s:?}: expected WIDTHxHEIGHT, e.g. 120x40"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u16>()
            .map_err(|_| anyhow!("--size {s:?}: expected WIDTHxHEIGHT, e.g. 120x40"))
    };
    let (w, h) = (parse(w)?, parse(h)?);
    if w < crate::tui::overlay::MIN_WIDTH || h < crate::tui::overlay::MIN_HEIGHT {
        bail!("--size {s:?}: the dashboard needs at least 80x24");
    }
    Ok((w, h))
}

/// Plain text, one line per row, trailing blanks trimmed.
pub fn to_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn xml_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
}

/// The xterm palette, tuned for a dark background.
fn named(i: u8) -> (u8, u8, u8) {
    const P: [(u8, u8, u8); 16] = [
        (0x28, 0x2c, 0x34),
        (0xe0, 0x6c, 0x75),
        (0x98, 0xc3, 0x79),
        (0xe5, 0xc0, 0x7b),
        (0x61, 0xaf, 0xef),
        (0xc6, 0x78, 0xdd),
        (0x56, 0xb6, 0xc2),
        (0xab, 0xb2, 0xbf),
        (0x5c, 0x63, 0x70),
        (0xff, 0x7b, 0x86),
        (0xb5, 0xe8, 0x90),
        (0xf0, 0xd5, 0x8c),
        (0x8c, 0xc8, 0xff),
        (0xde, 0x9b, 0xf0),
        (0x7f, 0xd4, 0xdf),
        (0xff, 0xff, 0xff),
    ];
    P[(i & 15) as usize]
}

fn indexed(i: u8) -> (u8, u8, u8) {
    match i {
        0..=15 => named(i),
        16..=231 => {
            let i = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            (level(i / 36), level((i / 6) % 6), level(i % 6))
        }
        _ => {
            let g = 8 + (i - 232) * 10;
            (g, g, g)
        }
    }
}

/// `None` means the terminal's default.
fn rgb(c: Color) -> Option<(u8, u8, u8)> {
    Some(match c {
        Color::Reset => return None,
        Color::Black => named(0),
        Color::Red => named(1),
        Color::Green => named(2),
        Color::Yellow => named(3),
        Color::Blue => named(4),
        Color::Magenta => named(5),
        Color::Cyan => named(6),
        Color::Gray => named(7),
        Color::DarkGray => named(8),
        Color::LightRed => named(9),
        Color::LightGreen => named(10),
        Color::LightYellow => named(11),
        Color::LightBlue => named(12),
        Color::LightMagenta => named(13),
        Color::LightCyan => named(14),
        Color::White => named(15),
        Color::Rgb(r, g, b) => (r, g, b),
        Color::Indexed(i) => indexed(i),
    })
}

fn hex(c: Option<(u8, u8, u8)>, default: &str) -> String {
    match c {
        Some((r, g, b)) => format!("#{r:02x}{g:02x}{b:02x}"),
        None => default.to_string(),
    }
}

/// Foreground and background after REVERSED is applied.
fn colors(cell: &Cell) -> (String, String) {
    let fg = hex(rgb(cell.fg), DEFAULT_FG);
    let bg = hex(rgb(cell.bg), DEFAULT_BG);
    if cell.modifier.contains(Modifier::REVERSED) {
        (bg, fg)
    } else {
        (fg, bg)
    }
}

/// The parts of a cell's style that change how its text is drawn.
#[derive(PartialEq)]
struct TextStyle {
    fill: String,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

fn text_style(cell: &Cell) -> TextStyle {
    let m = cell.modifier;
    TextStyle {
        fill: colors(cell).0,
        bold: m.contains(Modifier::BOLD),
        dim: m.contains(Modifier::DIM),
        italic: m.contains(Modifier::ITALIC),
        underline: m.contains(Modifier::UNDERLINED),
    }
}

fn open_text(style: &TextStyle, y: f64, xs: &[f64], out: &mut String) {
    let x_list: Vec<String> = xs.iter().map(|x| format!("{x:.1}")).collect();
    let _ = write!(
        out,
        r#"<text x="{}" y="{y:.1}" fill="{}""#,
        x_list.join(" "),
        style.fill
    );
    if style.bold {
        out.push_str(r#" font-weight="bold""#);
    }
    if style.dim {
        out.push_str(r#" fill-opacity="0.6""#);
    }
    if style.italic {
        out.push_str(r#" font-style="italic""#);
    }
    if style.underline {
        out.push_str(r#" text-decoration="underline""#);
    }
    out.push('>');
}

/// The buffer as an SVG document: one background rectangle per run of
/// same-coloured cells, and each run of same-styled text placed cell by
/// cell so the grid holds even where a glyph comes from a fallback font.
pub fn to_svg(buf: &Buffer) -> String {
    let area = buf.area;
    let w = area.width as f64 * CELL_W;
    let h = area.height as f64 * CELL_H;
    let mut out = String::with_capacity(area.area() as usize * 24);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.1} {h:.1}" xml:space="preserve">"#
    );
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{w:.1}" height="{h:.1}" fill="{DEFAULT_BG}"/>"#
    );

    // Backgrounds first, so text is drawn over them.
    for (row, y) in (area.top()..area.bottom()).enumerate() {
        let mut x = area.left();
        while x < area.right() {
            let bg = colors(&buf[(x, y)]).1;
            let start = x;
            while x < area.right() && colors(&buf[(x, y)]).1 == bg {
                x += 1;
            }
            if bg != DEFAULT_BG {
                let _ = writeln!(
                    out,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{CELL_H:.1}" fill="{bg}"/>"#,
                    (start - area.left()) as f64 * CELL_W,
                    row as f64 * CELL_H,
                    (x - start) as f64 * CELL_W,
                );
            }
        }
    }

    // Shapes and text are gathered apart and written in that order.
    let mut shapes = String::new();
    let mut texts = String::new();
    for (row, y) in (area.top()..area.bottom()).enumerate() {
        let baseline = row as f64 * CELL_H + BASELINE;
        let mut run: Option<(TextStyle, Vec<f64>, String)> = None;
        let flush = |run: &mut Option<(TextStyle, Vec<f64>, String)>, out: &mut String| {
            if let Some((style, mut xs, text)) = run.take() {
                // Trailing blanks carry no ink.
                let trimmed = text.trim_end_matches(' ');
                xs.truncate(trimmed.chars().count());
                open_text(&style, baseline, &xs, out);
                xml_escape(trimmed, out);
                out.push_str("</text>\n");
            }
        };
        for (col, x) in (area.left()..area.right()).enumerate() {
            let cell = &buf[(x, y)];
            let sym = cell.symbol();
            let cx = col as f64 * CELL_W;
            let top = row as f64 * CELL_H;
            if draw_shape(sym, cell, cx, top, &mut shapes) {
                flush(&mut run, &mut texts);
                continue;
            }
            if sym.trim().is_empty() {
                // A blank inside a run of text stays in it, so words read as
                // one string; blanks between runs are skipped. The trailing
                // half of a wide glyph is empty and skipped too.
                if let (Some((_, xs, text)), false) = (run.as_mut(), sym.is_empty()) {
                    xs.push(cx);
                    text.push(' ');
                }
                continue;
            }
            let style = text_style(cell);
            if run.as_ref().is_some_and(|(s, _, _)| *s != style) {
                flush(&mut run, &mut texts);
            }
            let entry = run.get_or_insert_with(|| (style, Vec::new(), String::new()));
            // One x per character: a grapheme of several chars shares its cell.
            for _ in sym.chars() {
                entry.1.push(cx);
            }
            entry.2.push_str(sym);
        }
        flush(&mut run, &mut texts);
    }
    out.push_str(&shapes);
    let _ = writeln!(
        out,
        r#"<g font-family="{FONT_FAMILY}, monospace" font-size="{FONT_SIZE}">"#
    );
    out.push_str(&texts);
    out.push_str("</g>\n</svg>\n");
    out
}

/// Draw a braille pattern, block element or box-drawing line as shapes in
/// its cell (left `x`, top `y`); false for any other character.
fn draw_shape(sym: &str, cell: &Cell, x: f64, y: f64, out: &mut String) -> bool {
    let mut chars = sym.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return false;
    };
    let style = text_style(cell);
    let fill = if style.dim {
        format!(r#"fill="{}" fill-opacity="0.6""#, style.fill)
    } else {
        format!(r#"fill="{}""#, style.fill)
    };
    let rect = |out: &mut String, rx: f64, ry: f64, w: f64, h: f64| {
        let _ = writeln!(
            out,
            r#"<rect x="{rx:.2}" y="{ry:.2}" width="{w:.2}" height="{h:.2}" {fill}/>"#
        );
    };
    match c {
        '\u{2801}'..='\u{28ff}' => {
            // Dots 1–3 and 7 down the left column, 4–6 and 8 down the right.
            const DOTS: [(u32, f64, f64); 8] = [
                (0x01, 0.0, 0.0),
                (0x02, 0.0, 1.0),
                (0x04, 0.0, 2.0),
                (0x08, 1.0, 0.0),
                (0x10, 1.0, 1.0),
                (0x20, 1.0, 2.0),
                (0x40, 0.0, 3.0),
                (0x80, 1.0, 3.0),
            ];
            let bits = c as u32 - 0x2800;
            for (bit, col, row) in DOTS {
                if bits & bit != 0 {
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="1.25" {fill}/>"#,
                        x + (col + 0.5) * CELL_W / 2.0,
                        y + (row + 0.5) * CELL_H / 4.0,
                    );
                }
            }
            true
        }
        '\u{2581}'..='\u{2588}' => {
            // Lower eighths, ▁ to █.
            let h = CELL_H * (c as u32 - 0x2580) as f64 / 8.0;
            rect(out, x, y + CELL_H - h, CELL_W, h);
            true
        }
        '▀' => {
            rect(out, x, y, CELL_W, CELL_H / 2.0);
            true
        }
        '▌' => {
            rect(out, x, y, CELL_W / 2.0, CELL_H);
            true
        }
        '▐' => {
            rect(out, x + CELL_W / 2.0, y, CELL_W / 2.0, CELL_H);
            true
        }
        _ => match box_arms(c) {
            Some((left, right, up, down)) => {
                // Light lines through the cell's centre, one unit thick,
                // reaching the edges so neighbouring cells join.
                let (mx, my) = (x + CELL_W / 2.0, y + CELL_H / 2.0);
                let t = 1.0;
                let x0 = if left { x } else { mx - t / 2.0 };
                let x1 = if right { x + CELL_W } else { mx + t / 2.0 };
                if left || right {
                    rect(out, x0, my - t / 2.0, x1 - x0, t);
                }
                let y0 = if up { y } else { my - t / 2.0 };
                let y1 = if down { y + CELL_H } else { my + t / 2.0 };
                if up || down {
                    rect(out, mx - t / 2.0, y0, t, y1 - y0);
                }
                true
            }
            None => false,
        },
    }
}

/// Which arms (left, right, up, down) a light box-drawing character has.
fn box_arms(c: char) -> Option<(bool, bool, bool, bool)> {
    Some(match c {
        '─' => (true, true, false, false),
        '│' => (false, false, true, true),
        '┌' => (false, true, false, true),
        '┐' => (true, false, false, true),
        '└' => (false, true, true, false),
        '┘' => (true, false, true, false),
        '├' => (false, true, true, true),
        '┤' => (true, false, true, true),
        '┬' => (true, true, false, true),
        '┴' => (true, true, true, false),
        '┼' => (true, true, true, true),
        _ => return None,
    })
}

/// Fonts for rasterising: the system's, then `assets/fonts/` (next to the
/// working directory and next to the crate) so a machine without system
/// fonts still renders text.
pub(crate) fn font_options() -> anyhow::Result<resvg::usvg::Options<'static>> {
    let mut opt = resvg::usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        ..Default::default()
    };
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    for dir in [
        Path::new("assets/fonts").to_path_buf(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fonts"),
    ] {
        if dir.is_dir() {
            db.load_fonts_dir(dir);
        }
    }
    if db.is_empty() {
        bail!(
            "no fonts found to draw text: install DejaVu Sans Mono or put a .ttf in assets/fonts/"
        );
    }
    db.set_monospace_family(FONT_FAMILY);
    Ok(opt)
}

/// The buffer as a PNG image (the SVG rasterised at one pixel per unit).
pub fn to_png(buf: &Buffer) -> anyhow::Result<Vec<u8>> {
    to_png_scaled(buf, 1.0)
}

/// The buffer as a PNG image of `scale` pixels per SVG unit.
pub fn to_png_scaled(buf: &Buffer, scale: f32) -> anyhow::Result<Vec<u8>> {
    let svg = to_svg(buf);
    let opt = font_options()?;
    let tree = resvg::usvg::Tree::from_str(&svg, &opt).context("rendering the SVG")?;
    let size = tree.size().to_int_size();
    let (w, h) = (
        (size.width() as f32 * scale).round() as u32,
        (size.height() as f32 * scale).round() as u32,
    );
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h)
        .ok_or_else(|| anyhow!("cannot make a {w}x{h} image"))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().context("encoding the PNG")
}
