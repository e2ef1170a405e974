//! Label-free intensity-bias correction: N4 (Tustison et al., IEEE TMI 2010, after Sled's N3).
//!
//! Repeated until the field stops changing: the histogram of log intensities inside the mask is
//! sharpened by Wiener deconvolution of a Gaussian, every voxel is moved to its expected
//! sharpened value, and what that moved is fitted with a smooth tensor-product cubic B-spline
//! and added to the log field. The B-spline gets twice as many spans per axis at each level.
//!
//! No crate implements N4 and ITK's is C++ (SimpleITK is the benchmark's peer), so it is written
//! here, after the paper and ITK's defaults. One difference: each level's B-spline is a linear
//! least-squares fit (its normal matrix factored once per level), where ITK uses a
//! scattered-data approximation.

use nalgebra::{DMatrix, DVector};
use ndarray::{Array3, ArrayView3, Axis, Zip};
use rayon::prelude::*;
use rustfft::{num_complex::Complex, FftPlanner};

use crate::profile::BiasCorrection;

/// Fewer usable voxels than this and no field is estimated.
const MIN_VOXELS: usize = 1000;

/// The multiplicative bias field of `image` (same shape), estimated inside `mask` from its
/// positive voxels; its log has mean 0 there. Outside the mask the field is the B-spline's,
/// clamped to the range it has inside. `None` when the mask holds too few positive voxels.
pub fn estimate_field(
    image: ArrayView3<'_, f32>,
    mask: ArrayView3<'_, bool>,
    settings: &BiasCorrection,
) -> Option<Array3<f32>> {
    let full: [usize; 3] = image.dim().into();
    let (log_image, work_mask) = shrink_log(image, mask, settings.shrink);
    let work: [usize; 3] = log_image.dim().into();
    if work_mask.iter().filter(|&&m| m).count() < MIN_VOXELS {
        return None;
    }
    let work_axes =
        |spans| [0, 1, 2].map(|d| AxisBasis::new(spans, work[d], settings.shrink as f64, full[d]));
    let mut log_bias = Array3::<f64>::zeros(work);
    let mut levels = Vec::with_capacity(settings.levels);
    for level in 0..settings.levels {
        let spans = 1usize << level;
        let axes = work_axes(spans);
        let fit = LeastSquares::new(&axes, &work_mask);
        let mut coefficients = Array3::<f64>::zeros(fit.controls);
        for _ in 0..settings.iterations {
            let corrected = masked_values(&log_image, &log_bias, &work_mask);
            let sharpened = sharpen(&corrected, settings);
            let mut residual = Array3::<f64>::zeros(work);
            residual
                .iter_mut()
                .zip(work_mask.iter())
                .filter(|(_, &m)| m)
                .zip(corrected.iter().zip(&sharpened))
                .for_each(|((r, _), (&u, &s))| *r = u - s);
            let step = fit.solve(&residual);
            let delta = evaluate(&step, &axes);
            coefficients += &step;
            log_bias += &delta;
            if change(&delta, &work_mask) < settings.convergence {
                break;
            }
        }
        levels.push((spans, coefficients));
    }
    let mut log_field = Array3::<f64>::zeros(full);
    for (spans, coefficients) in &levels {
        let axes = [0, 1, 2].map(|d| AxisBasis::new(*spans, full[d], 1.0, full[d]));
        log_field += &evaluate(coefficients, &axes);
    }
    let inside: Vec<f64> = log_field
        .iter()
        .zip(mask.iter().zip(image.iter()))
        .filter(|(_, (&m, &v))| m && v > 0.0)
        .map(|(&f, _)| f)
        .collect();
    let mean = inside.iter().sum::<f64>() / inside.len().max(1) as f64;
    let (lo, hi) = inside
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &f| (a.min(f), b.max(f)));
    let mut field = Array3::<f32>::zeros(full);
    Zip::from(&mut field)
        .and(&log_field)
        .par_for_each(|out, &f| *out = (f.clamp(lo, hi) - mean).exp() as f32);
    Some(field)
}

