//! PNG figures a clinician can read: the scan's own axial, coronal and sagittal slices in grey,
//! masks outlined in colour on them, a legend naming each outline, the slice index of each panel
//! and a title (case name, Dice). One function, [`write_figure`], draws them for
//! `evaluate --figures`, `demo`, `segment --overlay` and `synthesize --preview`.
//!
//! Slices are taken after reorienting to RAS and shown in radiological convention (patient right
//! on the viewer's left; anterior up in the axial panel, superior up in the other two; anterior
//! on the left in the sagittal panel), stretched to square millimetres. Each panel goes through
//! the slice where the first outline that has voxels (put the truth first, then the prediction)
//! covers the largest area in that plane. Text is drawn with the `font8x8` crate's public-domain
//! 8x8 bitmap glyphs, scaled up.

use anyhow::{bail, Context, Result};
use font8x8::UnicodeFonts;
use layerseg_core::{Reorientation, Volume};
use ndarray::{s, Array2, Array3, ArrayView2, Axis};
use std::path::Path;

pub const RED: [u8; 3] = [255, 40, 40];
pub const GREEN: [u8; 3] = [40, 230, 60];
pub const YELLOW: [u8; 3] = [255, 220, 0];
pub const BLUE: [u8; 3] = [60, 140, 255];
/// The organ or brain mask searched, in every figure.
pub const ORGAN: [u8; 3] = BLUE;

const WHITE: [u8; 3] = [255, 255, 255];
/// The panels together are stretched or shrunk to about this many pixels across.
const TARGET_WIDTH: f64 = 960.0;
const MAX_WIDTH: f64 = 1800.0;
const MARGIN: usize = 10;
const GAP: usize = 10;
/// Glyphs are 8x8 pixels, drawn at this many screen pixels per glyph pixel.
const TEXT_SCALE: usize = 2;

/// One outlined mask, on the grid of the image it is drawn over, and its legend text.
pub struct Outline<'a> {
    pub mask: &'a Array3<bool>,
    pub color: [u8; 3],
    pub label: &'a str,
}

/// Where one panel cuts the volume, and where it lies in the figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub plane: &'static str,
    /// The slice on the RAS-reoriented grid.
    pub ras_index: usize,
    /// The same slice as the file numbers it: voxel axis (0 = i, 1 = j, 2 = k) and index.
    pub file_axis: usize,
    pub file_index: usize,
    /// Slices along that axis.
    pub slices: usize,
    /// Top-left corner (row, column) and size (rows, columns) of the image in the figure.
    pub origin: (usize, usize),
    pub size: (usize, usize),
}

/// A rendered figure: RGB pixels (rows, columns, 3) and its panels.
pub struct Figure {
    pub rgb: Array3<u8>,
    pub panels: Vec<Panel>,
}

