//! Exact Euclidean distance transform with anisotropic voxel spacing.
//!
//! Written here because neither ndarray-ndimage nor another maintained crate offers an EDT with
//! per-axis spacing; this is the separable lower-envelope algorithm of Felzenszwalb and
//! Huttenlocher (2012), run along each axis in turn.

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

/// Distance in mm from every voxel to the nearest `true` voxel of `features` (infinity when
/// there is none).
pub fn distance_to(features: &Array3<bool>, spacing: [f64; 3]) -> Array3<f64> {
    let mut d2 = features.mapv(|f| if f { 0.0 } else { f64::INFINITY });
    for (axis, &s) in spacing.iter().enumerate() {
        let lanes: Vec<_> = d2.lanes_mut(Axis(axis)).into_iter().collect();
        lanes.into_par_iter().for_each(|mut lane| {
            let f: Vec<f64> = lane.iter().copied().collect();
            let out = lower_envelope(&f, s);
            for (dst, v) in lane.iter_mut().zip(out) {
                *dst = v;
            }
        });
    }
    let mut out = d2;
    Zip::from(&mut out).par_for_each(|v| *v = v.sqrt());
    out
}

/// Squared distance along one line: min over q of (s*(p-q))^2 + f[q].
fn lower_envelope(f: &[f64], s: f64) -> Vec<f64> {
    let n = f.len();
    let mut out = vec![f64::INFINITY; n];
    let sites: Vec<usize> = (0..n).filter(|&q| f[q].is_finite()).collect();
    if sites.is_empty() {
        return out;
    }
    let pos = |q: usize| q as f64 * s;
    // Intersection of the parabolas rooted at sites q and r (q < r).
    let meet = |q: usize, r: usize| {
        ((f[r] + pos(r) * pos(r)) - (f[q] + pos(q) * pos(q))) / (2.0 * (pos(r) - pos(q)))
    };
    let mut hull: Vec<usize> = Vec::with_capacity(sites.len());
    let mut bounds: Vec<f64> = Vec::with_capacity(sites.len());
    for &q in &sites {
        while let Some(&last) = hull.last() {
            let x = meet(last, q);
            if hull.len() > 1 && x <= *bounds.last().unwrap() {
                hull.pop();
                bounds.pop();
            } else {
                bounds.push(x);
                break;
            }
        }
        if hull.is_empty() {
            bounds.clear();
        }
        hull.push(q);
    }
    // bounds[i] separates hull[i] and hull[i + 1].
    let mut k = 0;
    for (p, o) in out.iter_mut().enumerate() {
        while k < bounds.len() && bounds[k] < pos(p) {
            k += 1;
        }
        let q = hull[k];
        *o = (pos(p) - pos(q)).powi(2) + f[q];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(features: &Array3<bool>, spacing: [f64; 3]) -> Array3<f64> {
        let pts: Vec<_> = features
            .indexed_iter()
            .filter(|(_, &f)| f)
            .map(|(i, _)| i)
            .collect();
        Array3::from_shape_fn(features.dim(), |(a, b, c)| {
            pts.iter()
                .map(|&(x, y, z)| {
                    let d = [
                        a as f64 - x as f64,
                        b as f64 - y as f64,
                        c as f64 - z as f64,
                    ];
                    ((d[0] * spacing[0]).powi(2)
                        + (d[1] * spacing[1]).powi(2)
                        + (d[2] * spacing[2]).powi(2))
                    .sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
    }

    #[test]
    fn matches_brute_force_with_anisotropic_spacing() {
        let mut features = Array3::from_elem((9, 7, 5), false);
        for &(a, b, c) in &[(0, 0, 0), (4, 3, 2), (8, 6, 1), (2, 5, 4)] {
            features[[a, b, c]] = true;
        }
        let spacing = [0.9, 1.7, 3.0];
        let fast = distance_to(&features, spacing);
        let slow = brute(&features, spacing);
        for (x, y) in fast.iter().zip(slow.iter()) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
    }

    #[test]
    fn no_features_means_infinite_distance() {
        let d = distance_to(&Array3::from_elem((3, 3, 3), false), [1.0; 3]);
        assert!(d.iter().all(|v| v.is_infinite()));
    }
}
