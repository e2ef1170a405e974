//! Acquisition randomisation (issue 17): the blended case as a clinical scanner would have
//! acquired it. The profile section and the reasons for where and in what order each step
//! applies are documented in [`crate::profile::Acquisition`]; in short, every step acts on the
//! blended image *and* on the healthy layer alike (after blending), and the mask follows the
//! geometric steps (thickness, coverage).
//!
//! [`sample`] draws an [`AcquisitionParams`] from its own random stream (turning the section on
//! or off leaves the tumour's parameters as they were); [`apply`] is a pure function of it.
//! Every loop is over independent voxels or independent lanes, and the noise is a function of
//! the voxel's index ([`noise::Stream::normal`]), so any thread count gives the same bytes.

mod bias;
#[cfg(test)]
mod tests;
mod thickness;

use ndarray::{s, Array3, ArrayView3, Axis, ShapeBuilder, Zip};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use bias::{bias_peak, bias_terms};
use thickness::thicken;

use super::blend::Synthesized;
use super::context::Context;
use super::draw::uniform;
use super::grid::Region;
use super::noise;
use super::params::*;
use crate::affine::apply as apply_affine;
use crate::error::{Error, Result};
use crate::profile::{Acquisition, NoiseKind, Range};

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: "synthesis parameters: acquisition".into(),
        reason: reason.into(),
    }
}

/// Drawn once per step, whatever the outcome, so that one step's probability never shifts
/// another step's values.
fn chance(rng: &mut ChaCha8Rng, p: f64, range: &Range) -> Option<f64> {
    let hit = rng.random::<f64>() < p;
    let v = uniform(rng, range);
    hit.then_some(v)
}

/// The half-open span of voxel indices along `axis` that `t` can reach, generously: the largest
/// radius grown by the shape noise's largest reach (star: `1 + amplitude`; elastic: plus the
/// largest control displacement, which bounds the B-spline field).
fn tumour_span(ctx: &Context<'_>, t: &TumourParams, axis: usize) -> (f64, f64) {
    let r = t.radii_mm.iter().copied().fold(0.0, f64::max);
    let reach_mm = match &t.shape {
        ShapeParams::StarFbm { amplitude, .. } => r * (1.0 + amplitude.abs()),
        ShapeParams::ElasticEllipsoid {
            displacements_mm, ..
        } => {
            r + displacements_mm
                .iter()
                .map(|d| (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt())
                .fold(0.0, f64::max)
        }
    };
    let row = ctx.inverse[axis];
    let per_mm = (row[0] * row[0] + row[1] * row[1] + row[2] * row[2]).sqrt();
    let c = apply_affine(&ctx.inverse, t.centre_mm)[axis];
    (c - reach_mm * per_mm, c + reach_mm * per_mm)
}

/// Draw a case's acquisition; `tumours` are its tumours (the covered band contains them).
pub fn sample(
    a: &Acquisition,
    ctx: &Context<'_>,
    tumours: &[TumourParams],
    rng: &mut ChaCha8Rng,
) -> AcquisitionParams {
    let slice_axis = ((rng.random::<f64>() * 3.0) as usize).min(2);
    let slice_thickness = a.slice_thickness.as_ref().and_then(|t| {
        let thickness_mm = chance(rng, t.probability, &t.thickness_mm);
        let phase = rng.random::<f64>();
        thickness_mm.map(|thickness_mm| ThicknessParams {
            thickness_mm,
            phase,
        })
    });
    let mean = ctx.fg.mean;
    let contrast = a.contrast.as_ref().and_then(|c| {
        chance(rng, c.probability, &c.factor).map(|factor| ContrastParams {
            factor,
            pivot: mean,
        })
    });
    // Gamma needs a positive reference; a foreground whose mean is not positive gets none.
    let gamma = a.gamma.as_ref().and_then(|g| {
        chance(rng, g.probability, &g.gamma)
            .filter(|_| mean > 0.0)
            .map(|gamma| GammaParams {
                gamma,
                reference: mean,
            })
    });
    let bias_field = a.bias_field.as_ref().and_then(|b| {
        let strength = chance(rng, b.probability, &b.strength);
        let raw: Vec<f64> = (0..bias_terms(b.order))
            .map(|_| rng.random_range(-1.0..=1.0))
            .collect();
        strength.map(|s| {
            let peak = bias_peak(b.order, &raw, ctx.shape);
            let scale = if peak > 1e-12 { s / peak } else { 0.0 };
            BiasFieldParams {
                order: b.order,
                coefficients: raw.iter().map(|c| c * scale).collect(),
            }
        })
    });
    let noise = a.noise.as_ref().and_then(|n| {
        let sigma = chance(rng, n.probability, &n.sigma);
        let seed = rng.random::<u64>();
        sigma.map(|s| NoiseParams {
            kind: n.kind,
            sigma: if n.relative_to_foreground_mean {
                s * mean.abs()
            } else {
                s
            },
            seed,
        })
    });
    let coverage = a.coverage.as_ref().and_then(|c| {
        let fraction = chance(rng, c.probability, &c.fraction);
        let u = rng.random::<f64>();
        let n = ctx.shape[slice_axis];
        fraction.map(|f| {
            let mut len = ((f * n as f64).round() as usize).clamp(1, n);
            let span = tumours
                .iter()
                .map(|t| tumour_span(ctx, t, slice_axis))
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
                .map(|(lo, hi)| {
                    let lo = lo.floor().clamp(0.0, n as f64) as usize;
                    let hi = (hi.ceil() + 1.0).clamp(0.0, n as f64) as usize;
                    (lo, hi.max(lo))
                });
            let (first_lo, first_hi) = match span {
                Some((lo, hi)) => {
                    len = len.max(hi - lo);
                    (hi.saturating_sub(len), lo.min(n - len))
                }
                None => (0, n - len),
            };
            let first = (first_lo + (u * (first_hi - first_lo + 1) as f64) as usize).min(first_hi);
            CoverageParams {
                first,
                end: first + len,
            }
        })
    });
    AcquisitionParams {
        slice_axis,
        background: a.background,
        keep_zero_background: a.keep_zero_background,
        contrast,
        gamma,
        bias_field,
        slice_thickness,
        noise,
        coverage,
    }
}

/// The checked parameters with what every voxel needs precomputed.
struct Plan<'p> {
    p: &'p AcquisitionParams,
    shape: [usize; 3],
    /// Slab thickness in voxels along the slice axis.
    thickness: Option<(f64, f64)>,
    /// The bias exponent's partial sums over the first two axes, `[(i * n1 + j) * o + n]`, and
    /// the cosines along the third, `[n * n2 + k]`.
    bias: Option<(usize, Vec<f32>, Vec<f32>)>,
    /// The per-voxel steps' numbers, in the voxels' precision.
    contrast: Option<(f32, f32)>,
    gamma: Option<(f32, f32)>,
    /// Sigma, the kind, and the real and imaginary parts' streams.
    noise: Option<(f32, NoiseKind, [noise::Stream; 2])>,
}