/// Draw `outlines` over `image` (see the module documentation) and write the figure as a PNG.
pub fn write_figure<T: Copy + Into<f64>>(
    path: &Path,
    image: &Volume<T>,
    outlines: &[Outline<'_>],
    title: Option<&str>,
) -> Result<()> {
    let figure = render_figure(image, outlines, title)?;
    save_png(path, &figure.rgb)
}

/// The figure that [`write_figure`] writes.
pub fn render_figure<T: Copy + Into<f64>>(
    image: &Volume<T>,
    outlines: &[Outline<'_>],
    title: Option<&str>,
) -> Result<Figure> {
    for o in outlines {
        if o.mask.shape() != image.data.shape() {
            bail!(
                "the {} mask ({:?}) is not on the image's grid ({:?})",
                o.label,
                o.mask.shape(),
                image.data.shape()
            );
        }
    }
    let (ras, _) = Reorientation::to_ras(&image.with_data(image.data.mapv(|v| v.into() as f32)));
    let masks: Vec<Array3<bool>> = outlines
        .iter()
        .map(|o| {
            Reorientation::to_ras(&image.with_data(o.mask.clone()))
                .0
                .data
        })
        .collect();
    let focus = masks.iter().find(|m| m.iter().any(|&v| v));
    let orientation = image.orientation();
    let spacing = ras.spacing();
    let shape = ras.data.shape().to_vec();
    let window = display_window(&ras.data);

    // (name, fixed axis, row axis, column axis) on the RAS grid.
    let planes = [
        ("axial", 2, 1, 0),
        ("coronal", 1, 2, 0),
        ("sagittal", 0, 2, 1),
    ];
    let mm = |axis: usize| shape[axis] as f64 * spacing[axis];
    let total_mm: f64 = planes.iter().map(|p| mm(p.3)).sum();
    let finest = spacing.iter().copied().fold(f64::INFINITY, f64::min);
    let mut mm_per_px = finest;
    if total_mm / mm_per_px < TARGET_WIDTH {
        mm_per_px = total_mm / TARGET_WIDTH;
    }
    if total_mm / mm_per_px > MAX_WIDTH {
        mm_per_px = total_mm / MAX_WIDTH;
    }

    let mut images = Vec::new();
    let mut panels = Vec::new();
    for (plane, fixed, row_axis, col_axis) in planes {
        let ras_index = match focus {
            Some(m) => largest_slice(m, fixed),
            None => shape[fixed] / 2,
        };
        // After removing `fixed`, the remaining axes keep their order.
        let axes = (reduced(row_axis, fixed), reduced(col_axis, fixed));
        let size = (
            ((mm(row_axis) / mm_per_px).round() as usize).max(1),
            ((mm(col_axis) / mm_per_px).round() as usize).max(1),
        );
        let bg = ras.data.index_axis(Axis(fixed), ras_index);
        let slice_masks: Vec<Array2<bool>> = masks
            .iter()
            .map(|m| m.index_axis(Axis(fixed), ras_index).to_owned())
            .collect();
        let colors: Vec<[u8; 3]> = outlines.iter().map(|o| o.color).collect();
        images.push(render_panel(bg, &slice_masks, &colors, axes, size, window));
        // RAS axis `fixed` is the file's voxel axis v whose world axis is `fixed`.
        let file_axis = (0..3)
            .find(|&v| orientation.axes[v].0 == fixed)
            .expect("an orientation maps every world axis");
        let file_index = if orientation.axes[file_axis].1 {
            shape[fixed] - 1 - ras_index
        } else {
            ras_index
        };
        panels.push(Panel {
            plane,
            ras_index,
            file_axis,
            file_index,
            slices: shape[fixed],
            origin: (0, 0),
            size,
        });
    }
    let letters = [("R", "L"), ("R", "L"), ("A", "P")];
    let rgb = compose(title, &images, &mut panels, &letters, outlines);
    Ok(Figure { rgb, panels })
}

fn reduced(axis: usize, removed: usize) -> usize {
    if axis > removed {
        axis - 1
    } else {
        axis
    }
}

/// The slice along `axis` where `mask` has the most voxels (the first of equals).
fn largest_slice(mask: &Array3<bool>, axis: usize) -> usize {
    let counts: Vec<usize> = mask
        .axis_iter(Axis(axis))
        .map(|slice| slice.iter().filter(|&&v| v).count())
        .collect();
    let best = counts.iter().copied().max().unwrap_or(0);
    counts.iter().position(|&c| c == best).unwrap_or(0)
}

/// The grey-scale window. CT (a volume whose 1st percentile is below -500, i.e. air in
/// Hounsfield units) gets the abdominal soft-tissue window, level 40 and width 400 HU, so that
/// liver lesions show; anything else the 0.5th to 99.5th percentile of the foreground (the
/// voxels above the volume's minimum, so that zero padding around an MRI does not count).
fn display_window(data: &Array3<f32>) -> (f32, f32) {
    let mut all: Vec<f32> = data.iter().copied().filter(|v| v.is_finite()).collect();
    if all.is_empty() {
        return (0.0, 1.0);
    }
    all.sort_by(f32::total_cmp);
    let at = |v: &[f32], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    if at(&all, 0.01) < -500.0 {
        return (-160.0, 240.0);
    }
    let min = all[0];
    let first_above = all.partition_point(|&v| v <= min);
    let fg = if first_above < all.len() {
        &all[first_above..]
    } else {
        &all[..]
    };
    let (lo, hi) = (at(fg, 0.005), at(fg, 0.995));
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

/// Bilinear sample of `bg` (indexed [a, b]) at fractional (row, column) in `axes` order.
fn sample(bg: &ArrayView2<'_, f32>, axes: (usize, usize), r: f64, c: f64) -> f32 {
    let dims = (bg.len_of(Axis(axes.0)), bg.len_of(Axis(axes.1)));
    let clamp = |x: f64, n: usize| x.clamp(0.0, (n - 1) as f64);
    let (r, c) = (clamp(r, dims.0), clamp(c, dims.1));
    let (r0, c0) = (r.floor() as usize, c.floor() as usize);
    let (r1, c1) = ((r0 + 1).min(dims.0 - 1), (c0 + 1).min(dims.1 - 1));
    let (fr, fc) = ((r - r0 as f64) as f32, (c - c0 as f64) as f32);
    let at = |rr: usize, cc: usize| {
        let mut idx = [0; 2];
        idx[axes.0] = rr;
        idx[axes.1] = cc;
        bg[idx]
    };
    let top = at(r0, c0) * (1.0 - fc) + at(r0, c1) * fc;
    let bottom = at(r1, c0) * (1.0 - fc) + at(r1, c1) * fc;
    top * (1.0 - fr) + bottom * fr
}

/// One RGB panel of `size` pixels: `bg` indexed [a, b]; `axes` says which of a, b are rows and
/// columns. Row 0 is the highest index (superior/anterior); column 0 the highest (patient right).
fn render_panel(
    bg: ArrayView2<'_, f32>,
    masks: &[Array2<bool>],
    colors: &[[u8; 3]],
    axes: (usize, usize),
    (out_rows, out_cols): (usize, usize),
    (lo, hi): (f32, f32),
) -> Array3<u8> {
    let (n_rows, n_cols) = (bg.len_of(Axis(axes.0)), bg.len_of(Axis(axes.1)));
    // Pixel centre -> fractional voxel index, flipped so that high indices come first.
    let frac = |px: usize, n_out: usize, n: usize| {
        (n as f64 - 1.0) - ((px as f64 + 0.5) * n as f64 / n_out as f64 - 0.5)
    };
    let voxel = |px: usize, n_out: usize, n: usize| {
        n - 1 - (((px as f64 + 0.5) * n as f64 / n_out as f64) as usize).min(n - 1)
    };
    let mut img = Array3::<u8>::zeros((out_rows, out_cols, 3));
    for row in 0..out_rows {
        let r = frac(row, out_rows, n_rows);
        for col in 0..out_cols {
            let c = frac(col, out_cols, n_cols);
            let v = ((sample(&bg, axes, r, c) - lo) / (hi - lo)).clamp(0.0, 1.0);
            img.slice_mut(s![row, col, ..])
                .fill((v * 255.0).round() as u8);
        }
    }
    let rows: Vec<usize> = (0..out_rows).map(|p| voxel(p, out_rows, n_rows)).collect();
    let cols: Vec<usize> = (0..out_cols).map(|p| voxel(p, out_cols, n_cols)).collect();
    for (mask, color) in masks.iter().zip(colors) {
        let inside = Array2::from_shape_fn((out_rows, out_cols), |(row, col)| {
            let mut idx = [0; 2];
            idx[axes.0] = rows[row];
            idx[axes.1] = cols[col];
            mask[idx]
        });
        // A pixel on either side of the boundary: a line two pixels wide.
        for row in 0..out_rows {
            for col in 0..out_cols {
                let here = inside[[row, col]];
                let edge = [(0i64, 1i64), (0, -1), (1, 0), (-1, 0)]
                    .iter()
                    .any(|&(dr, dc)| {
                        let (r, c) = (row as i64 + dr, col as i64 + dc);
                        if r < 0 || c < 0 || r >= out_rows as i64 || c >= out_cols as i64 {
                            here
                        } else {
                            inside[[r as usize, c as usize]] != here
                        }
                    });
                if edge {
                    img.slice_mut(s![row, col, ..])
                        .assign(&ndarray::arr1(color));
                }
            }
        }
    }
    img
}

/// Width and height in pixels of `text` at `scale`.
fn text_size(text: &str, scale: usize) -> (usize, usize) {
    (text.chars().count() * 8 * scale, 8 * scale)
}

/// Draw `text` with its top-left corner at (row, col), clipped to the canvas.
fn draw_text(
    canvas: &mut Array3<u8>,
    text: &str,
    (row, col): (usize, usize),
    scale: usize,
    color: [u8; 3],
) {
    let (h, w) = (canvas.shape()[0], canvas.shape()[1]);
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let y = row + gy * scale + dy;
                        let x = col + (i * 8 + gx) * scale + dx;
                        if y < h && x < w {
                            canvas
                                .slice_mut(s![y, x, ..])
                                .assign(&ndarray::arr1(&color));
                        }
                    }
                }
            }
        }
    }
}

