//! Charts as one scene of rectangles, lines and text, drawn twice: SVG (text as text) and PNG
//! (rasterized here with an 8×8 bitmap font). Stacked bars (`lehr mix inspect`) and line
//! panels over steps (`lehr eval curve`). A chart library (plotters) would need a TrueType font
//! on the machine or in the repo for PNG text; rectangles, lines and ASCII labels do not.

use std::fmt::Write as _;

use lehr_pipeline::text::escape_xml;

/// Distinct colours (Tableau 20 order), cycled.
const PALETTE: [(u8, u8, u8); 20] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
];

pub fn colour(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

enum Shape {
    Rect {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        rgb: (u8, u8, u8),
        tip: Option<String>,
    },
    /// A polyline, two pixels wide; `dashed` for marks (stage boundaries).
    Line {
        points: Vec<(i32, i32)>,
        rgb: (u8, u8, u8),
        dashed: bool,
    },
    /// ASCII text, left-aligned at (x, y) = top-left; `scale` multiplies the 8-pixel font.
    Text {
        x: i32,
        y: i32,
        text: String,
        scale: i32,
    },
}

pub struct Scene {
    pub width: i32,
    pub height: i32,
    shapes: Vec<Shape>,
}

/// One bar per column, stacked from the bottom in series order; values are shares (0–1).
pub struct StackedBars<'a> {
    pub title: &'a str,
    pub columns: &'a [String],
    /// `(series name, value per column)`.
    pub series: &'a [(String, Vec<f64>)],
}

fn ascii(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect()
}

impl StackedBars<'_> {
    pub fn scene(&self) -> Scene {
        let n = self.columns.len().max(1) as i32;
        let bar = (720 / n).clamp(8, 48);
        let gap = (bar / 4).max(2);
        let plot_w = n * (bar + gap) + gap;
        let legend_w = 8 * self.series.iter().map(|s| s.0.len()).max().unwrap_or(0).min(40) as i32 + 40;
        let (left, top, plot_h) = (48, 40, 360);
        let legend_h = self.series.len() as i32 * 14 + 10;
        let width = left + plot_w + 24 + legend_w;
        let height = top + plot_h.max(legend_h) + 70;
        let mut shapes = vec![Shape::Rect { x: 0, y: 0, w: width, h: height, rgb: (255, 255, 255), tip: None }];
        shapes.push(Shape::Text { x: left, y: 12, text: ascii(self.title), scale: 1 });
        // Axis and gridlines at 0, 25, 50, 75, 100 %.
        for q in 0..=4 {
            let y = top + plot_h - plot_h * q / 4;
            shapes.push(Shape::Rect { x: left, y, w: plot_w, h: 1, rgb: (210, 210, 210), tip: None });
            shapes.push(Shape::Text { x: 6, y: y - 4, text: format!("{:>3}%", q * 25), scale: 1 });
        }
        for (c, name) in self.columns.iter().enumerate() {
            let x = left + gap + c as i32 * (bar + gap);
            let mut acc = 0.0f64;
            for (si, (sname, values)) in self.series.iter().enumerate() {
                let v = values.get(c).copied().unwrap_or(0.0).max(0.0);
                if v <= 0.0 {
                    continue;
                }
                let y0 = top + plot_h - (acc * plot_h as f64).round() as i32;
                acc += v;
                let y1 = top + plot_h - (acc.min(1.0) * plot_h as f64).round() as i32;
                shapes.push(Shape::Rect {
                    x,
                    y: y1,
                    w: bar,
                    h: (y0 - y1).max(0),
                    rgb: colour(si),
                    tip: Some(format!("{name}: {sname} {:.2}%", v * 100.0)),
                });
            }
            // The column's name when it fits under the bar, else its 1-based number.
            let label = if (name.len() as i32) * 8 <= bar + gap { ascii(name) } else { format!("{}", c + 1) };
            let lw = label.len() as i32 * 8;
            let lx = x + (bar - lw) / 2;
            let ly = top + plot_h + 6 + if c % 2 == 1 && lw > bar { 10 } else { 0 };
            shapes.push(Shape::Text { x: lx, y: ly, text: label, scale: 1 });
        }
        let lx = left + plot_w + 24;
        for (si, (sname, _)) in self.series.iter().enumerate() {
            let y = top + si as i32 * 14;
            shapes.push(Shape::Rect { x: lx, y, w: 10, h: 10, rgb: colour(si), tip: None });
            let mut t = ascii(sname);
            if t.len() > 40 {
                t = format!("{}...", &t[..37]);
            }
            shapes.push(Shape::Text { x: lx + 16, y: y + 1, text: t, scale: 1 });
        }
        Scene { width, height, shapes }
    }
}

