//! Tumour textures over a box of the healthy grid: another scan's anatomy, elastically deformed
//! and blurred (the paper), or Hu et al.'s smoothed noise.

use ndarray::{s, Array3, ArrayView3, Axis, Zip};
use rayon::prelude::*;

use super::blur;
use super::context::Context;
use super::elastic::ControlGrid;
use super::grid::{world_box, Region};
use super::noise::Stream;
use crate::affine::check_affine;
use crate::error::{Error, Result};

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: "synthesis parameters: texture".into(),
        reason: reason.into(),
    }
}

/// Sigma in voxels along each axis of the healthy grid for a sigma in mm.
pub fn sigma_voxels(sigma_mm: [f64; 3], spacing: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|a| sigma_mm[a] / spacing[a])
}

/// Healthy voxel -> texture voxel, a 3x4 matrix. The two scans are aligned through the RAS
/// bounding boxes of their non-zero voxels, as the paper aligns them through their crops.
fn voxel_map(ctx: &Context<'_>, index: usize, what: &str) -> Result<[[f64; 4]; 3]> {
    let tex = &ctx.inputs.textures[index];
    let inv_t = check_affine(what, &tex.affine)?;
    let (bbox, nonfinite) = ctx.texture_box(index);
    if nonfinite {
        return Err(Error::InvalidInput {
            what: what.into(),
            reason: "contains NaN or infinite voxels".into(),
        });
    }
    let bbox = bbox.ok_or_else(|| Error::InvalidInput {
        what: what.into(),
        reason: "all voxels are zero: there is no anatomy to take a texture from".into(),
    })?;
    let (tlo, thi) = world_box(&tex.affine, &bbox);
    let (hlo, hhi) = ctx.fg_world;
    let a = &ctx.inputs.healthy.affine;
    // world_t = s * (A p + t - hlo) + tlo, then p_t = inv_t * world_t.
    let s = [0, 1, 2].map(|j| {
        let (eh, et) = (hhi[j] - hlo[j], thi[j] - tlo[j]);
        if eh > 1e-6 && et > 1e-6 {
            et / eh
        } else {
            1.0
        }
    });
    let mut w = [[0.0; 4]; 3];
    for j in 0..3 {
        for c in 0..4 {
            w[j][c] = s[j] * a[j][c];
        }
        w[j][3] += tlo[j] - s[j] * hlo[j];
    }
    let mut m = [[0.0; 4]; 3];
    for r in 0..3 {
        for c in 0..4 {
            m[r][c] = (0..3).map(|j| inv_t[r][j] * w[j][c]).sum::<f64>();
        }
        m[r][3] += inv_t[r][3];
    }
    Ok(m)
}

/// Trilinear interpolation with 0 outside the volume.
#[inline]
fn trilinear(v: &ArrayView3<f32>, p: [f64; 3]) -> f32 {
    let sh = v.shape();
    let st = v.strides();
    let mut offset = 0isize;
    let mut step = [0isize; 3];
    let mut frac = [0f32; 3];
    for a in 0..3 {
        if !(p[a] >= 0.0 && p[a] <= (sh[a] - 1) as f64) {
            return 0.0;
        }
        // `p >= 0` here, so truncation is the floor (without a call to libm's `floor`); through
        // i64, because x86-64's baseline converts between f64 and u64 only in several steps.
        let base = (p[a] as i64).min(sh[a].saturating_sub(2) as i64);
        frac[a] = (p[a] - base as f64) as f32;
        offset += base as isize * st[a];
        step[a] = if sh[a] > 1 { st[a] } else { 0 };
    }
    // SAFETY: base + step stays inside the array on every axis (checked above), so every
    // offset below addresses an element of `v`.
    let at = |d: isize| unsafe { *v.as_ptr().offset(offset + d) };
    let [fx, fy, fz] = frac;
    let [s0, s1, s2] = step;
    let c00 = at(0) * (1.0 - fz) + at(s2) * fz;
    let c01 = at(s1) * (1.0 - fz) + at(s1 + s2) * fz;
    let c10 = at(s0) * (1.0 - fz) + at(s0 + s2) * fz;
    let c11 = at(s0 + s1) * (1.0 - fz) + at(s0 + s1 + s2) * fz;
    let c0 = c00 * (1.0 - fy) + c01 * fy;
    let c1 = c10 * (1.0 - fy) + c11 * fy;
    c0 * (1.0 - fx) + c1 * fx
}

