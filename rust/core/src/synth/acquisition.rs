//! Acquisition randomisation (issue 17): the blended case as a clinical scanner would have
//! acquired it. The profile section and the reasons for where and in what order each step
//! applies are documented in [`crate::profile::Acquisition`]; in short, every step acts on the
//! blended image *and* on the healthy layer alike (after blending), and the mask follows the
//! geometric steps (thickness, coverage).
//!
//! [`sample`] draws an [`AcquisitionParams`] from its own random stream (turning the section on
//! or off leaves the tumour's parameters as they were); [`apply`] is a pure function of it.
//! Every loop is over independent voxels or independent lanes, and the noise is a function of
//! the voxel's index ([`noise::normal`]), so any thread count gives the same bytes.

use ndarray::{s, Array3, ArrayViewMut1, ArrayViewMut2, Axis, Zip};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::blend::{copy_f32, Synthesized};
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

/// The number of bias-field coefficients for `order`: every `(l, m, n)` up to it but the
/// constant term.
fn bias_terms(order: u32) -> usize {
    (order as usize + 1).pow(3) - 1
}

/// `cos(pi l (i + 0.5) / n)` for l in 0..=order, i in 0..n, as `table[l * n + i]`.
fn cosines(order: u32, n: usize) -> Vec<f32> {
    (0..=order as usize)
        .flat_map(|l| {
            (0..n).map(move |i| {
                (std::f64::consts::PI * l as f64 * (i as f64 + 0.5) / n as f64).cos() as f32
            })
        })
        .collect()
}

