//! `RUN_DIR/curves.png`: training loss and validation scores (recomposition L1, fine-tuning
//! Dice) over steps, read from
//! `metrics.jsonl`, drawn as polylines on white with axes, tick labels and a legend.

use anyhow::{Context, Result};
use std::path::Path;

const WIDTH: usize = 720;
const HEIGHT: usize = 420;
const LEFT: usize = 60;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;

/// (name, colour, points) of each series in the figure.
type Series = (&'static str, [u8; 3], Vec<(f64, f64)>);

/// The series in a metrics file: `loss` (total), `validation` and `validation real`.
pub fn read_metrics(path: &Path) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the metrics", path.display()))?;
    let mut series: Vec<Series> = vec![
        ("loss", [31, 119, 180], Vec::new()),
        ("validation", [214, 39, 40], Vec::new()),
        ("validation real", [44, 160, 44], Vec::new()),
        ("validation dice", [148, 103, 189], Vec::new()),
    ];
    for record in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(step) = record["step"].as_f64() else {
            continue;
        };
        let values = [
            record["loss"]["total"].as_f64(),
            record["validation"].as_f64(),
            record["validation_real"].as_f64(),
            record["validation_dice"].as_f64(),
        ];
        for (s, v) in series.iter_mut().zip(values) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                s.2.push((step, v));
            }
        }
    }
    series.retain(|s| !s.2.is_empty());
    Ok(series)
}

/// Draws `RUN_DIR/curves.png` from `RUN_DIR/metrics.jsonl`.
pub fn draw_run(run_dir: &Path) -> Result<()> {
    write_curves(
        &run_dir.join(layerseg_torch::train::METRICS_FILE),
        &run_dir.join("curves.png"),
    )
}

/// Draws the curves of `metrics` (a `metrics.jsonl`) into the PNG `out`, atomically.
pub fn write_curves(metrics: &Path, out: &Path) -> Result<()> {
    let series = read_metrics(metrics)?;
    let mut canvas = Canvas::new();
    let all = series.iter().flat_map(|s| s.2.iter());
    let (x_max, y_max) = all.fold((1.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let y_max = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
    let (plot_w, plot_h) = (
        (WIDTH - LEFT - RIGHT) as f64,
        (HEIGHT - TOP - BOTTOM) as f64,
    );
    let to_px = |(x, y): (f64, f64)| {
        (
            LEFT as f64 + x / x_max * plot_w,
            TOP as f64 + (1.0 - y / y_max) * plot_h,
        )
    };
    let grey = [200, 200, 200];
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        let (_, py) = to_px((0.0, y));
        canvas.line((LEFT as f64, py), ((WIDTH - RIGHT) as f64, py), grey);
        canvas.text(4, py as usize - 3, &format_tick(y), [0, 0, 0]);
        let x = x_max * i as f64 / 4.0;
        let (px, _) = to_px((x, 0.0));
        let label = format!("{}", x.round() as u64);
        canvas.text(
            (px as usize).saturating_sub(label.len() * 3),
            HEIGHT - BOTTOM + 6,
            &label,
            [0, 0, 0],
        );
    }
    let black = [0, 0, 0];
    let (x0, y0) = to_px((0.0, 0.0));
    canvas.line((x0, y0), (x0, TOP as f64), black);
    canvas.line((x0, y0), ((WIDTH - RIGHT) as f64, y0), black);
    canvas.text(WIDTH / 2 - 12, HEIGHT - 14, "step", black);
    for (k, (name, colour, points)) in series.iter().enumerate() {
        for pair in points.windows(2) {
            canvas.line(to_px(pair[0]), to_px(pair[1]), *colour);
        }
        if let [only] = points.as_slice() {
            let (px, py) = to_px(*only);
            canvas.line((px - 2.0, py), (px + 2.0, py), *colour);
        }
        let (lx, ly) = (WIDTH - RIGHT - 150, TOP + 8 + 14 * k);
        canvas.line(
            (lx as f64, ly as f64 + 3.0),
            (lx as f64 + 20.0, ly as f64 + 3.0),
            *colour,
        );
        canvas.text(lx + 26, ly, name, black);
    }
    let png = canvas.encode(out)?;
    // Through the checkpoints' atomic writer; temporary files are private (0600), a figure is
    // an ordinary file.
    layerseg_torch::checkpoint::write_atomic(out, |tmp| {
        std::fs::write(tmp, &png)
            .and_then(|()| readable(tmp))
            .map_err(|source| layerseg_torch::Error::Io {
                path: out.to_path_buf(),
                source,
            })
    })?;
    Ok(())
}

#[cfg(unix)]
fn readable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn readable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn format_tick(v: f64) -> String {
    if v == 0.0 || (0.01..1000.0).contains(&v) {
        format!("{v:.2}")
    } else {
        format!("{v:.0e}")
    }
}

struct Canvas {
    rgb: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            rgb: vec![255; WIDTH * HEIGHT * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line two pixels thick (so it stays readable when scaled down).
    fn line(&mut self, a: (f64, f64), b: (f64, f64), c: [u8; 3]) {
        let n = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
            self.put(x.round() as i64, y.round() as i64, c);
            self.put(x.round() as i64, y.round() as i64 + 1, c);
        }
    }

    /// Text in a 3x5 pixel font drawn at twice its size (unknown characters are blank).
    fn text(&mut self, x: usize, y: usize, text: &str, c: [u8; 3]) {
        for (n, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            let px = (x + n * 8 + col * 2 + dx) as i64;
                            self.put(px, (y + r * 2 + dy) as i64, c);
                        }
                    }
                }
            }
        }
    }

    fn encode(&self, path: &Path) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .with_context(|| format!("{}: cannot write the PNG", path.display()))?;
        writer
            .write_image_data(&self.rgb)
            .with_context(|| format!("{}: cannot write the PNG", path.display()))?;
        writer
            .finish()
            .with_context(|| format!("{}: cannot write the PNG", path.display()))?;
        Ok(bytes)
    }
}

/// Rows (top to bottom) of a 3x5 glyph, bit 2 the left column.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'a' => [0, 6, 3, 5, 7],
        'c' => [0, 7, 4, 4, 7],
        'd' => [1, 1, 7, 5, 7],
        'e' => [0, 7, 7, 4, 7],
        'i' => [2, 0, 2, 2, 2],
        'l' => [6, 2, 2, 2, 7],
        'n' => [0, 6, 5, 5, 5],
        'o' => [0, 7, 5, 5, 7],
        'p' => [0, 7, 5, 7, 4],
        'r' => [0, 7, 4, 4, 4],
        's' => [0, 7, 6, 3, 7],
        't' => [2, 7, 2, 2, 3],
        'v' => [0, 5, 5, 5, 2],
        _ => [0; 5],
    }
}
