//! PNG figures: axial, coronal and sagittal slices side by side, with masks outlined in colour.
//! Used by `synthesize --preview`, `evaluate --figures` and `segment`/`demo` overlays.
//!
//! Slices are shown in radiological convention (patient right on the viewer's left, anterior
//! and superior up) and stretched to square millimetres.

use anyhow::{Context, Result};
use layerseg_core::{Reorientation, Volume};
use ndarray::{Array2, Array3, ArrayView2, Axis};
use std::path::Path;

pub const RED: [u8; 3] = [255, 40, 40];
pub const GREEN: [u8; 3] = [40, 230, 60];
pub const YELLOW: [u8; 3] = [255, 220, 0];

/// One outlined mask: voxels on the grid of the background.
pub struct Outline<'a> {
    pub mask: &'a Array3<bool>,
    pub color: [u8; 3],
}

/// Write a three-view PNG through `center` (voxel indices on the volume's own grid); without a
/// center, through the centre of the largest mask's bounding box, or the middle of the volume.
pub fn write_three_views<T: Copy + Into<f64>>(
    path: &Path,
    background: &Volume<T>,
    outlines: &[Outline<'_>],
    center: Option<[usize; 3]>,
) -> Result<()> {
    let (ras_bg, _) =
        Reorientation::to_ras(&background.with_data(background.data.mapv(|v| v.into() as f32)));
    let ras_masks: Vec<Array3<bool>> = outlines
        .iter()
        .map(|o| {
            Reorientation::to_ras(&background.with_data(o.mask.clone()))
                .0
                .data
        })
        .collect();
    let center = match center {
        Some(c) => {
            let mut marker = Array3::from_elem(background.data.raw_dim(), false);
            marker[c] = true;
            let ras_marker = Reorientation::to_ras(&background.with_data(marker)).0.data;
            first_true(&ras_marker).unwrap_or([0, 0, 0])
        }
        None => ras_masks
            .iter()
            .filter_map(box_center)
            .next()
            .unwrap_or_else(|| ras_bg.shape().map(|n| n / 2)),
    };
    let spacing = ras_bg.spacing();
    let (lo, hi) = display_range(&ras_bg.data);
    let mut panels = Vec::new();
    // (fixed axis, row axis, column axis): rows run top-down, columns run left-right.
    for (fixed, row_axis, col_axis) in [(2, 1, 0), (1, 2, 0), (0, 2, 1)] {
        let take = |a: &Array3<f32>| a.index_axis(Axis(fixed), center[fixed]).to_owned();
        let bg = take(&ras_bg.data);
        let masks: Vec<Array2<bool>> = ras_masks
            .iter()
            .map(|m| m.index_axis(Axis(fixed), center[fixed]).to_owned())
            .collect();
        // After removing `fixed`, the remaining axes keep their order.
        let (r, c) = (reduced(row_axis, fixed), reduced(col_axis, fixed));
        panels.push(render_panel(
            bg.view(),
            &masks,
            outlines,
            (r, c),
            (spacing[row_axis], spacing[col_axis]),
            (lo, hi),
        ));
    }
    save_png(path, &hstack(&panels))
}

fn reduced(axis: usize, removed: usize) -> usize {
    if axis > removed {
        axis - 1
    } else {
        axis
    }
}

fn first_true(a: &Array3<bool>) -> Option<[usize; 3]> {
    a.indexed_iter()
        .find(|(_, &v)| v)
        .map(|((i, j, k), _)| [i, j, k])
}

fn box_center(mask: &Array3<bool>) -> Option<[usize; 3]> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0; 3];
    for ((i, j, k), &v) in mask.indexed_iter() {
        if v {
            for (d, p) in [i, j, k].into_iter().enumerate() {
                lo[d] = lo[d].min(p);
                hi[d] = hi[d].max(p);
            }
        }
    }
    (lo[0] != usize::MAX).then(|| [0, 1, 2].map(|d| (lo[d] + hi[d]) / 2))
}

