//! Checks on the inputs and the statistics every synthesis step needs (foreground box and mean).

use std::sync::OnceLock;

use ndarray::{s, Array3, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use super::grid::{world_box, Region};
use crate::affine::{check_affine, Affine};
use crate::error::{Error, Result};
use crate::volume::{Image, LabelMap};

/// What a case is made from: the healthy scan, optionally an organ mask on its grid, and
/// texture scans (any grid) for profiles whose texture is another scan.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub healthy: &'a Image,
    pub organ_mask: Option<&'a LabelMap>,
    pub textures: &'a [Image],
}

impl<'a> Inputs<'a> {
    pub fn new(healthy: &'a Image) -> Self {
        Inputs {
            healthy,
            organ_mask: None,
            textures: &[],
        }
    }
}

/// Foreground statistics of a volume: the organ mask if given, else the non-zero voxels.
#[derive(Clone, Copy, Debug)]
pub struct Foreground {
    pub bbox: Region,
    pub count: u64,
    pub mean: f64,
}

pub struct Context<'a> {
    pub inputs: Inputs<'a>,
    pub shape: [usize; 3],
    pub spacing: [f64; 3],
    pub inverse: Affine,
    pub fg: Foreground,
    /// The foreground's RAS bounding box (mm).
    pub fg_world: ([f64; 3], [f64; 3]),
    /// Per texture scan, once asked for: [`nonzero_box`] of its voxels, kept for all the cases
    /// drawn from these inputs.
    texture_boxes: Vec<OnceLock<(Option<Region>, bool)>>,
}

