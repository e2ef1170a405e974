//! Thick slices: the partial-volume effect of an acquisition with slices thicker than the
//! grid's voxels, along one axis, as slabs averaged and interpolated back onto the grid.

use ndarray::{Array3, ArrayViewMut1, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

/// How thick slices are made along an axis of `n` voxels: each slab's taps (voxel, weight),
/// and for each voxel the two slabs it is interpolated between and the second one's weight.
struct Slabs {
    taps: Vec<Vec<(usize, f32)>>,
    interp: Vec<(usize, usize, f32)>,
}

impl Slabs {
    /// Slabs `t` voxels thick, the first starting `phase * t` before the grid's first voxel
    /// edge; each slab is the mean of the scan over it (voxels as constant boxes, the edge voxels
    /// extended beyond the grid), and every voxel is interpolated linearly between the two
    /// nearest slab centres (the nearest slab beyond the outer ones).
    fn new(n: usize, t: f64, phase: f64) -> Slabs {
        let start = -0.5 - phase * t;
        let mut taps = Vec::new();
        let mut s = start;
        while s < n as f64 - 0.5 {
            let (lo, hi) = (s, s + t);
            let mut tk: Vec<(usize, f32)> = Vec::new();
            let first = ((lo + 0.5).floor().max(0.0) as usize).min(n - 1);
            let last = ((hi + 0.5).ceil().max(1.0) as usize).min(n) - 1;
            for j in first..=last.max(first) {
                // Voxel j covers [j - 0.5, j + 0.5], the outer ones reach on to infinity.
                let a = if j == 0 {
                    f64::NEG_INFINITY
                } else {
                    j as f64 - 0.5
                };
                let b = if j == n - 1 {
                    f64::INFINITY
                } else {
                    j as f64 + 0.5
                };
                let overlap = hi.min(b) - lo.max(a);
                if overlap > 0.0 {
                    tk.push((j, (overlap / t) as f32));
                }
            }
            taps.push(tk);
            s += t;
        }
        let count = taps.len();
        let c0 = start + 0.5 * t;
        let interp = (0..n)
            .map(|i| {
                let u = (i as f64 - c0) / t;
                if u <= 0.0 {
                    (0, 0, 0.0)
                } else if u as usize + 1 >= count {
                    (count - 1, count - 1, 0.0)
                } else {
                    let k = u as usize;
                    (k, k + 1, (u - k as f64) as f32)
                }
            })
            .collect();
        Slabs { taps, interp }
    }

    /// Rows of `chunk` are the positions along the axis; every column is one line through it.
    /// Whole rows are weighted and added (contiguous, vectorised).
    fn rows(&self, mut chunk: ArrayViewMut2<'_, f32>) {
        let c = chunk.ncols();
        let mut slabs = vec![0.0f32; self.taps.len() * c];
        for (dst, tk) in slabs.chunks_mut(c).zip(&self.taps) {
            for &(j, a) in tk {
                for (d, &v) in dst.iter_mut().zip(chunk.row(j)) {
                    *d += a * v;
                }
            }
        }
        for (mut row, &(k, k1, w)) in chunk.rows_mut().into_iter().zip(&self.interp) {
            let (sa, sb) = (&slabs[k * c..(k + 1) * c], &slabs[k1 * c..(k1 + 1) * c]);
            for ((o, &a), &b) in row.iter_mut().zip(sa).zip(sb) {
                *o = a * (1.0 - w) + b * w;
            }
        }
    }

    /// One line along the axis (the same arithmetic as [`Self::rows`], so the same bytes).
    fn lane(&self, mut lane: ArrayViewMut1<'_, f32>, slabs: &mut Vec<f32>) {
        slabs.clear();
        slabs.extend(
            self.taps
                .iter()
                .map(|tk| tk.iter().fold(0.0f32, |acc, &(j, a)| acc + a * lane[j])),
        );
        for (o, &(k, k1, w)) in lane.iter_mut().zip(&self.interp) {
            *o = slabs[k] * (1.0 - w) + slabs[k1] * w;
        }
    }
}

/// Thick slices along `axis` ([`Slabs`]), in place. Written here: the repository's resampling
/// ([`crate::resample`]) resizes to a shape with torch's conventions, which has no slab
/// profile, phase or fractional thickness.
pub(super) fn thicken(x: &mut Array3<f32>, axis: usize, t: f64, phase: f64) {
    let n = x.len_of(Axis(axis));
    if n == 0 || t.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return;
    }
    let slabs = Slabs::new(n, t, phase);
    // The array in memory order (C, or Fortran reversed), and the axis in that view.
    let fortran = !x.is_standard_layout() && x.view().reversed_axes().is_standard_layout();
    let (mut view, axis) = if fortran {
        (x.view_mut().reversed_axes(), 2 - axis)
    } else {
        (x.view_mut(), axis)
    };
    if !view.is_standard_layout() || axis == 2 {
        // Along the contiguous axis (or an odd layout): one lane at a time.
        Zip::from(view.lanes_mut(Axis(axis)))
            .into_par_iter()
            .for_each_init(Vec::new, |buf, (lane,)| slabs.lane(lane, buf));
        return;
    }
    let d = view.shape().to_vec();
    let group: usize = d[..axis].iter().product();
    let row: usize = d[axis + 1..].iter().product();
    let Ok(mut cube) = view.into_shape_with_order((group, n, row)) else {
        return;
    };
    const COLUMNS: usize = 2048;
    cube.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut plane| {
            plane
                .axis_chunks_iter_mut(Axis(1), COLUMNS)
                .into_par_iter()
                .for_each(|chunk| slabs.rows(chunk));
        });
}