impl<'p> Plan<'p> {
    fn new(ctx: &Context<'_>, p: &'p AcquisitionParams) -> Result<Plan<'p>> {
        let shape = ctx.shape;
        if p.slice_axis > 2 {
            return Err(bad("slice_axis must be 0, 1 or 2"));
        }
        if !p.background.is_finite() {
            return Err(bad("background must be finite"));
        }
        let finite = |v: f64| v.is_finite();
        if let Some(c) = &p.contrast {
            if !(finite(c.factor) && finite(c.pivot)) {
                return Err(bad("contrast factor and pivot must be finite"));
            }
        }
        if let Some(g) = &p.gamma {
            if !(finite(g.gamma) && g.gamma > 0.0 && finite(g.reference) && g.reference > 0.0) {
                return Err(bad("gamma and its reference must be finite and > 0"));
            }
        }
        let thickness = match &p.slice_thickness {
            Some(t) => {
                if !(finite(t.thickness_mm)
                    && t.thickness_mm > 0.0
                    && (0.0..1.0).contains(&t.phase))
                {
                    return Err(bad("thickness_mm must be > 0 and phase in [0, 1)"));
                }
                Some((t.thickness_mm / ctx.spacing[p.slice_axis], t.phase))
            }
            None => None,
        };
        if let Some(n) = &p.noise {
            if !(finite(n.sigma) && n.sigma >= 0.0) {
                return Err(bad("noise sigma must be finite and >= 0"));
            }
        }
        if let Some(c) = &p.coverage {
            if !(c.first < c.end && c.end <= shape[p.slice_axis]) {
                return Err(bad(format!(
                    "coverage {}..{} is not a non-empty band of the {} slices",
                    c.first, c.end, shape[p.slice_axis]
                )));
            }
        }
        let bias = match &p.bias_field {
            Some(b) => {
                if !(1..=8).contains(&b.order)
                    || b.coefficients.len() != bias_terms(b.order)
                    || !b.coefficients.iter().all(|c| c.is_finite())
                {
                    return Err(bad(format!(
                        "a bias field of order 1 to 8 needs (order + 1)^3 - 1 finite coefficients, got order {} and {}",
                        b.order,
                        b.coefficients.len()
                    )));
                }
                Some(bias::partial_sums(b, shape))
            }
            None => None,
        };
        Ok(Plan {
            p,
            shape,
            thickness,
            bias,
            contrast: p.contrast.map(|c| (c.factor as f32, c.pivot as f32)),
            gamma: p.gamma.map(|g| (g.gamma as f32, g.reference as f32)),
            noise: p.noise.filter(|n| n.sigma > 0.0).map(|n| {
                let streams = [0, 1].map(|s| noise::Stream::new(n.seed, s));
                (n.sigma as f32, n.kind, streams)
            }),
        })
    }

    fn covered(&self, g: [usize; 3]) -> bool {
        self.p
            .coverage
            .is_none_or(|c| (c.first..c.end).contains(&g[self.p.slice_axis]))
    }

    /// The intensity steps (contrast, gamma, bias) on voxel `g` of value `v`.
    #[inline]
    fn intensity(&self, g: [usize; 3], v: f32) -> f32 {
        if self.p.keep_zero_background && v == 0.0 {
            return v;
        }
        let mut v = v;
        if let Some((f, pivot)) = self.contrast {
            v = pivot + f * (v - pivot);
        }
        if let Some((gamma, m)) = self.gamma {
            v = (v / m).abs().powf(gamma).copysign(v) * m;
        }
        if let Some((o, partial, c2)) = &self.bias {
            let [_, n1, n2] = self.shape;
            let row = &partial[(g[0] * n1 + g[1]) * o..][..*o];
            let f: f32 = row
                .iter()
                .enumerate()
                .map(|(n, a)| a * c2[n * n2 + g[2]])
                .sum();
            v *= f.exp();
        }
        v
    }

    /// Coverage and noise on voxel `g` of value `v`.
    #[inline]
    fn noise_and_coverage(&self, g: [usize; 3], v: f32) -> f32 {
        if !self.covered(g) {
            return self.p.background as f32;
        }
        let Some((sigma, kind, [real, imaginary])) = self.noise else {
            return v;
        };
        if self.p.keep_zero_background && v == 0.0 {
            return v;
        }
        let [_, n1, n2] = self.shape;
        let index = ((g[0] * n1 + g[1]) * n2 + g[2]) as u64;
        let a = v + sigma * real.normal(index);
        match kind {
            NoiseKind::Gaussian => a,
            NoiseKind::Rician => {
                let b = sigma * imaginary.normal(index);
                (a * a + b * b).sqrt()
            }
        }
    }

    /// The intensity steps and the geometry on `src`, a box of the grid whose first voxel is
    /// `origin` (spanning the whole slice axis when there is a thickness), into a new array.
    /// Without thick slices every step is one pass over the voxels, read once from `src`.
    fn degrade(&self, src: ArrayView3<'_, f32>, origin: [usize; 3]) -> Array3<f32> {
        let p = self.p;
        let intensity = self.contrast.is_some() || self.gamma.is_some() || self.bias.is_some();
        let late = p.noise.is_some() || p.coverage.is_some();
        match self.thickness {
            None => map_voxels(src, origin, |g, v| {
                let v = if intensity { self.intensity(g, v) } else { v };
                if late {
                    self.noise_and_coverage(g, v)
                } else {
                    v
                }
            }),
            Some((t, phase)) => {
                let mut x = map_voxels(src, origin, |g, v| {
                    if intensity {
                        self.intensity(g, v)
                    } else {
                        v
                    }
                });
                thicken(&mut x, p.slice_axis, t, phase);
                if late {
                    for_each_voxel(&mut x, origin, |g, v| *v = self.noise_and_coverage(g, *v));
                }
                x
            }
        }
    }

    /// The geometric steps on a mask box: partial volume (kept where at least half the voxel
    /// is tumour) and coverage.
    fn degrade_mask(&self, mask: ArrayView3<'_, u8>, origin: [usize; 3]) -> Array3<u8> {
        let mut m = Zip::from(mask).par_map_collect(|&v| f32::from(v));
        if let Some((t, phase)) = self.thickness {
            thicken(&mut m, self.p.slice_axis, t, phase);
        }
        for_each_voxel(&mut m, origin, |g, v| {
            if !self.covered(g) {
                *v = 0.0;
            }
        });
        Zip::from(&m).par_map_collect(|&v| u8::from(v >= 0.5))
    }
}

