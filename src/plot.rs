//! Training curves and bar charts as PNG: panels of line series over steps, and grouped bars
//! with 95% whiskers (the experiment's table), drawn with OpenCV (already the project's
//! drawing library), each with its title, y range and a legend. Small and dependency-free on
//! purpose: a trainer writes one next to its checkpoint.

use std::path::Path;

use opencv::core::{Mat, Point, Rect, Scalar, ToInputOutputArray, Vec3b};
use opencv::imgproc;

/// One line of a panel.
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Values per step (non-finite values are skipped).
    pub values: Vec<f64>,
    /// Colour as RGB.
    pub rgb: (u8, u8, u8),
}

/// One panel.
pub struct Panel<'a> {
    /// Title.
    pub title: &'a str,
    /// Its lines.
    pub series: Vec<Series<'a>>,
}

const PANEL_W: i32 = 480;
const PANEL_H: i32 = 300;

fn color(rgb: (u8, u8, u8)) -> Scalar {
    Scalar::new(f64::from(rgb.0), f64::from(rgb.1), f64::from(rgb.2), 0.0)
}

fn text(
    mat: &mut impl ToInputOutputArray,
    s: &str,
    at: Point,
    scale: f64,
    rgb: (u8, u8, u8),
) -> opencv::Result<()> {
    imgproc::put_text(
        mat,
        s,
        at,
        imgproc::FONT_HERSHEY_SIMPLEX,
        scale,
        color(rgb),
        1,
        imgproc::LINE_AA,
        false,
    )
}

fn draw_panel(
    mat: &mut impl ToInputOutputArray,
    origin: Point,
    panel: &Panel<'_>,
) -> opencv::Result<()> {
    let black = (0, 0, 0);
    let grey = (200, 200, 200);
    let plot = Rect::new(origin.x + 70, origin.y + 30, PANEL_W - 90, PANEL_H - 70);
    text(
        mat,
        panel.title,
        Point::new(origin.x + 70, origin.y + 20),
        0.5,
        black,
    )?;
    imgproc::rectangle(mat, plot, color(grey), 1, imgproc::LINE_8, 0)?;
    let finite = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite())
    };
    let (mut lo, mut hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let n = panel
        .series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let x_of = |i: usize| plot.x + ((i as f64 / (n - 1) as f64) * f64::from(plot.width)) as i32;
    let y_of =
        |v: f64| plot.y + plot.height - (((v - lo) / (hi - lo)) * f64::from(plot.height)) as i32;
    // The y range's ends, beside the top and bottom of the plot.
    for (v, y) in [(hi, plot.y + 10), (lo, plot.y + plot.height)] {
        text(
            mat,
            &format!("{v:.3}"),
            Point::new(origin.x + 5, y),
            0.4,
            black,
        )?;
    }
    text(
        mat,
        &format!("step 1 .. {}", n),
        Point::new(plot.x, plot.y + plot.height + 18),
        0.4,
        black,
    )?;
    if lo < 0.0 && hi > 0.0 {
        let y = y_of(0.0);
        imgproc::line(
            mat,
            Point::new(plot.x, y),
            Point::new(plot.x + plot.width, y),
            color(grey),
            1,
            imgproc::LINE_8,
            0,
        )?;
    }
    for (j, s) in panel.series.iter().enumerate() {
        let mut prev: Option<Point> = None;
        for (i, &v) in s.values.iter().enumerate() {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let p = Point::new(x_of(i), y_of(v));
            if let Some(q) = prev {
                imgproc::line(mat, q, p, color(s.rgb), 1, imgproc::LINE_AA, 0)?;
            }
            prev = Some(p);
        }
        let ly = plot.y + plot.height + 36;
        let lx = plot.x + 150 * j as i32;
        imgproc::line(
            mat,
            Point::new(lx, ly - 4),
            Point::new(lx + 20, ly - 4),
            color(s.rgb),
            2,
            imgproc::LINE_8,
            0,
        )?;
        text(mat, s.label, Point::new(lx + 25, ly), 0.4, black)?;
    }
    Ok(())
}

/// Draws `panels` in a grid of two columns (one when there is a single panel) and writes a PNG.
pub fn line_panels(panels: &[Panel<'_>], path: &Path) -> Result<(), String> {
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1) as i32;
    let (w, h) = (PANEL_W * cols as i32, PANEL_H * rows);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut buf)
            .map_err(|e| e.to_string())?;
        for (i, p) in panels.iter().enumerate() {
            let origin = Point::new(PANEL_W * (i % cols) as i32, PANEL_H * (i / cols) as i32);
            draw_panel(&mut mat, origin, p).map_err(|e| e.to_string())?;
        }
    }
    let img = image::RgbImage::from_raw(w as u32, h as u32, buf).ok_or("buffer size")?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// A moving average over `w` steps (the curves of a noisy trainer read better smoothed).
pub fn smooth(values: &[f64], w: usize) -> Vec<f64> {
    let w = w.max(1);
    (0..values.len())
        .map(|i| {
            let a = i.saturating_sub(w - 1);
            values[a..=i].iter().sum::<f64>() / (i + 1 - a) as f64
        })
        .collect()
}

