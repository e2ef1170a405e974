//! Separable Gaussian blur with a sigma per axis, as `scipy.ndimage.gaussian_filter` (mode
//! "reflect", truncate 4).
//!
//! Written here rather than taken from `ndarray-ndimage` because that crate's filter takes one
//! sigma for all axes, runs on one thread and panics when an axis is shorter than the kernel;
//! here each lane is independent, so the rayon loop gives the same bytes for any thread count.

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

use super::grid::reflect;

/// Normalised kernel of radius `floor(4 sigma + 0.5)`, or `None` when sigma is too small to blur.
pub fn kernel(sigma: f64) -> Option<Vec<f32>> {
    if !(sigma.is_finite() && sigma > 1e-3) {
        return None;
    }
    let radius = (4.0 * sigma + 0.5).floor() as isize;
    if radius < 1 {
        return None;
    }
    let w: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    Some(w.iter().map(|v| (v / sum) as f32).collect())
}

/// Kernel radius in voxels for `sigma` (0 when no blur happens).
pub fn radius(sigma: f64) -> usize {
    kernel(sigma).map_or(0, |k| k.len() / 2)
}

/// Blur `data` in place with `sigma[a]` voxels along axis `a`.
pub fn gaussian(data: &mut Array3<f32>, sigma: [f64; 3]) {
    for (axis, &s) in sigma.iter().enumerate() {
        if let Some(k) = kernel(s) {
            if data.is_standard_layout() && axis < 2 {
                blur_outer(data, axis, &k);
            } else {
                blur_axis(data, axis, &k);
            }
        }
    }
}

/// Along axis 0 or 1 of a C-ordered array: whole rows are weighted and added (contiguous,
/// vectorised), one output plane or row at a time.
fn blur_outer(data: &mut Array3<f32>, axis: usize, k: &[f32]) {
    let [n0, n1, n2] = [data.shape()[0], data.shape()[1], data.shape()[2]];
    let r = (k.len() / 2) as isize;
    let Some(src) = data.as_slice() else {
        return blur_axis(data, axis, k);
    };
    // A "row" is a plane (axis 0) or a row within a plane (axis 1); rows are blurred across.
    let (n, row, group) = if axis == 0 {
        (n0, n1 * n2, n0 * n1 * n2)
    } else {
        (n1, n2, n1 * n2)
    };
    let mut out = vec![0.0f32; src.len()];
    out.par_chunks_mut(row).enumerate().for_each(|(idx, dst)| {
        let (g, i) = (idx * row / group, idx % n);
        for (t, &w) in k.iter().enumerate() {
            let from = g * group + reflect(i as isize + t as isize - r, n) * row;
            for (d, &v) in dst.iter_mut().zip(&src[from..from + row]) {
                *d += w * v;
            }
        }
    });
    *data = Array3::from_shape_vec(data.raw_dim(), out).expect("the shape matches the data");
}

fn blur_axis(data: &mut Array3<f32>, axis: usize, k: &[f32]) {
    let n = data.len_of(Axis(axis));
    if n == 0 {
        return;
    }
    let r = (k.len() / 2) as isize;
    Zip::from(data.lanes_mut(Axis(axis)))
        .into_par_iter()
        .for_each_init(
            || Vec::<f32>::with_capacity(n + 2 * r as usize),
            |buf, (mut lane,)| {
                buf.clear();
                buf.extend((-r..n as isize + r).map(|i| lane[reflect(i, n)]));
                if let Some(row) = lane.as_slice_mut() {
                    // Tap by tap over the whole row: contiguous and vectorised.
                    row.fill(0.0);
                    for (t, &w) in k.iter().enumerate() {
                        for (o, &v) in row.iter_mut().zip(&buf[t..t + n]) {
                            *o += w * v;
                        }
                    }
                } else {
                    for (i, out) in lane.iter_mut().enumerate() {
                        *out = buf[i..i + k.len()]
                            .iter()
                            .zip(k)
                            .fold(0.0, |a, (v, w)| a + v * w);
                    }
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserves_constants_and_mass() {
        let mut a = Array3::from_elem((5, 6, 7), 3.0f32);
        gaussian(&mut a, [1.0, 2.0, 0.5]);
        assert!(a.iter().all(|v| (v - 3.0).abs() < 1e-5));
        let mut b = Array3::<f32>::zeros((21, 21, 21));
        b[[10, 10, 10]] = 1.0;
        gaussian(&mut b, [1.0, 1.5, 2.0]);
        assert!((b.sum() - 1.0).abs() < 1e-4);
        // The spread along each axis is the sigma asked for.
        let var = |ax: usize| -> f32 {
            b.indexed_iter()
                .map(|(i, v)| {
                    let d = [i.0, i.1, i.2][ax] as f32 - 10.0;
                    v * d * d
                })
                .sum()
        };
        assert!((var(0) - 1.0).abs() < 0.02 && (var(2) - 4.0).abs() < 0.05);
    }

    #[test]
    fn short_axes_do_not_panic() {
        let mut a = Array3::from_elem((1, 2, 3), 1.0f32);
        gaussian(&mut a, [5.0, 5.0, 5.0]);
        assert!(a.iter().all(|v| (v - 1.0).abs() < 1e-5));
        assert!(kernel(0.0).is_none() && radius(2.0) == 8);
    }
}