/// The largest scale (at most [`TEXT_SCALE`]) at which `text` fits in `width` pixels.
fn fitting_scale(text: &str, width: usize) -> usize {
    (1..=TEXT_SCALE)
        .rev()
        .find(|&s| text_size(text, s).0 <= width)
        .unwrap_or(1)
}

/// Lay out title, captioned panels and legend on a black canvas; fills in the panels' origins.
fn compose(
    title: Option<&str>,
    images: &[Array3<u8>],
    panels: &mut [Panel],
    letters: &[(&str, &str)],
    outlines: &[Outline<'_>],
) -> Array3<u8> {
    let line = 8 * TEXT_SCALE;
    let captions: Vec<String> = panels
        .iter()
        .map(|p| {
            format!(
                "{} {}={}/{}",
                p.plane,
                ["i", "j", "k"][p.file_axis],
                p.file_index,
                p.slices - 1
            )
        })
        .collect();
    // Legend entries: a swatch, a space, the label, then a gap before the next.
    let swatch = line;
    let legend_width: usize = outlines
        .iter()
        .map(|o| swatch + 8 + text_size(o.label, TEXT_SCALE).0 + 3 * line)
        .sum();
    let panels_width: usize =
        images.iter().map(|p| p.shape()[1]).sum::<usize>() + GAP * images.len().saturating_sub(1);
    let panels_height = images.iter().map(|p| p.shape()[0]).max().unwrap_or(1);
    let title_width = title.map_or(0, |t| text_size(t, TEXT_SCALE).0);
    let width = panels_width.max(legend_width).max(title_width) + 2 * MARGIN;
    let mut y = MARGIN;
    let title_row = y;
    if title.is_some() {
        y += line + MARGIN;
    }
    let caption_row = y;
    y += line + MARGIN / 2;
    let panels_row = y;
    y += panels_height + MARGIN;
    let legend_row = y;
    if !outlines.is_empty() {
        y += line + MARGIN;
    }
    let mut canvas = Array3::<u8>::zeros((y, width, 3));
    if let Some(t) = title {
        draw_text(&mut canvas, t, (title_row, MARGIN), TEXT_SCALE, WHITE);
    }
    let mut x = MARGIN + (width - 2 * MARGIN - panels_width) / 2;
    for (((img, panel), caption), (left, right)) in images
        .iter()
        .zip(panels.iter_mut())
        .zip(&captions)
        .zip(letters)
    {
        let (h, w) = (img.shape()[0], img.shape()[1]);
        let top = panels_row + (panels_height - h) / 2;
        canvas.slice_mut(s![top..top + h, x..x + w, ..]).assign(img);
        panel.origin = (top, x);
        let scale = fitting_scale(caption, w);
        draw_text(&mut canvas, caption, (caption_row, x), scale, WHITE);
        // Which side of the patient each edge shows, as viewers mark it.
        let mid = top + h / 2;
        if h > line && w > 4 * line {
            draw_text(
                &mut canvas,
                left,
                (mid - line / 2, x + 2),
                TEXT_SCALE,
                YELLOW,
            );
            draw_text(
                &mut canvas,
                right,
                (mid - line / 2, x + w - line - 2),
                TEXT_SCALE,
                YELLOW,
            );
        }
        x += w + GAP;
    }
    let mut x = MARGIN;
    for o in outlines {
        canvas
            .slice_mut(s![legend_row..legend_row + swatch, x..x + swatch, ..])
            .assign(&ndarray::Array3::from_shape_fn(
                (swatch, swatch, 3),
                |(_, _, c)| o.color[c],
            ));
        x += swatch + 8;
        draw_text(&mut canvas, o.label, (legend_row, x), TEXT_SCALE, WHITE);
        x += text_size(o.label, TEXT_SCALE).0 + 3 * line;
    }
    canvas
}

fn save_png(path: &Path, rgb: &Array3<u8>) -> Result<()> {
    let (h, w) = (rgb.shape()[0], rgb.shape()[1]);
    let bytes: Vec<u8> = rgb.as_standard_layout().iter().copied().collect();
    crate::output::write_atomic(path, |file| {
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&bytes)?;
        Ok(())
    })
    .with_context(|| format!("{}: cannot write figure", path.display()))
}

#[cfg(test)]
mod tests;