/// The grid index of the element at position `[a, b, c]` of a memory-order walk (outermost
/// first) over a box at `origin`; a Fortran-order walk visits the axes reversed.
#[inline]
fn grid_index(fortran: bool, origin: [usize; 3], [a, b, c]: [usize; 3]) -> [usize; 3] {
    let [o0, o1, o2] = origin;
    if fortran {
        [c + o0, b + o1, a + o2]
    } else {
        [a + o0, b + o1, c + o2]
    }
}

/// `f(global index, voxel)` for every voxel of a box at `origin`, in memory order (C or
/// Fortran), planes of the outermost memory axis in parallel.
fn for_each_voxel(
    x: &mut Array3<f32>,
    origin: [usize; 3],
    f: impl Fn([usize; 3], &mut f32) + Sync,
) {
    let fortran = !x.is_standard_layout() && x.view().reversed_axes().is_standard_layout();
    let mut view = if fortran {
        x.view_mut().reversed_axes()
    } else {
        x.view_mut()
    };
    view.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(a, mut plane)| {
            for (b, mut row) in plane.rows_mut().into_iter().enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    f(grid_index(fortran, origin, [a, b, c]), v);
                }
            }
        });
}

/// `f(global index, voxel)` of every voxel of `src`, a box at `origin`, into a new array in
/// `src`'s memory order (C, or Fortran for a Fortran array or a box of one), planes of the
/// outermost memory axis in parallel.
fn map_voxels(
    src: ArrayView3<'_, f32>,
    origin: [usize; 3],
    f: impl Fn([usize; 3], f32) -> f32 + Sync,
) -> Array3<f32> {
    let strides = src.strides();
    let fortran =
        !src.is_standard_layout() && strides[0].unsigned_abs() < strides[2].unsigned_abs();
    let mut out = if fortran {
        Array3::uninit(src.raw_dim().f())
    } else {
        Array3::uninit(src.raw_dim())
    };
    let (mut dst, src) = if fortran {
        (out.view_mut().reversed_axes(), src.reversed_axes())
    } else {
        (out.view_mut(), src)
    };
    dst.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(src.axis_iter(Axis(0)).into_par_iter())
        .enumerate()
        .for_each(|(a, (mut to, from))| {
            for (b, (mut to, from)) in to.outer_iter_mut().zip(from.outer_iter()).enumerate() {
                for (c, (o, &v)) in to.iter_mut().zip(from.iter()).enumerate() {
                    o.write(f(grid_index(fortran, origin, [a, b, c]), v));
                }
            }
        });
    // SAFETY: the loop above wrote every element of `out`.
    unsafe { out.assume_init() }
}