/// Divide `image` by its estimated bias field; the field, or `None` when none could be
/// estimated (the image is then unchanged).
pub fn correct(
    image: &mut Array3<f32>,
    mask: ArrayView3<'_, bool>,
    settings: &BiasCorrection,
) -> Option<Array3<f32>> {
    let field = estimate_field(image.view(), mask, settings)?;
    Zip::from(image).and(&field).par_for_each(|v, &f| *v /= f);
    Some(field)
}

/// Block means of the positive voxels in the mask over `factor`^3 blocks, as logs; a block is
/// in the work mask when at least half of its voxels are such voxels.
fn shrink_log(
    image: ArrayView3<'_, f32>,
    mask: ArrayView3<'_, bool>,
    factor: usize,
) -> (Array3<f64>, Array3<bool>) {
    let (a, b, c) = image.dim();
    let work = (a.div_ceil(factor), b.div_ceil(factor), c.div_ceil(factor));
    let mut log_image = Array3::<f64>::zeros(work);
    let mut work_mask = Array3::<bool>::from_elem(work, false);
    Zip::indexed(&mut log_image)
        .and(&mut work_mask)
        .par_for_each(|(i, j, k), out, inside| {
            let (mut sum, mut used, mut all) = (0.0f64, 0usize, 0usize);
            for x in i * factor..((i + 1) * factor).min(a) {
                for y in j * factor..((j + 1) * factor).min(b) {
                    for z in k * factor..((k + 1) * factor).min(c) {
                        all += 1;
                        let v = image[[x, y, z]];
                        if mask[[x, y, z]] && v > 0.0 {
                            sum += v as f64;
                            used += 1;
                        }
                    }
                }
            }
            if used > 0 && 2 * used >= all {
                *out = (sum / used as f64).ln();
                *inside = true;
            }
        });
    (log_image, work_mask)
}

fn masked_values(log_image: &Array3<f64>, log_bias: &Array3<f64>, mask: &Array3<bool>) -> Vec<f64> {
    log_image
        .iter()
        .zip(log_bias)
        .zip(mask)
        .filter(|(_, &m)| m)
        .map(|((&v, &f), _)| v - f)
        .collect()
}

/// Coefficient of variation of `exp(delta)` inside the mask: N4's convergence measure.
fn change(delta: &Array3<f64>, mask: &Array3<bool>) -> f64 {
    let ratios: Vec<f64> = delta
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m)
        .map(|(&d, _)| d.exp())
        .collect();
    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let var = ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// Every value moved to its expected value under the sharpened histogram (N3/N4's step).