/// The largest |f| of the bias field's exponent over a 17^3 lattice of voxel centres spread
/// over the grid (the field is smooth, so this is its maximum to within a few per cent).
fn bias_peak(order: u32, coefficients: &[f64], shape: [usize; 3]) -> f64 {
    let o = order as usize + 1;
    let at = |n: usize| -> Vec<f64> {
        let m = n.min(17);
        (0..m)
            .map(|q| {
                if m > 1 {
                    q as f64 * (n - 1) as f64 / (m - 1) as f64
                } else {
                    0.0
                }
            })
            .collect()
    };
    let basis =
        |l: usize, x: f64, n: usize| (std::f64::consts::PI * l as f64 * (x + 0.5) / n as f64).cos();
    let (p0, p1, p2) = (at(shape[0]), at(shape[1]), at(shape[2]));
    let mut peak: f64 = 0.0;
    for &x in &p0 {
        for &y in &p1 {
            for &z in &p2 {
                let mut f = 0.0;
                for l in 0..o {
                    for m in 0..o {
                        for n in 0..o {
                            let idx = (l * o + m) * o + n;
                            if idx == 0 {
                                continue;
                            }
                            f += coefficients[idx - 1]
                                * basis(l, x, shape[0])
                                * basis(m, y, shape[1])
                                * basis(n, z, shape[2]);
                        }
                    }
                }
                peak = peak.max(f.abs());
            }
        }
    }
    peak
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
                let o = b.order as usize + 1;
                let (c0, c1, c2) = (
                    cosines(b.order, shape[0]),
                    cosines(b.order, shape[1]),
                    cosines(b.order, shape[2]),
                );
                let mut partial = vec![0.0f32; shape[0] * shape[1] * o];
                partial
                    .par_chunks_mut(shape[1] * o)
                    .enumerate()
                    .for_each(|(i, row)| {
                        for j in 0..shape[1] {
                            for n in 0..o {
                                let mut acc = 0.0f64;
                                for l in 0..o {
                                    for m in 0..o {
                                        let idx = (l * o + m) * o + n;
                                        if idx > 0 {
                                            acc += b.coefficients[idx - 1]
                                                * c0[l * shape[0] + i] as f64
                                                * c1[m * shape[1] + j] as f64;
                                        }
                                    }
                                }
                                row[j * o + n] = acc as f32;
                            }
                        }
                    });
                Some((o, partial, c2))
            }
            None => None,
        };
        Ok(Plan {
            p,
            shape,
            thickness,
            bias,
        })
    }

    fn covered(&self, g: [usize; 3]) -> bool {
        self.p
            .coverage
            .is_none_or(|c| (c.first..c.end).contains(&g[self.p.slice_axis]))
    }

    /// The intensity steps and the geometry on a box of the grid whose first voxel is `origin`
    /// (spanning the whole slice axis when there is a thickness).
    fn degrade(&self, x: &mut Array3<f32>, origin: [usize; 3]) {
        let p = self.p;
        let keep_zero = p.keep_zero_background;
        if p.contrast.is_some() || p.gamma.is_some() || self.bias.is_some() {
            let contrast = p.contrast.map(|c| (c.factor as f32, c.pivot as f32));
            let gamma = p.gamma.map(|g| (g.gamma as f32, g.reference as f32));
            let n1 = self.shape[1];
            let n2 = self.shape[2];
            for_each_voxel(x, origin, |g, v| {
                if keep_zero && *v == 0.0 {
                    return;
                }
                if let Some((f, pivot)) = contrast {
                    *v = pivot + f * (*v - pivot);
                }
                if let Some((gamma, m)) = gamma {
                    *v = (*v / m).abs().powf(gamma).copysign(*v) * m;
                }
                if let Some((o, partial, c2)) = &self.bias {
                    let row = &partial[(g[0] * n1 + g[1]) * o..][..*o];
                    let f: f32 = row
                        .iter()
                        .enumerate()
                        .map(|(n, a)| a * c2[n * n2 + g[2]])
                        .sum();
                    *v *= f.exp();
                }
            });
        }
        if let Some((t, phase)) = self.thickness {
            thicken(x, p.slice_axis, t, phase);
        }
        if p.noise.is_some() || p.coverage.is_some() {
            let background = p.background as f32;
            let noise = p.noise.filter(|n| n.sigma > 0.0);
            let [_, n1, n2] = self.shape;
            for_each_voxel(x, origin, |g, v| {
                if !self.covered(g) {
                    *v = background;
                    return;
                }
                let Some(n) = &noise else { return };
                if keep_zero && *v == 0.0 {
                    return;
                }
                let index = ((g[0] * n1 + g[1]) * n2 + g[2]) as u64;
                let sigma = n.sigma as f32;
                let a = *v + sigma * noise::normal(n.seed, 0, index);
                *v = match n.kind {
                    NoiseKind::Gaussian => a,
                    NoiseKind::Rician => {
                        let b = sigma * noise::normal(n.seed, 1, index);
                        (a * a + b * b).sqrt()
                    }
                };
            });
        }
    }

    /// The geometric steps on a mask box: partial volume (kept where at least half the voxel
    /// is tumour) and coverage.
    fn degrade_mask(&self, mask: &Array3<u8>, origin: [usize; 3]) -> Array3<u8> {
        let mut m = mask.mapv(f32::from);
        if let Some((t, phase)) = self.thickness {
            thicken(&mut m, self.p.slice_axis, t, phase);
        }
        for_each_voxel(&mut m, origin, |g, v| {
            if !self.covered(g) {
                *v = 0.0;
            }
        });
        m.mapv(|v| u8::from(v >= 0.5))
    }
}

