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
//! The per-voxel steps take runs of up to [`RUN`] voxels along the innermost memory axis and
//! use [`math`]'s `exp` and `pow`, so their loops vectorise and give the same bits on any CPU.

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
use super::math;
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

    /// The part `lo..hi` of a run of `len` voxels from `first` along `along` that lies inside the
    /// covered band.
    fn covered_part(&self, first: [usize; 3], along: usize, len: usize) -> (usize, usize) {
        let Some(c) = self.p.coverage else {
            return (0, len);
        };
        let axis = self.p.slice_axis;
        let at = first[axis];
        if along == axis {
            let lo = c.first.saturating_sub(at).min(len);
            (lo, c.end.saturating_sub(at).clamp(lo, len))
        } else if (c.first..c.end).contains(&at) {
            (0, len)
        } else {
            (0, 0)
        }
    }

    /// The intensity steps (contrast, gamma, bias) on a run `v` of voxels from `first` along
    /// the grid axis `along`.
    fn intensity(&self, first: [usize; 3], along: usize, v: &mut [f32]) {
        let keep_zero = self.p.keep_zero_background;
        let mut before = [0.0f32; RUN];
        let before = &mut before[..v.len()];
        if keep_zero {
            before.copy_from_slice(v);
        }
        if let Some((f, pivot)) = self.contrast {
            for x in v.iter_mut() {
                *x = pivot + f * (*x - pivot);
            }
        }
        if let Some((gamma, m)) = self.gamma {
            for x in v.iter_mut() {
                *x = math::pow((*x / m).abs(), gamma).copysign(*x) * m;
            }
        }
        if let Some((o, partial, c2)) = &self.bias {
            let [_, n1, n2] = self.shape;
            let mut exponent = [0.0f32; RUN];
            let exponent = &mut exponent[..v.len()];
            if along == 2 {
                // One row of partial sums for the whole run, the cosines contiguous.
                let [i, j, k] = first;
                let row = &partial[(i * n1 + j) * o..][..*o];
                for (n, &a) in row.iter().enumerate() {
                    for (e, &c) in exponent.iter_mut().zip(&c2[n * n2 + k..]) {
                        *e += a * c;
                    }
                }
            } else {
                let mut g = first;
                for e in exponent.iter_mut() {
                    let row = &partial[(g[0] * n1 + g[1]) * o..][..*o];
                    for (n, &a) in row.iter().enumerate() {
                        *e += a * c2[n * n2 + g[2]];
                    }
                    g[along] += 1;
                }
            }
            for (x, &e) in v.iter_mut().zip(exponent.iter()) {
                *x *= math::exp(e);
            }
        }
        if keep_zero {
            for (x, &b) in v.iter_mut().zip(before.iter()) {
                *x = if b == 0.0 { b } else { *x };
            }
        }
    }

    /// Coverage and noise on a run `v` of voxels from `first` along the grid axis `along`.
    fn noise_and_coverage(&self, first: [usize; 3], along: usize, v: &mut [f32]) {
        let (lo, hi) = self.covered_part(first, along, v.len());
        let background = self.p.background as f32;
        v[..lo].fill(background);
        v[hi..].fill(background);
        let Some((sigma, kind, [real, imaginary])) = self.noise else {
            return;
        };
        let [_, n1, n2] = self.shape;
        let step = [n1 * n2, n2, 1][along];
        let start = (first[0] * n1 + first[1]) * n2 + first[2] + lo * step;
        let index = |t: usize| (start + t * step) as u64;
        let keep_zero = self.p.keep_zero_background;
        let v = &mut v[lo..hi];
        match kind {
            NoiseKind::Gaussian => {
                for (t, x) in v.iter_mut().enumerate() {
                    let a = *x + sigma * real.normal(index(t));
                    *x = if keep_zero && *x == 0.0 { *x } else { a };
                }
            }
            NoiseKind::Rician => {
                for (t, x) in v.iter_mut().enumerate() {
                    let a = *x + sigma * real.normal(index(t));
                    let b = sigma * imaginary.normal(index(t));
                    let r = (a * a + b * b).sqrt();
                    *x = if keep_zero && *x == 0.0 { *x } else { r };
                }
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
            None => map_runs(src, origin, |g, along, v| {
                if intensity {
                    self.intensity(g, along, v);
                }
                if late {
                    self.noise_and_coverage(g, along, v);
                }
            }),
            Some((t, phase)) => {
                let mut x = map_runs(src, origin, |g, along, v| {
                    if intensity {
                        self.intensity(g, along, v);
                    }
                });
                thicken(&mut x, p.slice_axis, t, phase);
                if late {
                    for_each_run(&mut x, origin, |g, along, v| {
                        self.noise_and_coverage(g, along, v)
                    });
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
        for_each_run(&mut m, origin, |g, along, v| {
            let (lo, hi) = self.covered_part(g, along, v.len());
            v[..lo].fill(0.0);
            v[hi..].fill(0.0);
        });
        Zip::from(&m).par_map_collect(|&v| u8::from(v >= 0.5))
    }
}

/// The longest run of voxels the per-voxel steps see at once: long enough for their loops to
/// vectorise, short enough for buffers on the stack.
const RUN: usize = 64;

/// Whether a box is walked in Fortran order (an F-order array or a box of one).
fn fortran_order<S: ndarray::RawData>(a: &ndarray::ArrayBase<S, ndarray::Ix3>) -> bool {
    let strides = a.strides();
    !a.is_standard_layout() && strides[0].unsigned_abs() < strides[2].unsigned_abs()
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

/// `f(grid index of the first voxel, grid axis, voxels)` for every run of up to [`RUN`] voxels
/// along the innermost memory axis of `x` (C or Fortran order), a box at `origin`, in place;
/// planes of the outermost memory axis in parallel.
fn for_each_run(
    x: &mut Array3<f32>,
    origin: [usize; 3],
    f: impl Fn([usize; 3], usize, &mut [f32]) + Sync,
) {
    let fortran = fortran_order(x);
    let (mut view, along) = if fortran {
        (x.view_mut().reversed_axes(), 0)
    } else {
        (x.view_mut(), 2)
    };
    view.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(a, mut plane)| {
            let mut buf = [0.0f32; RUN];
            for (b, mut row) in plane.outer_iter_mut().enumerate() {
                for (r, mut run) in row.axis_chunks_iter_mut(Axis(0), RUN).enumerate() {
                    let g = grid_index(fortran, origin, [a, b, r * RUN]);
                    if let Some(v) = run.as_slice_mut() {
                        f(g, along, v);
                    } else {
                        let v = &mut buf[..run.len()];
                        v.iter_mut().zip(&run).for_each(|(d, &s)| *d = s);
                        f(g, along, v);
                        run.iter_mut().zip(v.iter()).for_each(|(d, &s)| *d = s);
                    }
                }
            }
        });
}

/// `f` as in [`for_each_run`] on the voxels of `src`, a box at `origin`, into a new array in
/// `src`'s memory order (C, or Fortran for a Fortran array or a box of one).
fn map_runs(
    src: ArrayView3<'_, f32>,
    origin: [usize; 3],
    f: impl Fn([usize; 3], usize, &mut [f32]) + Sync,
) -> Array3<f32> {
    let fortran = fortran_order(&src);
    let mut out = if fortran {
        Array3::uninit(src.raw_dim().f())
    } else {
        Array3::uninit(src.raw_dim())
    };
    let (mut dst, src, along) = if fortran {
        (out.view_mut().reversed_axes(), src.reversed_axes(), 0)
    } else {
        (out.view_mut(), src, 2)
    };
    dst.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(src.axis_iter(Axis(0)).into_par_iter())
        .enumerate()
        .for_each(|(a, (mut to, from))| {
            let mut buf = [0.0f32; RUN];
            for (b, (mut to, from)) in to.outer_iter_mut().zip(from.outer_iter()).enumerate() {
                let runs = to
                    .axis_chunks_iter_mut(Axis(0), RUN)
                    .zip(from.axis_chunks_iter(Axis(0), RUN));
                for (r, (mut to, from)) in runs.enumerate() {
                    let v = &mut buf[..from.len()];
                    match from.as_slice() {
                        Some(s) => v.copy_from_slice(s),
                        None => v.iter_mut().zip(&from).for_each(|(d, &s)| *d = s),
                    }
                    f(grid_index(fortran, origin, [a, b, r * RUN]), along, v);
                    to.iter_mut().zip(v.iter()).for_each(|(d, &s)| {
                        d.write(s);
                    });
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