/// 1st to 99th percentile of the non-zero voxels (all voxels when none is non-zero).
fn display_range(data: &Array3<f32>) -> (f32, f32) {
    let mut v: Vec<f32> = data.iter().copied().filter(|&x| x != 0.0).collect();
    if v.is_empty() {
        v = data.iter().copied().collect();
    }
    v.sort_by(f32::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let (lo, hi) = (at(0.01), at(0.99));
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

/// One RGB panel: `bg` indexed [a, b]; `axes` says which of a, b are rows and columns.
fn render_panel(
    bg: ArrayView2<'_, f32>,
    masks: &[Array2<bool>],
    outlines: &[Outline<'_>],
    axes: (usize, usize),
    spacing: (f64, f64),
    (lo, hi): (f32, f32),
) -> Array3<u8> {
    let (n_rows, n_cols) = (bg.len_of(Axis(axes.0)), bg.len_of(Axis(axes.1)));
    let px = spacing.0.min(spacing.1);
    let (out_rows, out_cols) = (
        ((n_rows as f64 * spacing.0 / px).round() as usize).max(1),
        ((n_cols as f64 * spacing.1 / px).round() as usize).max(1),
    );
    // Row 0 is the highest index (superior/anterior); column 0 the highest index (patient right).
    let at = |row: usize, col: usize| -> [usize; 2] {
        let r = n_rows - 1 - (row * n_rows / out_rows).min(n_rows - 1);
        let c = n_cols - 1 - (col * n_cols / out_cols).min(n_cols - 1);
        let mut idx = [0; 2];
        idx[axes.0] = r;
        idx[axes.1] = c;
        idx
    };
    let mut img = Array3::<u8>::zeros((out_rows, out_cols, 3));
    for row in 0..out_rows {
        for col in 0..out_cols {
            let v = ((bg[at(row, col)] - lo) / (hi - lo)).clamp(0.0, 1.0);
            let g = (v * 255.0) as u8;
            img.slice_mut(ndarray::s![row, col, ..]).fill(g);
        }
    }
    for (mask, outline) in masks.iter().zip(outlines) {
        for row in 0..out_rows {
            for col in 0..out_cols {
                let inside = mask[at(row, col)];
                let edge = inside
                    && [(0i64, 1i64), (0, -1), (1, 0), (-1, 0)]
                        .iter()
                        .any(|&(dr, dc)| {
                            let (r, c) = (row as i64 + dr, col as i64 + dc);
                            r < 0
                                || c < 0
                                || r >= out_rows as i64
                                || c >= out_cols as i64
                                || !mask[at(r as usize, c as usize)]
                        });
                if edge {
                    img.slice_mut(ndarray::s![row, col, ..])
                        .assign(&ndarray::arr1(&outline.color));
                }
            }
        }
    }
    img
}

fn hstack(panels: &[Array3<u8>]) -> Array3<u8> {
    let height = panels.iter().map(|p| p.shape()[0]).max().unwrap_or(1);
    let gap = 4;
    let width: usize =
        panels.iter().map(|p| p.shape()[1]).sum::<usize>() + gap * panels.len().saturating_sub(1);
    let mut out = Array3::<u8>::zeros((height, width, 3));
    let mut x = 0;
    for p in panels {
        let (h, w) = (p.shape()[0], p.shape()[1]);
        let top = (height - h) / 2;
        out.slice_mut(ndarray::s![top..top + h, x..x + w, ..])
            .assign(p);
        x += w + gap;
    }
    out
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

/// The evaluate figure: the slice through the largest truth lesion, truth in green and the
/// prediction in red, over `background` (the truth label map when no scan is at hand).
pub fn write_overlay_figure(
    path: &Path,
    background: &Volume<u8>,
    pred: &Array3<bool>,
    truth: &Array3<bool>,
) -> Result<()> {
    let center = largest_component_center(truth).or_else(|| largest_component_center(pred));
    write_three_views(
        path,
        background,
        &[
            Outline {
                mask: truth,
                color: GREEN,
            },
            Outline {
                mask: pred,
                color: RED,
            },
        ],
        center,
    )
}

/// The voxel nearest the centroid of the largest connected component.
pub fn largest_component_center(mask: &Array3<bool>) -> Option<[usize; 3]> {
    let (labels, n) = layerseg_core::postprocess::components(mask);
    if n == 0 {
        return None;
    }
    let sizes = ndarray_ndimage::label_histogram(&labels, n);
    let biggest = (1..=n).max_by_key(|&l| sizes[l])? as u32;
    let mut sum = [0f64; 3];
    let mut points = Vec::new();
    for ((i, j, k), &l) in labels.indexed_iter() {
        if l == biggest {
            sum[0] += i as f64;
            sum[1] += j as f64;
            sum[2] += k as f64;
            points.push([i, j, k]);
        }
    }
    let c = sum.map(|s| s / points.len() as f64);
    points.into_iter().min_by(|a, b| {
        let d = |p: &[usize; 3]| (0..3).map(|d| (p[d] as f64 - c[d]).powi(2)).sum::<f64>();
        d(a).total_cmp(&d(b))
    })
}
