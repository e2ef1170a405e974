//! Tumour shapes as implicit functions on the healthy grid: a "level" per voxel, the radius
//! normalised so that the surface is at 1 (inside below 1, the centre at 0).
//!
//! The star-shaped fBm shape is the paper's deformed icosphere without a mesh (method.md 3.1):
//! a voxel is mapped into the tumour's frame (translate, rotate, scale) and is inside when its
//! radius is below `1 + amplitude * fbm(direction + offset)`.

use ndarray::{s, Array3, Axis};
use rayon::prelude::*;

use super::context::Context;
use super::elastic::ControlGrid;
use super::grid::Region;
use super::noise::DirectionTable;
use super::params::{ShapeParams, TumourParams};
use crate::affine::voxel_box;
use crate::error::{Error, Result};

enum Kind {
    Star {
        table: DirectionTable,
        amplitude: f32,
    },
    /// Displacement (voxels) over the tumour's box, one array per axis.
    Elastic { field: Box<[Array3<f32>; 3]> },
}

pub struct TumourShape {
    /// Voxel index to the unit frame: `q = m p + m0`.
    m: [[f64; 3]; 3],
    m0: [f64; 3],
    pub bbox: Region,
    kind: Kind,
}

/// `Rz(c) Ry(b) Rx(a)` for angles in degrees.
fn rotation(deg: [f64; 3]) -> [[f64; 3]; 3] {
    let [a, b, c] = deg.map(f64::to_radians);
    let (sa, ca, sb, cb, sc, cc) = (a.sin(), a.cos(), b.sin(), b.cos(), c.sin(), c.cos());
    [
        [cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa],
        [sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa],
        [-sb, cb * sa, cb * ca],
    ]
}

fn bad(i: usize, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: format!("synthesis parameters: tumours[{i}]"),
        reason: reason.into(),
    }
}

impl TumourShape {
    pub fn new(index: usize, t: &TumourParams, ctx: &Context<'_>) -> Result<TumourShape> {
        let finite = t.centre_mm.iter().chain(&t.radii_mm).chain(&t.rotation_deg);
        if finite.clone().any(|v| !v.is_finite()) || t.radii_mm.iter().any(|&r| r <= 0.0) {
            return Err(bad(
                index,
                "centre, radii and rotation must be finite, radii > 0",
            ));
        }
        let a = &ctx.inputs.healthy.affine;
        let rot = rotation(t.rotation_deg);
        // m = diag(1/r) R^T A3, m0 = diag(1/r) R^T (A_t - c)
        let mut m = [[0.0; 3]; 3];
        let mut m0 = [0.0; 3];
        for i in 0..3 {
            for col in 0..3 {
                m[i][col] = (0..3).map(|k| rot[k][i] * a[k][col]).sum::<f64>() / t.radii_mm[i];
            }
            m0[i] = (0..3)
                .map(|k| rot[k][i] * (a[k][3] - t.centre_mm[k]))
                .sum::<f64>()
                / t.radii_mm[i];
        }
        // World half-extent of the ellipsoid with semi-axes `grow * r` along each RAS axis.
        let extent = |grow: f64, extra_mm: f64| -> [f64; 3] {
            [0, 1, 2].map(|j| {
                let s: f64 = (0..3).map(|i| (rot[j][i] * t.radii_mm[i]).powi(2)).sum();
                grow * s.sqrt() + extra_mm
            })
        };
        let unclipped = |e: [f64; 3]| {
            let lo = [0, 1, 2].map(|j| t.centre_mm[j] - e[j]);
            let hi = [0, 1, 2].map(|j| t.centre_mm[j] + e[j]);
            voxel_box(&ctx.inverse, lo, hi)
        };
        let (bbox, kind) = match &t.shape {
            ShapeParams::StarFbm {
                octaves,
                amplitude,
                offset,
                persistence,
                lacunarity,
            } => {
                if !(1..=12).contains(octaves) || !(0.0..1.0).contains(amplitude) {
                    return Err(bad(
                        index,
                        "octaves must be in [1, 12] and amplitude in [0, 1)",
                    ));
                }
                let table = DirectionTable::fbm(*octaves, *persistence, *lacunarity, *offset);
                let grow = 1.0 + amplitude * table.max.max(0.0) as f64;
                let (lo, hi) = unclipped(extent(grow, 0.0));
                let kind = Kind::Star {
                    table,
                    amplitude: *amplitude as f32,
                };
                (Region::clipped(lo, hi, ctx.shape), kind)
            }
            ShapeParams::ElasticEllipsoid {
                control_points,
                displacements_mm,
            } => {
                let n = *control_points as usize;
                if !(4..=32).contains(&n) || displacements_mm.len() != n * n * n {
                    return Err(bad(index, format!("an elastic shape needs 4..=32 control points and n^3 = {} displacements", n * n * n)));
                }
                let sp = ctx.spacing;
                let grid = ControlGrid {
                    n,
                    disp: displacements_mm
                        .iter()
                        .map(|d| [d[0] / sp[0], d[1] / sp[1], d[2] / sp[2]])
                        .collect(),
                };
                let max_mm = displacements_mm
                    .iter()
                    .flatten()
                    .fold(0.0f64, |acc, v| acc.max(v.abs()));
                let (lo, hi) = unclipped(extent(1.0, 3f64.sqrt() * max_mm));
                let bbox = Region::clipped(lo, hi, ctx.shape);
                let len = [0, 1, 2].map(|a| (hi[a] - lo[a]).max(1) as usize);
                let field = grid.evaluate(lo, len, &bbox);
                (
                    bbox,
                    Kind::Elastic {
                        field: Box::new(field),
                    },
                )
            }
        };
        Ok(TumourShape { m, m0, bbox, kind })
    }