/// The ORPO trainer's curves: loss and NLL; log odds ratio; chosen and rejected log-probs;
/// pair accuracy (each smoothed over 10 steps).
pub fn orpo_curves(history: &[crate::train::orpo::StepStats], path: &Path) -> Result<(), String> {
    let col = |f: &dyn Fn(&crate::train::orpo::StepStats) -> f64| {
        smooth(&history.iter().map(f).collect::<Vec<_>>(), 10)
    };
    let (blue, red, green) = ((31, 119, 180), (214, 39, 40), (44, 160, 44));
    line_panels(
        &[
            Panel {
                title: "loss (ORPO) and NLL of chosen",
                series: vec![
                    Series {
                        label: "loss",
                        values: col(&|s| s.loss),
                        rgb: blue,
                    },
                    Series {
                        label: "nll",
                        values: col(&|s| s.nll),
                        rgb: red,
                    },
                ],
            },
            Panel {
                title: "log odds ratio (chosen vs rejected)",
                series: vec![Series {
                    label: "log odds",
                    values: col(&|s| s.log_odds_ratio),
                    rgb: blue,
                }],
            },
            Panel {
                title: "mean token log-prob",
                series: vec![
                    Series {
                        label: "chosen",
                        values: col(&|s| s.chosen_logp),
                        rgb: green,
                    },
                    Series {
                        label: "rejected",
                        values: col(&|s| s.rejected_logp),
                        rgb: red,
                    },
                ],
            },
            Panel {
                title: "pair accuracy (chosen more likely)",
                series: vec![Series {
                    label: "accuracy",
                    values: col(&|s| s.accuracy),
                    rgb: blue,
                }],
            },
        ],
        path,
    )
}

/// One group of bars (a table row): its label and one value per column, each with an
/// optional 95% interval drawn as a whisker.
pub struct BarGroup<'a> {
    /// Row label.
    pub label: &'a str,
    /// `(value, interval)` per column; a non-finite value draws no bar.
    pub values: Vec<(f64, Option<(f64, f64)>)>,
}

/// A grouped bar chart on a 0–`y_max` axis: one group per row, one coloured bar per column
/// (legend from `columns`), written as PNG.
pub fn bars(
    title: &str,
    columns: &[&str],
    groups: &[BarGroup<'_>],
    y_max: f64,
    path: &Path,
) -> Result<(), String> {
    let group_w = 26 * columns.len().max(1) as i32 + 30;
    let (left, top, bottom) = (60, 40, 110);
    let w = left + group_w * groups.len().max(1) as i32 + 30;
    let h = top + 320 + bottom;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h, w, &mut buf)
            .map_err(|e| e.to_string())?;
        draw_bars(
            &mut mat,
            title,
            columns,
            groups,
            y_max,
            (w, h, left, top, group_w),
        )
        .map_err(|e| e.to_string())?;
    }
    let img = image::RgbImage::from_raw(w as u32, h as u32, buf).ok_or("buffer size")?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

const PALETTE: [(u8, u8, u8); 6] = [
    (214, 96, 77),
    (67, 147, 195),
    (244, 165, 50),
    (90, 90, 90),
    (120, 180, 90),
    (150, 110, 190),
];

fn draw_bars(
    mat: &mut impl ToInputOutputArray,
    title: &str,
    columns: &[&str],
    groups: &[BarGroup<'_>],
    y_max: f64,
    (w, h, left, top, group_w): (i32, i32, i32, i32, i32),
) -> opencv::Result<()> {
    {
        let black = (0, 0, 0);
        let grey = (200, 200, 200);
        let plot_h = 320;
        text(mat, title, Point::new(left, 24), 0.5, black)?;
        let y_of = |v: f64| top + plot_h - ((v.clamp(0.0, y_max) / y_max) * plot_h as f64) as i32;
        for tick in 0..=4 {
            let v = y_max * f64::from(tick) / 4.0;
            let y = y_of(v);
            imgproc::line(
                mat,
                Point::new(left, y),
                Point::new(w - 20, y),
                color(grey),
                1,
                imgproc::LINE_8,
                0,
            )?;
            text(mat, &format!("{v:.2}"), Point::new(8, y + 4), 0.4, black)?;
        }
        for (g, group) in groups.iter().enumerate() {
            let x0 = left + 15 + group_w * g as i32;
            for (c, &(v, ci)) in group.values.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let x = x0 + 26 * c as i32;
                let rgb = PALETTE[c % PALETTE.len()];
                imgproc::rectangle(
                    mat,
                    Rect::new(x, y_of(v), 22, (top + plot_h - y_of(v)).max(1)),
                    color(rgb),
                    -1,
                    imgproc::LINE_8,
                    0,
                )?;
                if let Some((lo, hi)) = ci {
                    let xm = x + 11;
                    imgproc::line(
                        mat,
                        Point::new(xm, y_of(lo)),
                        Point::new(xm, y_of(hi)),
                        color(black),
                        1,
                        imgproc::LINE_8,
                        0,
                    )?;
                }
            }
            // The label, wrapped on spaces into lines of at most 14 characters.
            let mut lines: Vec<String> = vec![String::new()];
            for word in group.label.split(' ') {
                let last = lines.last_mut().expect("one line at least");
                if !last.is_empty() && last.len() + 1 + word.len() > 14 {
                    lines.push(word.to_string());
                } else {
                    if !last.is_empty() {
                        last.push(' ');
                    }
                    last.push_str(word);
                }
            }
            for (i, line) in lines.iter().enumerate() {
                text(
                    mat,
                    line,
                    Point::new(x0 - 8, top + plot_h + 18 + 15 * i as i32),
                    0.38,
                    black,
                )?;
            }
        }
        for (c, name) in columns.iter().enumerate() {
            let x = left + 110 * c as i32;
            let y = h - 14;
            imgproc::rectangle(
                mat,
                Rect::new(x, y - 10, 14, 10),
                color(PALETTE[c % PALETTE.len()]),
                -1,
                imgproc::LINE_8,
                0,
            )?;
            text(mat, name, Point::new(x + 18, y), 0.4, black)?;
        }
        Ok(())
    }
}