/// Degrade a blended case: the healthy layer and the image alike, the mask by the geometric
/// steps, the tumour layer the image inside the new mask. `changed` is the box outside which
/// the image equals the healthy scan (`None`: nowhere different).
pub fn apply(
    ctx: &Context<'_>,
    p: &AcquisitionParams,
    changed: Option<&Region>,
    mut out: Synthesized,
) -> Result<Synthesized> {
    let plan = Plan::new(ctx, p)?;
    let healthy_in = ctx.inputs.healthy;
    let healthy = plan.degrade(healthy_in.data.view(), [0; 3]);
    // Outside `changed` the image is the healthy scan, so it is the degraded healthy layer; the
    // lanes along the slice axis that cross `changed` are degraded from the image itself.
    let boxed = changed.filter(|r| !r.is_empty()).map(|r| {
        let mut b = *r;
        if plan.thickness.is_some() {
            b.lo[p.slice_axis] = 0;
            b.hi[p.slice_axis] = ctx.shape[p.slice_axis];
        }
        b
    });
    let degraded_box = boxed.map(|b| {
        let sl = s![b.lo[0]..b.hi[0], b.lo[1]..b.hi[1], b.lo[2]..b.hi[2]];
        let image = plan.degrade(out.image.data.slice(sl), b.lo);
        let mask = plan.degrade_mask(out.mask.data.slice(sl), b.lo);
        (b, image, mask)
    });
    Zip::from(&mut out.image.data)
        .and(&healthy)
        .par_for_each(|x, &h| *x = h);
    if let Some((b, image, mask)) = degraded_box {
        let sl = s![b.lo[0]..b.hi[0], b.lo[1]..b.hi[1], b.lo[2]..b.hi[2]];
        Zip::from(out.image.data.slice_mut(sl))
            .and(out.tumour.data.slice_mut(sl))
            .and(out.mask.data.slice_mut(sl))
            .and(&image)
            .and(&mask)
            .par_for_each(|o, t, m, &x, &k| {
                *o = x;
                *m = k;
                *t = if k != 0 { x } else { 0.0 };
            });
    }
    out.healthy = Some(healthy_in.with_data(healthy));
    Ok(out)
}