    /// Lower `level` (indexed over `region`, which contains `self.bbox`) to this shape's level.
    /// With `exact` false, voxels surely inside get a level below 1 without a noise lookup.
    pub fn rasterize(&self, level: &mut Array3<f32>, region: &Region, exact: bool) {
        if self.bbox.is_empty() {
            return;
        }
        let (b, r) = (&self.bbox, region);
        let mut view = level.slice_mut(s![
            b.lo[0] - r.lo[0]..b.hi[0] - r.lo[0],
            b.lo[1] - r.lo[1]..b.hi[1] - r.lo[1],
            b.lo[2] - r.lo[2]..b.hi[2] - r.lo[2]
        ]);
        let (m, m0) = (&self.m, &self.m0);
        let step = [m[0][2], m[1][2], m[2][2]];
        view.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(di, mut plane)| {
                let i = (b.lo[0] + di) as f64;
                for (dj, mut row) in plane.outer_iter_mut().enumerate() {
                    let (j, k0) = ((b.lo[1] + dj) as f64, b.lo[2] as f64);
                    let start = [0, 1, 2].map(|x| m[x][0] * i + m[x][1] * j + m[x][2] * k0 + m0[x]);
                    match &self.kind {
                        Kind::Star { table, amplitude } => {
                            let outer = 1.0 + amplitude * table.max.max(0.0);
                            let inner = 1.0 + amplitude * table.min.min(0.0);
                            for (dk, out) in row.iter_mut().enumerate() {
                                let t = dk as f64;
                                let q = [0, 1, 2].map(|x| start[x] + t * step[x]);
                                let rho = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt() as f32;
                                if rho > outer || rho >= *out * outer {
                                    continue;
                                }
                                let l = if rho == 0.0 {
                                    0.0
                                } else if !exact && rho < inner {
                                    rho / inner
                                } else {
                                    rho / (1.0 + amplitude * table.lookup(q))
                                };
                                *out = out.min(l);
                            }
                        }
                        Kind::Elastic { field } => {
                            let d = [0, 1, 2].map(|x| field[x].slice(s![di, dj, ..]));
                            for (dk, out) in row.iter_mut().enumerate() {
                                let p = [i, j, (b.lo[2] + dk) as f64];
                                let p = [0, 1, 2].map(|x| p[x] + d[x][dk] as f64);
                                let q = [0, 1, 2].map(|x| {
                                    m[x][0] * p[0] + m[x][1] * p[1] + m[x][2] * p[2] + m0[x]
                                });
                                let l = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt() as f32;
                                *out = out.min(l);
                            }
                        }
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_orthonormal() {
        let r = rotation([30.0, 70.0, 120.0]);
        for i in 0..3 {
            for j in 0..3 {
                let d: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert_eq!(rotation([0.0; 3])[1], [0.0, 1.0, 0.0]);
    }
}