fn sharpen(values: &[f64], s: &BiasCorrection) -> Vec<f64> {
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let n = s.histogram_bins;
    if hi - lo < 1e-9 {
        return values.to_vec();
    }
    let slope = (hi - lo) / (n - 1) as f64;
    let bin = |v: f64| {
        let c = (v - lo) / slope;
        let i = (c.floor() as usize).min(n - 2);
        (i, c - i as f64)
    };
    let padded = 2 * n.next_power_of_two();
    let offset = (padded - n) / 2;
    let mut histogram = vec![Complex::new(0.0, 0.0); padded];
    for &v in values {
        let (i, t) = bin(v);
        histogram[offset + i].re += 1.0 - t;
        histogram[offset + i + 1].re += t;
    }
    let mut planner = FftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(padded);
    let inverse = planner.plan_fft_inverse(padded);
    // The Gaussian of the bias's spread, normalised to unit sum, centred on bin 0 (circularly).
    let fwhm_bins = s.fwhm / slope;
    let exponent = 4.0 * std::f64::consts::LN_2 / (fwhm_bins * fwhm_bins);
    let peak = 2.0 * (std::f64::consts::LN_2 / std::f64::consts::PI).sqrt() / fwhm_bins;
    let mut gaussian = vec![Complex::new(0.0, 0.0); padded];
    for i in 0..=padded / 2 {
        let g = peak * (-exponent * (i * i) as f64).exp();
        gaussian[i].re = g;
        gaussian[(padded - i) % padded].re = g;
    }
    forward.process(&mut gaussian);
    forward.process(&mut histogram);
    let mut sharp: Vec<Complex<f64>> = histogram
        .iter()
        .zip(&gaussian)
        .map(|(&h, &g)| h * g.conj() / (g.norm_sqr() + s.wiener_noise))
        .collect();
    inverse.process(&mut sharp);
    let sharp: Vec<f64> = sharp
        .iter()
        .map(|c| (c.re / padded as f64).max(0.0))
        .collect();
    let blurred = |weights: Vec<f64>| {
        let mut w: Vec<Complex<f64>> = weights.into_iter().map(|v| Complex::new(v, 0.0)).collect();
        forward.process(&mut w);
        w.iter_mut().zip(&gaussian).for_each(|(w, &g)| *w *= g);
        inverse.process(&mut w);
        w.into_iter().map(|c| c.re).collect::<Vec<f64>>()
    };
    let centre = |i: usize| lo + (i as f64 - offset as f64) * slope;
    let numerator = blurred(
        sharp
            .iter()
            .enumerate()
            .map(|(i, &u)| centre(i) * u)
            .collect(),
    );
    let denominator = blurred(sharp);
    let expected: Vec<f64> = (0..n)
        .map(|i| {
            let (num, den) = (numerator[offset + i], denominator[offset + i]);
            if den.abs() > 1e-12 {
                num / den
            } else {
                0.0
            }
        })
        .collect();
    values
        .iter()
        .map(|&v| {
            let (i, t) = bin(v);
            (1.0 - t) * expected[i] + t * expected[i + 1]
        })
        .collect()
}

/// One axis of a uniform cubic B-spline with `spans` spans over the grid's extent: for each
/// voxel, its first control point and the four weights.
struct AxisBasis {
    controls: usize,
    start: Vec<usize>,
    weights: Vec<[f64; 4]>,
}

impl AxisBasis {
    /// `len` voxels, each `scale` voxels of a `full`-voxel axis (a shrunk grid has scale > 1),
    /// placed at their centres on [0, 1].
    fn new(spans: usize, len: usize, scale: f64, full: usize) -> AxisBasis {
        let (mut start, mut weights) = (Vec::with_capacity(len), Vec::with_capacity(len));
        for i in 0..len {
            let t = (((i as f64 + 0.5) * scale) / full as f64).clamp(0.0, 1.0) * spans as f64;
            let j = (t.floor() as usize).min(spans - 1);
            let u = t - j as f64;
            let v = 1.0 - u;
            start.push(j);
            weights.push([
                v * v * v / 6.0,
                (3.0 * u * u * u - 6.0 * u * u + 4.0) / 6.0,
                (-3.0 * u * u * u + 3.0 * u * u + 3.0 * u + 1.0) / 6.0,
                u * u * u / 6.0,
            ]);
        }
        AxisBasis {
            controls: spans + 3,
            start,
            weights,
        }
    }
}

/// The least-squares fit of one level's B-spline to values inside a mask, its normal matrix
/// factored once.
struct LeastSquares<'a> {
    axes: &'a [AxisBasis; 3],
    controls: [usize; 3],
    factor: nalgebra::Cholesky<f64, nalgebra::Dyn>,
}