fn invalid(what: &str, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// The axis with the largest stride: slicing along it gives contiguous-ish slices.
fn outer_axis<T>(a: &Array3<T>) -> usize {
    let s = a.strides();
    (0..3).max_by_key(|&i| s[i].unsigned_abs()).unwrap_or(0)
}

/// Per-slice partial results, computed in parallel and combined in slice order, so that float
/// sums are identical for any thread count.
struct Partial {
    lo: [usize; 3],
    hi: [usize; 3],
    count: u64,
    sum: f64,
    nonfinite: bool,
}

fn slice_index(outer: usize, s: usize, a: usize, b: usize) -> [usize; 3] {
    match outer {
        0 => [s, a, b],
        1 => [a, s, b],
        _ => [a, b, s],
    }
}

/// Bounding box, count and mean of the foreground (`mask != 0`, or non-zero voxels without a
/// mask), and whether any voxel is NaN or infinite. Slices along the outermost memory axis run
/// in parallel; inside a slice, lanes run along the innermost axis.
pub fn foreground(data: &Array3<f32>, mask: Option<&Array3<u8>>) -> (Option<Foreground>, bool) {
    let outer = outer_axis(data);
    let slices: Vec<usize> = (0..data.len_of(Axis(outer))).collect();
    let partials: Vec<Partial> = slices
        .into_par_iter()
        .map(|s| {
            let slice: ArrayView2<f32> = data.index_axis(Axis(outer), s);
            let mslice = mask.map(|m| m.index_axis(Axis(outer), s));
            let st = slice.strides();
            let inner = usize::from(st[1].unsigned_abs() < st[0].unsigned_abs());
            let mut p = Partial {
                lo: [usize::MAX; 3],
                hi: [0; 3],
                count: 0,
                sum: 0.0,
                nonfinite: false,
            };
            for (li, lane) in slice.lanes(Axis(inner)).into_iter().enumerate() {
                let mlane = mslice.as_ref().map(|m| m.index_axis(Axis(1 - inner), li));
                let (mut first, mut last, mut count, mut sum) = (usize::MAX, 0, 0u64, 0.0f64);
                match (lane.as_slice(), &mlane) {
                    // The common case (no mask, contiguous lane): skip runs of zeros quickly.
                    (Some(values), None) => {
                        p.nonfinite |= !values.iter().all(|v| v.is_finite());
                        if let Some(f) = values.iter().position(|&v| v != 0.0 && v.is_finite()) {
                            first = f;
                            last = values
                                .iter()
                                .rposition(|&v| v != 0.0 && v.is_finite())
                                .unwrap_or(f);
                            for &v in &values[f..=last] {
                                if v != 0.0 && v.is_finite() {
                                    count += 1;
                                    sum += v as f64;
                                }
                            }
                        }
                    }
                    _ => {
                        for (x, &v) in lane.iter().enumerate() {
                            if !v.is_finite() {
                                p.nonfinite = true;
                                continue;
                            }
                            let inside = match &mlane {
                                Some(m) => m[x] != 0,
                                None => v != 0.0,
                            };
                            if inside {
                                first = first.min(x);
                                last = x;
                                count += 1;
                                sum += v as f64;
                            }
                        }
                    }
                }
                if count > 0 {
                    p.count += count;
                    p.sum += sum;
                    let lo = slice_index(
                        outer,
                        s,
                        if inner == 0 { first } else { li },
                        if inner == 1 { first } else { li },
                    );
                    let hi = slice_index(
                        outer,
                        s,
                        if inner == 0 { last } else { li },
                        if inner == 1 { last } else { li },
                    );
                    for ax in 0..3 {
                        p.lo[ax] = p.lo[ax].min(lo[ax]);
                        p.hi[ax] = p.hi[ax].max(hi[ax] + 1);
                    }
                }
            }
            p
        })
        .collect();
    let mut total = Partial {
        lo: [usize::MAX; 3],
        hi: [0; 3],
        count: 0,
        sum: 0.0,
        nonfinite: false,
    };
    for p in &partials {
        total.count += p.count;
        total.sum += p.sum;
        total.nonfinite |= p.nonfinite;
        for ax in 0..3 {
            total.lo[ax] = total.lo[ax].min(p.lo[ax]);
            total.hi[ax] = total.hi[ax].max(p.hi[ax]);
        }
    }
    let fg = (total.count > 0).then(|| Foreground {
        bbox: Region {
            lo: total.lo,
            hi: total.hi,
        },
        count: total.count,
        mean: total.sum / total.count as f64,
    });
    (fg, total.nonfinite)
}

/// The bounding box of the non-zero voxels (`None`: all zero), as [`foreground`]'s without a
/// mask, and whether any voxel is NaN or infinite. Without the sum and count it needs no
/// ordered float additions, so it is a few times faster.
pub fn nonzero_box(data: &Array3<f32>) -> (Option<Region>, bool) {
    let outer = outer_axis(data);
    let slices: Vec<usize> = (0..data.len_of(Axis(outer))).collect();
    let partials: Vec<([usize; 3], [usize; 3], bool)> = slices
        .into_par_iter()
        .map(|s| {
            let slice: ArrayView2<f32> = data.index_axis(Axis(outer), s);
            let st = slice.strides();
            let inner = usize::from(st[1].unsigned_abs() < st[0].unsigned_abs());
            let (mut lo, mut hi, mut nonfinite) = ([usize::MAX; 3], [0; 3], false);
            for (li, lane) in slice.lanes(Axis(inner)).into_iter().enumerate() {
                let span = match lane.as_slice() {
                    Some(values) => {
                        // Branch-free, so that it vectorises: any exponent all ones.
                        nonfinite |= values.iter().fold(false, |acc, v| {
                            acc | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
                        });
                        values
                            .iter()
                            .position(|&v| v != 0.0)
                            .map(|f| (f, values.iter().rposition(|&v| v != 0.0).unwrap_or(f)))
                    }
                    None => {
                        nonfinite |= lane.iter().any(|v| !v.is_finite());
                        lane.iter()
                            .position(|&v| v != 0.0)
                            .map(|f| (f, lane.iter().rposition(|&v| v != 0.0).unwrap_or(f)))
                    }
                };
                if let Some((first, last)) = span {
                    let a = slice_index(
                        outer,
                        s,
                        if inner == 0 { first } else { li },
                        if inner == 1 { first } else { li },
                    );
                    let b = slice_index(
                        outer,
                        s,
                        if inner == 0 { last } else { li },
                        if inner == 1 { last } else { li },
                    );
                    for ax in 0..3 {
                        lo[ax] = lo[ax].min(a[ax]);
                        hi[ax] = hi[ax].max(b[ax] + 1);
                    }
                }
            }
            (lo, hi, nonfinite)
        })
        .collect();
    let (mut lo, mut hi, mut nonfinite) = ([usize::MAX; 3], [0; 3], false);
    for (plo, phi, pnonfinite) in partials {
        nonfinite |= pnonfinite;
        for ax in 0..3 {
            lo[ax] = lo[ax].min(plo[ax]);
            hi[ax] = hi[ax].max(phi[ax]);
        }
    }
    (
        (lo[0] != usize::MAX).then_some(Region { lo, hi }),
        nonfinite,
    )
}

impl<'a> Context<'a> {
    pub fn new(inputs: Inputs<'a>) -> Result<Context<'a>> {
        let healthy = inputs.healthy;
        let shape = healthy.shape();
        if shape.contains(&0) {
            return Err(invalid(
                "healthy scan",
                format!("empty volume of shape {shape:?}"),
            ));
        }
        let inverse = check_affine("healthy scan", &healthy.affine)?;
        if let Some(m) = inputs.organ_mask {
            healthy.ensure_same_grid("healthy scan", m, "organ mask")?;
        }
        for (i, t) in inputs.textures.iter().enumerate() {
            let what = format!("texture scan {}", i + 1);
            if t.shape().contains(&0) {
                return Err(invalid(&what, "empty volume"));
            }
            check_affine(&what, &t.affine)?;
            if !t.data.iter().any(|&v| v != 0.0) {
                return Err(invalid(
                    &what,
                    "all voxels are zero: there is no anatomy to take a texture from",
                ));
            }
        }
        let (fg, nonfinite) = foreground(&healthy.data, inputs.organ_mask.map(|m| &m.data));
        if nonfinite {
            return Err(invalid("healthy scan", "contains NaN or infinite voxels"));
        }
        let fg = match (fg, inputs.organ_mask.is_some()) {
            (Some(fg), _) => fg,
            (None, true) => {
                return Err(invalid(
                    "organ mask",
                    "is empty: no voxel is inside the organ",
                ))
            }
            (None, false) => {
                return Err(invalid(
                    "healthy scan",
                    "all voxels are zero: no foreground to place a tumour in",
                ))
            }
        };
        let fg_world = world_box(&healthy.affine, &fg.bbox);
        Ok(Context {
            inputs,
            shape,
            spacing: healthy.spacing(),
            inverse,
            fg,
            fg_world,
            texture_boxes: inputs.textures.iter().map(|_| OnceLock::new()).collect(),
        })
    }

    /// [`nonzero_box`] of texture scan `i`, computed once.
    pub fn texture_box(&self, i: usize) -> (Option<Region>, bool) {
        *self.texture_boxes[i].get_or_init(|| nonzero_box(&self.inputs.textures[i].data))
    }

    /// 1 where a tumour may go inside `region` (organ mask, or non-zero healthy voxels); all 1
    /// when `clip` is off.
    pub fn organ_region(&self, region: &Region, clip: bool) -> Array3<u8> {
        let sl = s![
            region.lo[0]..region.hi[0],
            region.lo[1]..region.hi[1],
            region.lo[2]..region.hi[2]
        ];
        let mut out = Array3::<u8>::from_elem(region.shape(), 1);
        if !clip {
            return out;
        }
        match self.inputs.organ_mask {
            Some(m) => Zip::from(&mut out)
                .and(m.data.slice(sl))
                .par_for_each(|o, &v| *o = u8::from(v != 0)),
            None => Zip::from(&mut out)
                .and(self.inputs.healthy.data.slice(sl))
                .par_for_each(|o, &v| *o = u8::from(v != 0.0)),
        }
        out
    }
}
