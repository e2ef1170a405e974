//! Cubic B-spline displacement fields on a coarse control grid (TorchIO's
//! `RandomElasticDeformation`, i.e. a SimpleITK `BSplineTransform` with a mesh of
//! `control_points - 3` cells spanning the domain).
//!
//! Written here because no maintained crate evaluates a 3D B-spline transform on a grid. The
//! field is evaluated separably (axis by axis), about 12 multiply-adds per voxel and component
//! instead of 64 for a direct sum over the 4x4x4 support.

use ndarray::Array3;
use rayon::prelude::*;

use super::grid::Region;

/// Displacements (in voxels of the grid they deform) at `n^3` control points, index `[a][b][c]`
/// flattened as `(a * n + b) * n + c`.
#[derive(Clone, Debug)]
pub struct ControlGrid {
    pub n: usize,
    pub disp: Vec<[f64; 3]>,
}

fn basis(u: f64) -> [f64; 4] {
    let u2 = u * u;
    let u3 = u2 * u;
    [
        (1.0 - u).powi(3) / 6.0,
        (3.0 * u3 - 6.0 * u2 + 4.0) / 6.0,
        (-3.0 * u3 + 3.0 * u2 + 3.0 * u + 1.0) / 6.0,
        u3 / 6.0,
    ]
}

/// First control index and the 4 weights for position `x` in a domain of `len` voxels.
fn taps(x: f64, len: usize, n: usize) -> (usize, [f64; 4]) {
    let cells = (n - 3) as f64;
    let h = if len > 1 {
        (len - 1) as f64 / cells
    } else {
        1.0
    };
    let t = (x / h).clamp(0.0, cells);
    let mut i = t.floor() as usize;
    let mut u = t - i as f64;
    if i >= n - 3 {
        i = n - 4;
        u = 1.0;
    }
    (i, basis(u))
}

impl ControlGrid {
    pub fn zeros(n: usize) -> ControlGrid {
        ControlGrid {
            n,
            disp: vec![[0.0; 3]; n * n * n],
        }
    }

    pub fn max_abs(&self) -> f64 {
        self.disp
            .iter()
            .flatten()
            .fold(0.0f64, |m, v| m.max(v.abs()))
    }

    /// The field over the voxels of `region`, for a domain of `domain_len` voxels starting at
    /// `domain_lo` (signed: a tumour's domain may stick out of the image). One array per axis.
    pub fn evaluate(
        &self,
        domain_lo: [i64; 3],
        domain_len: [usize; 3],
        region: &Region,
    ) -> [Array3<f32>; 3] {
        let n = self.n;
        let shape = region.shape();
        let taps_of = |ax: usize| -> Vec<(usize, [f64; 4])> {
            (0..shape[ax])
                .map(|x| {
                    let rel = (region.lo[ax] + x) as i64 - domain_lo[ax];
                    taps(rel as f64, domain_len[ax], n)
                })
                .collect()
        };
        let (tx, ty, tz) = (taps_of(0), taps_of(1), taps_of(2));
        [0, 1, 2].map(|comp| {
            // t1[a][b][z] = sum over c, then t2[a][y][z] = sum over b, then out = sum over a.
            let mut t1 = vec![0.0f64; n * n * shape[2]];
            for a in 0..n {
                for b in 0..n {
                    for (z, (s, w)) in tz.iter().enumerate() {
                        let base = (a * n + b) * n + s;
                        t1[(a * n + b) * shape[2] + z] =
                            (0..4).map(|q| w[q] * self.disp[base + q][comp]).sum();
                    }
                }
            }
            let plane = shape[1] * shape[2];
            let mut t2 = vec![0.0f32; n * plane];
            for a in 0..n {
                for (y, (s, w)) in ty.iter().enumerate() {
                    for z in 0..shape[2] {
                        t2[a * plane + y * shape[2] + z] = (0..4)
                            .map(|q| w[q] * t1[(a * n + s + q) * shape[2] + z])
                            .sum::<f64>()
                            as f32;
                    }
                }
            }
            let mut out = Array3::<f32>::zeros(shape);
            if let Some(flat) = out.as_slice_mut() {
                flat.par_chunks_mut(plane.max(1))
                    .zip(tx.par_iter())
                    .for_each(|(dst, (s, w))| {
                        for (q, &wq) in w.iter().enumerate() {
                            let src = &t2[(s + q) * plane..(s + q + 1) * plane];
                            for (d, &v) in dst.iter_mut().zip(src) {
                                *d += wq as f32 * v;
                            }
                        }
                    });
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_grid_gives_constant_field() {
        let mut g = ControlGrid::zeros(7);
        g.disp.iter_mut().for_each(|d| *d = [1.5, -2.0, 0.25]);
        let r = Region {
            lo: [0, 3, 1],
            hi: [10, 8, 9],
        };
        let f = g.evaluate([0, 0, 0], [10, 12, 9], &r);
        assert!(f[0].iter().all(|v| (v - 1.5).abs() < 1e-6));
        assert!(f[1].iter().all(|v| (v + 2.0).abs() < 1e-6));
        assert_eq!(f[2].shape(), &[10, 5, 8]);
    }

    #[test]
    fn locked_borders_vanish_at_the_image_border() {
        // With 7 points and 2 locked layers only points 2..=4 move; at the image corners the
        // support is points 0..=3 with weights (1/6, 2/3, 1/6, 0), so only point 2 contributes.
        let n = 7;
        let mut g = ControlGrid::zeros(n);
        for a in 2..5 {
            for b in 2..5 {
                for c in 2..5 {
                    g.disp[(a * n + b) * n + c] = [1.0, 1.0, 1.0];
                }
            }
        }
        let f = g.evaluate([0, 0, 0], [9, 9, 9], &Region::whole([9, 9, 9]));
        let corner = f[0][[0, 0, 0]] as f64;
        assert!((corner - (1.0f64 / 6.0).powi(3)).abs() < 1e-6, "{corner}");
        assert!(f[0][[4, 4, 4]] > 0.9);
    }

    #[test]
    fn evaluating_a_subregion_matches_the_whole() {
        let n = 5;
        let mut g = ControlGrid::zeros(n);
        for (i, d) in g.disp.iter_mut().enumerate() {
            *d = [(i as f64).sin(), (i as f64 * 0.7).cos(), 0.1 * i as f64];
        }
        let whole = g.evaluate([-2, 0, 3], [12, 10, 8], &Region::whole([12, 10, 11]));
        let sub = Region {
            lo: [3, 2, 5],
            hi: [9, 7, 10],
        };
        let part = g.evaluate([-2, 0, 3], [12, 10, 8], &sub);
        for c in 0..3 {
            let w = whole[c].slice(ndarray::s![3..9, 2..7, 5..10]);
            assert_eq!(w, part[c]);
        }
    }
}