/// The paper's texture: a scan (or the healthy scan itself), deformed by a B-spline field over
/// the healthy grid, resampled onto `region` and blurred.
pub fn scan(
    ctx: &Context<'_>,
    region: &Region,
    source: Option<usize>,
    control_points: u32,
    displacements_mm: &[[f64; 3]],
    blur_sigma_mm: [f64; 3],
) -> Result<Array3<f32>> {
    let n = control_points as usize;
    if !(4..=64).contains(&n) || displacements_mm.len() != n * n * n {
        return Err(bad(format!(
            "an elastic texture needs 4..=64 control points and n^3 = {} displacements",
            n * n * n
        )));
    }
    if blur_sigma_mm.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(bad("blur sigmas must be finite and >= 0"));
    }
    let (tex, map) = match source {
        None => (ctx.inputs.healthy, None),
        Some(i) => {
            let tex = ctx.inputs.textures.get(i).ok_or_else(|| {
                bad(format!(
                    "source {i} but only {} texture scans were given",
                    ctx.inputs.textures.len()
                ))
            })?;
            let what = format!("texture scan {}", i + 1);
            (tex, Some(voxel_map(ctx, i, &what)?))
        }
    };
    let sp = ctx.spacing;
    let grid = ControlGrid {
        n,
        disp: displacements_mm
            .iter()
            .map(|d| [d[0] / sp[0], d[1] / sp[1], d[2] / sp[2]])
            .collect(),
    };
    let field = grid.evaluate([0; 3], ctx.shape, region);
    let view = tex.data.view();
    let mut out = Array3::<f32>::zeros(region.shape());
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(di, mut plane)| {
            for (dj, mut row) in plane.outer_iter_mut().enumerate() {
                let d = [0, 1, 2].map(|x| field[x].slice(s![di, dj, ..]));
                let (i, j) = ((region.lo[0] + di) as f64, (region.lo[1] + dj) as f64);
                // A running float index: exact, and cheaper than converting `usize` per voxel.
                let mut k = region.lo[2] as f64 - 1.0;
                for (dk, o) in row.iter_mut().enumerate() {
                    k += 1.0;
                    let p = [
                        i + d[0][dk] as f64,
                        j + d[1][dk] as f64,
                        k + d[2][dk] as f64,
                    ];
                    let q = match &map {
                        None => p,
                        Some(m) => [0, 1, 2]
                            .map(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3]),
                    };
                    *o = trilinear(&view, q);
                }
            }
        });
    blur::gaussian(&mut out, sigma_voxels(blur_sigma_mm, sp));
    Ok(out)
}

/// Sum (f64) and count of the voxels of `a` where `keep` holds, in a fixed order.
pub fn masked_sum(a: &Array3<f32>, keep: impl Fn(f32) -> bool + Sync) -> (f64, u64) {
    let parts: Vec<(f64, u64)> = a
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|plane| {
            plane
                .iter()
                .filter(|&&v| keep(v))
                .fold((0.0, 0), |(s, c), &v| (s + v as f64, c + 1))
        })
        .collect();
    parts
        .iter()
        .fold((0.0, 0), |(s, c), (ps, pc)| (s + ps, c + pc))
}

pub struct NoiseSpec {
    pub seed: u64,
    pub sigma_a_mm: f64,
    pub sigma_b_mm: f64,
    pub scale: f64,
    pub base: f64,
    pub mean_level: f64,
    pub threshold: f64,
}

/// Hu et al.'s texture (their `get_predefined_texture`), generated only over `region`. The
/// noise of each voxel depends on its index in the healthy grid, not on the region.
pub fn noise(ctx: &Context<'_>, region: &Region, spec: &NoiseSpec) -> Array3<f32> {
    let [_, n1, n2] = ctx.shape;
    let lin = |d: [usize; 3]| {
        (((region.lo[0] + d[0]) * n1 + region.lo[1] + d[1]) * n2 + region.lo[2] + d[2]) as u64
    };
    let mut a = Array3::<f32>::zeros(region.shape());
    let (first, second) = (Stream::new(spec.seed, 0), Stream::new(spec.seed, 1));
    Zip::indexed(&mut a).par_for_each(|(i, j, k), v| *v = first.uniform(lin([i, j, k])));
    let sp = ctx.spacing;
    blur::gaussian(&mut a, sigma_voxels([spec.sigma_a_mm; 3], sp));
    let lo = a.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (scale, base) = (spec.scale as f32, spec.base as f32);
    Zip::indexed(&mut a).par_for_each(|(i, j, k), v| {
        let level = if hi > lo {
            scale * (*v - lo) / (hi - lo) + base
        } else {
            base + 0.5 * scale
        };
        *v = f32::from(u8::from(level > second.uniform(lin([i, j, k]))));
    });
    blur::gaussian(&mut a, sigma_voxels([spec.sigma_b_mm; 3], sp));
    let thr = spec.threshold as f32;
    let (sum, count) = masked_sum(&a, |v| v > thr);
    let beta = if count > 0 && sum > 0.0 {
        (spec.mean_level / (sum / count as f64)) as f32
    } else {
        1.0
    };
    a.par_mapv_inplace(|v| (beta * v).clamp(0.0, 1.0));
    a
}