/// A panel of lines over one x axis (training steps).
pub struct Panel {
    pub title: String,
    /// `(series name, (x, y) points)`.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Panels stacked over a shared x axis, with vertical marks (stage boundaries) in each.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub panels: &'a [Panel],
    /// `(x, label)`: drawn as dashed verticals, labelled in the first panel.
    pub marks: &'a [(f64, String)],
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl LineChart<'_> {
    pub fn scene(&self) -> Scene {
        let (left, plot_w, panel_h, gap, top) = (72, 720, 200, 56, 40);
        let names: Vec<&String> = self.panels.iter().flat_map(|p| p.series.iter().map(|s| &s.0)).collect();
        let legend_w = 8 * names.iter().map(|n| n.len()).max().unwrap_or(0).min(40) as i32 + 40;
        let width = left + plot_w + 24 + legend_w;
        let n = self.panels.len().max(1) as i32;
        let height = top + n * (panel_h + gap) + 20;
        let mut shapes = vec![Shape::Rect { x: 0, y: 0, w: width, h: height, rgb: (255, 255, 255), tip: None }];
        shapes.push(Shape::Text { x: left, y: 12, text: ascii(self.title), scale: 1 });
        let all_x = self.panels.iter().flat_map(|p| p.series.iter().flat_map(|s| s.1.iter().map(|q| q.0)));
        let x_max = all_x.chain(self.marks.iter().map(|m| m.0)).fold(1.0f64, f64::max);
        let px = |x: f64| left + ((x / x_max) * plot_w as f64).round() as i32;
        // one colour and legend entry per series name: a name in several panels keeps its colour
        let mut seen: Vec<&str> = Vec::new();
        for (pi, panel) in self.panels.iter().enumerate() {
            let y0 = top + pi as i32 * (panel_h + gap) + 16;
            shapes.push(Shape::Text { x: left, y: y0 - 14, text: ascii(&panel.title), scale: 1 });
            let ys = panel.series.iter().flat_map(|s| s.1.iter().map(|q| q.1)).filter(|v| v.is_finite());
            let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.05).max(1e-6);
            let (lo, hi) = (lo - pad, hi + pad);
            let py = |y: f64| y0 + panel_h - (((y - lo) / (hi - lo)) * panel_h as f64).round() as i32;
            for q in 0..=4 {
                let v = lo + (hi - lo) * q as f64 / 4.0;
                let y = py(v);
                shapes.push(Shape::Rect { x: left, y, w: plot_w, h: 1, rgb: (220, 220, 220), tip: None });
                shapes.push(Shape::Text { x: 4, y: y - 4, text: format!("{:>8}", tick(v)), scale: 1 });
            }
            for (mi, (x, label)) in self.marks.iter().enumerate() {
                let xp = px(*x);
                shapes.push(Shape::Line {
                    points: vec![(xp, y0), (xp, y0 + panel_h)],
                    rgb: (150, 150, 150),
                    dashed: true,
                });
                if pi == 0 {
                    // names when they fit before the next mark, else the stage's number
                    let next = self.marks.get(mi + 1).map_or(left + plot_w, |m| px(m.0));
                    let room = ((next - xp - 4) / 8).max(0) as usize;
                    let text = if label.len() <= room { ascii(label) } else { format!("{}", mi + 1) };
                    if text.len() <= room.max(2) {
                        shapes.push(Shape::Text { x: xp + 3, y: y0 + 2, text, scale: 1 });
                    }
                }
            }
            for (name, points) in &panel.series {
                let known = seen.iter().position(|n| *n == name.as_str());
                let colour_of = known.unwrap_or(seen.len());
                let rgb = colour(colour_of);
                let pts: Vec<(i32, i32)> =
                    points.iter().filter(|p| p.1.is_finite()).map(|p| (px(p.0), py(p.1))).collect();
                if pts.len() > 1 {
                    shapes.push(Shape::Line { points: pts.clone(), rgb, dashed: false });
                }
                if pts.len() <= 60 {
                    for (i, (x, y)) in pts.iter().enumerate() {
                        let (sx, sy) = points.iter().filter(|p| p.1.is_finite()).nth(i).copied().unwrap_or_default();
                        let tip = Some(format!("{name}: {} at {} {sx}", tick(sy), self.x_label));
                        shapes.push(Shape::Rect { x: x - 2, y: y - 2, w: 5, h: 5, rgb, tip });
                    }
                }
                if known.is_none() {
                    seen.push(name);
                    let ly = top + 16 + colour_of as i32 * 14;
                    let lx = left + plot_w + 24;
                    shapes.push(Shape::Rect { x: lx, y: ly, w: 10, h: 10, rgb, tip: None });
                    let mut t = ascii(name);
                    if t.len() > 40 {
                        t = format!("{}...", &t[..37]);
                    }
                    shapes.push(Shape::Text { x: lx + 16, y: ly + 1, text: t, scale: 1 });
                }
            }
            // x axis: five ticks
            for q in 0..=4 {
                let v = x_max * q as f64 / 4.0;
                let label = format!("{v:.0}");
                let x = px(v) - (label.len() as i32 * 4);
                shapes.push(Shape::Text { x, y: y0 + panel_h + 6, text: label, scale: 1 });
            }
        }
        let last = top + (n - 1) * (panel_h + gap) + 16 + panel_h + 22;
        shapes.push(Shape::Text { x: left + plot_w / 2 - 20, y: last, text: ascii(self.x_label), scale: 1 });
        Scene { width, height, shapes }
    }
}