impl<'a> LeastSquares<'a> {
    fn new(axes: &'a [AxisBasis; 3], mask: &Array3<bool>) -> LeastSquares<'a> {
        let controls = axes.each_ref().map(|a| a.controls);
        let n = controls.iter().product::<usize>();
        // Planes are summed in fixed chunks, and the chunks in order, so the result does not
        // depend on the number of threads.
        let planes = mask.len_of(Axis(0));
        let chunk = planes.div_ceil(8).max(1);
        let partial: Vec<Vec<f64>> = (0..planes.div_ceil(chunk))
            .into_par_iter()
            .map(|c| {
                let mut acc = vec![0.0f64; n * n];
                for i in c * chunk..((c + 1) * chunk).min(planes) {
                    add_plane(&mut acc, axes, controls, i, mask.index_axis(Axis(0), i));
                }
                acc
            })
            .collect();
        let mut normal = vec![0.0f64; n * n];
        for p in partial {
            normal.iter_mut().zip(p).for_each(|(x, y)| *x += y);
        }
        let mut normal = DMatrix::from_vec(n, n, normal);
        // A light ridge keeps control points with no voxel under them at zero.
        let ridge = 1e-7 * normal.diagonal().mean() + 1e-12;
        for d in 0..n {
            normal[(d, d)] += ridge;
        }
        let factor = normal
            .cholesky()
            .expect("a ridge-regularised normal matrix is positive definite");
        LeastSquares {
            axes,
            controls,
            factor,
        }
    }

    /// The coefficients fitting `values` (zero outside the mask).
    fn solve(&self, values: &Array3<f64>) -> Array3<f64> {
        let mut rhs = values.clone();
        for (d, axis) in self.axes.iter().enumerate() {
            rhs = to_controls(&rhs, d, axis);
        }
        let solution = self
            .factor
            .solve(&DVector::from_iterator(rhs.len(), rhs.iter().copied()));
        Array3::from_shape_vec(self.controls, solution.as_slice().to_vec())
            .expect("one coefficient per control point")
    }
}

/// Adds the outer products of the basis weights of plane `i`'s voxels in the mask.
fn add_plane(
    acc: &mut [f64],
    axes: &[AxisBasis; 3],
    controls: [usize; 3],
    i: usize,
    plane: ndarray::ArrayView2<'_, bool>,
) {
    let n = controls.iter().product::<usize>();
    let mut index = [0usize; 64];
    let mut weight = [0.0f64; 64];
    for ((j, k), &inside) in plane.indexed_iter() {
        if !inside {
            continue;
        }
        let mut t = 0;
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    index[t] = ((axes[0].start[i] + a) * controls[1] + axes[1].start[j] + b)
                        * controls[2]
                        + axes[2].start[k]
                        + c;
                    weight[t] =
                        axes[0].weights[i][a] * axes[1].weights[j][b] * axes[2].weights[k][c];
                    t += 1;
                }
            }
        }
        for p in 0..64 {
            let row = index[p] * n;
            for q in 0..64 {
                acc[row + index[q]] += weight[p] * weight[q];
            }
        }
    }
}

/// The B-spline with `coefficients` on the grid of `axes`.
fn evaluate(coefficients: &Array3<f64>, axes: &[AxisBasis; 3]) -> Array3<f64> {
    let mut out = coefficients.clone();
    for (d, axis) in axes.iter().enumerate() {
        out = to_voxels(&out, d, axis);
    }
    out
}

fn to_voxels(c: &Array3<f64>, axis: usize, basis: &AxisBasis) -> Array3<f64> {
    let mut shape = c.raw_dim();
    shape[axis] = basis.start.len();
    let mut out = Array3::zeros(shape);
    Zip::from(out.lanes_mut(Axis(axis)))
        .and(c.lanes(Axis(axis)))
        .par_for_each(|mut o, c| {
            for (v, (&s, w)) in basis.start.iter().zip(&basis.weights).enumerate() {
                o[v] = (0..4).map(|t| w[t] * c[s + t]).sum();
            }
        });
    out
}