/// `f(global index, voxel)` for every voxel of a box at `origin`, in memory order (C or
/// Fortran), planes of the outermost memory axis in parallel.
fn for_each_voxel(
    x: &mut Array3<f32>,
    origin: [usize; 3],
    f: impl Fn([usize; 3], &mut f32) + Sync,
) {
    let [o0, o1, o2] = origin;
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
                    let g = if fortran {
                        [c + o0, b + o1, a + o2]
                    } else {
                        [a + o0, b + o1, c + o2]
                    };
                    f(g, v);
                }
            }
        });
}

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
fn thicken(x: &mut Array3<f32>, axis: usize, t: f64, phase: f64) {
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
    let mut healthy = copy_f32(&healthy_in.data);
    plan.degrade(&mut healthy, [0; 3]);
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
        let mut image = out.image.data.slice(sl).to_owned();
        plan.degrade(&mut image, b.lo);
        let mask = plan.degrade_mask(&out.mask.data.slice(sl).to_owned(), b.lo);
        (b, image, mask)
    });
    Zip::from(&mut out.image.data)
        .and(&healthy)
        .par_for_each(|x, &h| *x = h);
    if let Some((b, image, mask)) = degraded_box {
        let sl = s![b.lo[0]..b.hi[0], b.lo[1]..b.hi[1], b.lo[2]..b.hi[2]];
        out.image.data.slice_mut(sl).assign(&image);
        Zip::from(out.tumour.data.slice_mut(sl))
            .and(out.mask.data.slice_mut(sl))
            .and(&image)
            .and(&mask)
            .par_for_each(|t, m, &x, &k| {
                *m = k;
                *t = if k != 0 { x } else { 0.0 };
            });
    }
    out.healthy = Some(healthy_in.with_data(healthy));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::context::Inputs;
    use crate::volume::{Image, Volume};
    use ndarray::{Array3, ShapeBuilder};

    /// Uniform noise in [1, 2) (no zero voxels), C order, spacing 1 mm except 2 mm on axis 2.
    fn noisy(shape: (usize, usize, usize)) -> Image {
        let (_, n1, n2) = shape;
        let data = Array3::from_shape_fn(shape, |(i, j, k)| {
            1.0 + noise::uniform(5, 0, ((i * n1 + j) * n2 + k) as u64)
        });
        let mut affine = [[0.0; 4]; 4];
        for (a, sp) in [1.0, 1.0, 2.0].iter().enumerate() {
            affine[a][a] = *sp;
        }
        affine[3][3] = 1.0;
        Volume::new(data, affine)
    }

    fn nothing(axis: usize) -> AcquisitionParams {
        AcquisitionParams {
            slice_axis: axis,
            background: 0.0,
            keep_zero_background: true,
            contrast: None,
            gamma: None,
            bias_field: None,
            slice_thickness: None,
            noise: None,
            coverage: None,
        }
    }

    fn run(image: &Image, p: &AcquisitionParams) -> Array3<f32> {
        let ctx = Context::new(Inputs::new(image)).unwrap();
        let mut x = image.data.clone();
        Plan::new(&ctx, p).unwrap().degrade(&mut x, [0; 3]);
        x
    }

    #[test]
    fn thick_slices_average_their_slab_and_interpolate_between_centres() {
        let image = noisy((20, 9, 7));
        // 4 mm slabs on 1 mm voxels, starting half a slab early: centres at voxels 1, 5, 9, ...
        let mut p = nothing(0);
        p.slice_thickness = Some(ThicknessParams {
            thickness_mm: 4.0,
            phase: 0.125,
        });
        let out = run(&image, &p);
        let x = &image.data;
        for (j, k) in [(0, 0), (4, 3), (8, 6)] {
            // The slab of centre 5 spans [3, 7): half of voxel 3, voxels 4 to 6, half of 7.
            let slab = (0.5 * x[[3, j, k]]
                + x[[4, j, k]]
                + x[[5, j, k]]
                + x[[6, j, k]]
                + 0.5 * x[[7, j, k]])
                / 4.0;
            assert!((out[[5, j, k]] - slab).abs() < 1e-5);
            // Linear between centres 5 and 9: second differences vanish there.
            for i in 5..8 {
                let d2 = out[[i, j, k]] - 2.0 * out[[i + 1, j, k]] + out[[i + 2, j, k]];
                assert!(d2.abs() < 1e-5, "{i}: {d2}");
            }
        }
        // Smooth along the slice axis at the slab's scale, untouched across it.
        let rough = |a: &Array3<f32>, axis: usize| -> f32 {
            let d =
                &a.slice_axis(Axis(axis), (1..).into()) - &a.slice_axis(Axis(axis), (..-1).into());
            d.mapv(|v| v * v).mean().unwrap()
        };
        assert!(
            rough(&out, 0) < 0.1 * rough(x, 0),
            "{} {}",
            rough(&out, 0),
            rough(x, 0)
        );
        // Ramps along the axis come back unchanged between the centres of the slabs that lie
        // inside the grid (5 to 17; the first slab reaches beyond the grid's edge).
        let ramp = image.with_data(Array3::from_shape_fn((20, 3, 3), |(i, _, _)| {
            2.0 + i as f32
        }));
        let out = run(&ramp, &p);
        for i in 5..18 {
            assert!((out[[i, 1, 1]] - ramp.data[[i, 1, 1]]).abs() < 1e-4, "{i}");
        }
    }

    #[test]
    fn thickness_is_in_millimetres() {
        // Axis 2 has 2 mm voxels: 8 mm slabs are 4 voxels, like 4 mm slabs along axis 0.
        let image = noisy((12, 12, 12));
        let mut p = nothing(2);
        p.slice_thickness = Some(ThicknessParams {
            thickness_mm: 8.0,
            phase: 0.125,
        });
        let along_2 = run(&image, &p);
        let swapped = image.with_data(
            image
                .data
                .clone()
                .permuted_axes([2, 1, 0])
                .as_standard_layout()
                .into_owned(),
        );
        let mut q = nothing(0);
        q.slice_thickness = Some(ThicknessParams {
            thickness_mm: 4.0,
            phase: 0.125,
        });
        let mut iso = swapped.clone();
        iso.affine = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let along_0 = run(&iso, &q);
        assert_eq!(along_2.permuted_axes([2, 1, 0]), along_0);
    }

    #[test]
    fn coverage_keeps_a_band_and_fills_the_rest() {
        let image = noisy((6, 10, 5));
        let mut p = nothing(1);
        p.background = -7.0;
        p.coverage = Some(CoverageParams { first: 3, end: 8 });
        let out = run(&image, &p);
        for ((i, j, k), &v) in out.indexed_iter() {
            if (3..8).contains(&j) {
                assert_eq!(v, image.data[[i, j, k]]);
            } else {
                assert_eq!(v, -7.0);
            }
        }
        let ctx = Context::new(Inputs::new(&image)).unwrap();
        let mask = Array3::<u8>::ones((6, 10, 5));
        let m = Plan::new(&ctx, &p).unwrap().degrade_mask(&mask, [0; 3]);
        assert_eq!(
            m.sum_axis(Axis(0)).sum_axis(Axis(1)).to_vec(),
            [0, 0, 0, 30, 30, 30, 30, 30, 0, 0]
        );
    }

    #[test]
    fn bias_field_is_smooth_multiplicative_and_as_strong_as_drawn() {
        let flat = Volume::new(
            Array3::from_elem((48, 40, 32), 100.0f32),
            noisy((1, 1, 1)).affine,
        );
        let profile = crate::profile::Profile::builtin("brain-mri").unwrap();
        let mut a = profile.synthesis.acquisition.unwrap();
        a.slice_thickness = None;
        a.gamma = None;
        a.noise = None;
        a.coverage = None;
        let b = a.bias_field.as_mut().unwrap();
        b.probability = 1.0;
        b.strength = Range::fixed(0.3);
        let ctx = Context::new(Inputs::new(&flat)).unwrap();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
        let p = sample(&a, &ctx, &[], &mut rng);
        assert_eq!(p.bias_field.as_ref().unwrap().coefficients.len(), 63);
        let out = run(&flat, &p);
        let log = out.mapv(|v| (v / 100.0).ln());
        let peak = log.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((peak - 0.3).abs() < 0.03, "peak {peak}");
        // Smooth: over a tenth of the field of view it changes by less than its peak (white
        // noise of that peak would change by about twice the peak from one voxel to the next).
        for axis in 0..3 {
            let d = &log.slice_axis(Axis(axis), (1..).into())
                - &log.slice_axis(Axis(axis), (..-1).into());
            let step = d.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let n = flat.data.len_of(Axis(axis)) as f32;
            assert!(step * n < 10.0 * peak, "axis {axis}: {step} per voxel");
        }
        // Multiplicative: twice the scan, twice the result.
        let double = flat.with_data(flat.data.mapv(|v| 2.0 * v));
        let out2 = run(&double, &p);
        assert!(out2
            .iter()
            .zip(&out)
            .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-4 * a.abs()));
    }

    #[test]
    fn noise_has_the_drawn_sigma_and_spares_the_background() {
        let mut data = Array3::from_elem((40, 40, 40), 1000.0f32);
        data.slice_mut(s![..10, .., ..]).fill(0.0);
        let image = Volume::new(data, noisy((1, 1, 1)).affine);
        for kind in [NoiseKind::Gaussian, NoiseKind::Rician] {
            let mut p = nothing(0);
            p.noise = Some(NoiseParams {
                kind,
                sigma: 10.0,
                seed: 4,
            });
            let out = run(&image, &p);
            assert!(out.slice(s![..10, .., ..]).iter().all(|&v| v == 0.0));
            let d: Vec<f64> = out
                .slice(s![10.., .., ..])
                .iter()
                .map(|&v| v as f64 - 1000.0)
                .collect();
            let n = d.len() as f64;
            let mean = d.iter().sum::<f64>() / n;
            let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            // Rician at SNR 100: mean shift sigma^2 / 2x = 0.05.
            assert!(
                mean.abs() < 0.2 && (sd - 10.0).abs() < 0.2,
                "{kind:?}: {mean} {sd}"
            );
        }
        // Rician on a zero signal (background not kept): the Rayleigh mean sigma sqrt(pi / 2).
        // (One voxel is not zero: synthesis refuses scans without foreground.)
        let mut zeros = Array3::zeros((30, 30, 30));
        zeros[[0, 0, 0]] = 1.0;
        let zero = Volume::new(zeros, image.affine);
        let mut p = nothing(0);
        p.keep_zero_background = false;
        p.noise = Some(NoiseParams {
            kind: NoiseKind::Rician,
            sigma: 2.0,
            seed: 1,
        });
        let mean = run(&zero, &p).mean().unwrap();
        assert!(
            (mean - 2.0 * (std::f32::consts::PI / 2.0).sqrt()).abs() < 0.03,
            "{mean}"
        );
    }

    #[test]
    fn contrast_and_gamma_keep_zero_background() {
        let image = noisy((8, 8, 8));
        let mut with_zero = image.data.clone();
        with_zero[[0, 0, 0]] = 0.0;
        let image = image.with_data(with_zero);
        let mut p = nothing(0);
        p.contrast = Some(ContrastParams {
            factor: 1.5,
            pivot: 1.5,
        });
        p.gamma = Some(GammaParams {
            gamma: 2.0,
            reference: 1.5,
        });
        let out = run(&image, &p);
        assert_eq!(out[[0, 0, 0]], 0.0);
        let x = image.data[[1, 2, 3]];
        let c = 1.5 + 1.5 * (x - 1.5);
        assert!((out[[1, 2, 3]] - 1.5 * (c / 1.5).abs().powf(2.0).copysign(c)).abs() < 1e-5);
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_layout() {
        let image = noisy((30, 26, 22));
        let profile = crate::profile::Profile::builtin("brain-mri").unwrap();
        let mut a = profile.synthesis.acquisition.unwrap();
        for p in [
            a.slice_thickness.as_mut().map(|s| &mut s.probability),
            a.gamma.as_mut().map(|s| &mut s.probability),
            a.bias_field.as_mut().map(|s| &mut s.probability),
            a.noise.as_mut().map(|s| &mut s.probability),
            a.coverage.as_mut().map(|s| &mut s.probability),
        ]
        .into_iter()
        .flatten()
        {
            *p = 1.0;
        }
        let ctx = Context::new(Inputs::new(&image)).unwrap();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let p = sample(&a, &ctx, &[], &mut rng);
        assert!(p.slice_thickness.is_some() && p.noise.is_some() && p.coverage.is_some());
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| run(&image, &p));
        let four = pool(4).install(|| run(&image, &p));
        assert_eq!(one, four);
        // A Fortran-ordered copy of the scan gives the same voxels.
        let mut fortran = Array3::<f32>::zeros(image.data.raw_dim().f());
        fortran.assign(&image.data);
        assert_eq!(run(&image.with_data(fortran), &p), one);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let image = noisy((8, 8, 8));
        let ctx = Context::new(Inputs::new(&image)).unwrap();
        let mut p = nothing(1);
        p.coverage = Some(CoverageParams { first: 5, end: 9 });
        let err = Plan::new(&ctx, &p).err().unwrap().to_string();
        assert!(err.contains("coverage 5..9"), "{err}");
        let mut p = nothing(3);
        assert!(Plan::new(&ctx, &p).is_err());
        p.slice_axis = 0;
        p.bias_field = Some(BiasFieldParams {
            order: 2,
            coefficients: vec![0.1; 5],
        });
        let err = Plan::new(&ctx, &p).err().unwrap().to_string();
        assert!(err.contains("got order 2 and 5"), "{err}");
    }
}