impl Scene {
    pub fn to_svg(&self) -> String {
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"monospace\" font-size=\"11\">\n",
            w = self.width,
            h = self.height
        );
        for shape in &self.shapes {
            match shape {
                Shape::Rect { x, y, w, h, rgb, tip } => {
                    let _ = write!(
                        s,
                        "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"rgb({},{},{})\"",
                        rgb.0, rgb.1, rgb.2
                    );
                    match tip {
                        Some(t) => {
                            let _ = writeln!(s, "><title>{}</title></rect>", escape_xml(t));
                        }
                        None => s.push_str("/>\n"),
                    }
                }
                Shape::Line { points, rgb, dashed } => {
                    let pts: Vec<String> = points.iter().map(|(x, y)| format!("{x},{y}")).collect();
                    let _ = writeln!(
                        s,
                        "<polyline points=\"{}\" fill=\"none\" stroke=\"rgb({},{},{})\" stroke-width=\"{}\"{}/>",
                        pts.join(" "),
                        rgb.0,
                        rgb.1,
                        rgb.2,
                        if *dashed { 1 } else { 2 },
                        if *dashed { " stroke-dasharray=\"4 3\"" } else { "" }
                    );
                }
                Shape::Text { x, y, text, scale } => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{x}\" y=\"{}\" font-size=\"{}\">{}</text>",
                        y + 8 * scale,
                        11 * scale,
                        escape_xml(text)
                    );
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// RGB pixels, row-major.
    fn raster(&self) -> Vec<u8> {
        let (w, h) = (self.width.max(1) as usize, self.height.max(1) as usize);
        let mut px = vec![255u8; w * h * 3];
        let mut put = |x: i32, y: i32, rgb: (u8, u8, u8)| {
            if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                let o = (y as usize * w + x as usize) * 3;
                px[o..o + 3].copy_from_slice(&[rgb.0, rgb.1, rgb.2]);
            }
        };
        for shape in &self.shapes {
            match shape {
                Shape::Rect { x, y, w: rw, h: rh, rgb, .. } => {
                    for yy in *y..y + rh {
                        for xx in *x..x + rw {
                            put(xx, yy, *rgb);
                        }
                    }
                }
                Shape::Line { points, rgb, dashed } => {
                    for pair in points.windows(2) {
                        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                        let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
                        for k in 0..=n {
                            if *dashed && (k % 7) >= 4 {
                                continue;
                            }
                            let x = x0 + (x1 - x0) * k / n;
                            let y = y0 + (y1 - y0) * k / n;
                            put(x, y, *rgb);
                            if !*dashed {
                                put(x + 1, y, *rgb);
                                put(x, y + 1, *rgb);
                            }
                        }
                    }
                }
                Shape::Text { x, y, text, scale } => {
                    for (i, c) in text.chars().enumerate() {
                        let glyph = font8x8::legacy::BASIC_LEGACY[(c as usize).min(127)];
                        for (row, bits) in glyph.iter().enumerate() {
                            for col in 0..8 {
                                if bits & (1 << col) != 0 {
                                    for dy in 0..*scale {
                                        for dx in 0..*scale {
                                            put(
                                                x + (i as i32 * 8 + col) * scale + dx,
                                                y + row as i32 * scale + dy,
                                                (20, 20, 20),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        px
    }

    pub fn to_png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width.max(1) as u32, self.height.max(1) as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| e.to_string())?;
            w.write_image_data(&self.raster()).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_svg_draw_the_same_bars() {
        let columns = vec!["a".to_string(), "b".to_string()];
        let series = vec![("web".to_string(), vec![0.75, 0.5]), ("code".to_string(), vec![0.25, 0.5])];
        let scene = StackedBars { title: "t", columns: &columns, series: &series }.scene();
        let svg = scene.to_svg();
        assert_eq!(svg.matches("<title>").count(), 4);
        assert!(svg.contains("b: code 50.00%"));
        let png = scene.to_png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // The first bar is 3/4 the first colour: count its pixels in the raster.
        let px = scene.raster();
        let c0 = colour(0);
        let n = px.chunks(3).filter(|p| p == &[c0.0, c0.1, c0.2]).count();
        assert!(n > 0);
    }

    #[test]
    fn line_panels_draw_every_series_and_mark() {
        let panels = vec![
            Panel { title: "loss".into(), series: vec![("train".into(), vec![(1.0, 3.0), (2.0, 2.5), (3.0, 2.0)])] },
            Panel { title: "acc".into(), series: vec![("arc_easy acc".into(), vec![(2.0, 0.25), (3.0, 0.5)])] },
        ];
        let marks = vec![(0.0, "warm".to_string()), (2.0, "decay".to_string())];
        let scene = LineChart { title: "t", x_label: "step", panels: &panels, marks: &marks }.scene();
        let svg = scene.to_svg();
        assert_eq!(svg.matches("stroke-dasharray").count(), 4, "two marks in two panels");
        assert!(svg.contains("arc_easy acc: 0.500 at step 3"));
        assert!(svg.contains(">decay<"));
        let px = scene.raster();
        let c1 = colour(1);
        assert!(px.chunks(3).any(|p| p == [c1.0, c1.1, c1.2]), "the second series is drawn");
        assert_eq!(&scene.to_png().unwrap()[..4], b"\x89PNG");
    }
}