fn to_controls(r: &Array3<f64>, axis: usize, basis: &AxisBasis) -> Array3<f64> {
    let mut shape = r.raw_dim();
    shape[axis] = basis.controls;
    let mut out = Array3::zeros(shape);
    Zip::from(out.lanes_mut(Axis(axis)))
        .and(r.lanes(Axis(axis)))
        .par_for_each(|mut o, r| {
            for (v, (&s, w)) in basis.start.iter().zip(&basis.weights).enumerate() {
                for t in 0..4 {
                    o[s + t] += w[t] * r[v];
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BiasCorrection {
        BiasCorrection::default()
    }

    /// A head-like ball: "white matter" (1.0) inside a "grey matter" shell (0.6) with two
    /// "ventricles" (0.3), and a 1 % texture.
    fn phantom(n: usize) -> (Array3<f32>, Array3<bool>) {
        let c = (n as f64 - 1.0) / 2.0;
        let radius = |i: usize, j: usize, k: usize, centre: [f64; 3], axes: [f64; 3]| {
            [i, j, k]
                .iter()
                .zip(centre.iter().zip(axes))
                .map(|(&x, (&m, a))| ((x as f64 - c) / c - m) / a)
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt()
        };
        let mask = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            radius(i, j, k, [0.0; 3], [0.9; 3]) < 1.0
        });
        let image = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            let tissue = if radius(i, j, k, [0.0; 3], [0.9; 3]) > 0.75 {
                0.6
            } else if radius(i, j, k, [-0.2, 0.0, 0.0], [0.12, 0.3, 0.2]) < 1.0
                || radius(i, j, k, [0.2, 0.0, 0.0], [0.12, 0.3, 0.2]) < 1.0
            {
                0.3
            } else {
                1.0
            };
            let texture = 1.0 + 0.01 * (((i * 31 + j * 17 + k * 7) % 11) as f64 - 5.0) / 5.0;
            (tissue * texture) as f32
        });
        (image, mask)
    }

    fn cv_inside(v: &Array3<f32>, mask: &Array3<bool>) -> f64 {
        let x: Vec<f64> = v
            .iter()
            .zip(mask)
            .filter(|(_, &m)| m)
            .map(|(&a, _)| a as f64)
            .collect();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        (x.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / x.len() as f64).sqrt() / mean
    }

    #[test]
    fn a_smooth_field_is_recovered_and_removed() {
        let n = 64;
        let (clean, mask) = phantom(n);
        let truth = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            let (x, y, z) = (
                i as f64 / n as f64,
                j as f64 / n as f64,
                k as f64 / n as f64,
            );
            (0.4 * (x - 0.5) - 0.3 * (y - 0.3) * (y - 0.3) + 0.2 * x * z).exp() as f32
        });
        let mut biased = &clean * &truth;
        let field = correct(&mut biased, mask.view(), &settings()).unwrap();
        // The estimate matches the truth up to a constant: their ratio is nearly flat.
        let before = cv_inside(&truth, &mask);
        let after = cv_inside(&(&truth / &field), &mask);
        assert!(before > 0.08, "{before}");
        assert!(after < 0.25 * before, "residual bias {after} of {before}");
        // The tissue contrast survives: the corrected image is close to a scaled clean one.
        let ratio = &biased / &clean;
        assert!(cv_inside(&ratio, &mask) < 0.25 * before);
    }

    #[test]
    fn a_flat_image_keeps_a_flat_field() {
        let (clean, mask) = phantom(64);
        let field = estimate_field(clean.view(), mask.view(), &settings()).unwrap();
        assert!(
            cv_inside(&field, &mask) < 0.01,
            "{}",
            cv_inside(&field, &mask)
        );
    }

    #[test]
    fn the_field_does_not_depend_on_the_number_of_threads() {
        let (clean, mask) = phantom(48);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| estimate_field(clean.view(), mask.view(), &settings()).unwrap())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn too_few_voxels_give_no_field() {
        let image = Array3::<f32>::ones((8, 8, 8));
        let mask = Array3::from_elem((8, 8, 8), true);
        assert!(estimate_field(image.view(), mask.view(), &settings()).is_none());
    }

    #[test]
    fn the_least_squares_b_spline_reproduces_a_cubic() {
        let axes = [0, 1, 2].map(|_| AxisBasis::new(2, 20, 1.0, 20));
        let mask = Array3::from_elem((20, 20, 20), true);
        let fit = LeastSquares::new(&axes, &mask);
        let cubic = Array3::from_shape_fn((20, 20, 20), |(i, j, k)| {
            let (x, y, z) = (
                (i as f64 + 0.5) / 20.0,
                (j as f64 + 0.5) / 20.0,
                k as f64 / 20.0,
            );
            x * x * x - 0.5 * y + z * y
        });
        let back = evaluate(&fit.solve(&cubic), &axes);
        let worst = (&back - &cubic).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(worst < 1e-3, "{worst}");
    }
}
