//! The acquisition steps on real arithmetic: what each does to the voxels, and the same bytes
//! for any thread count and memory layout.

use super::*;
use crate::synth::context::Inputs;
use crate::volume::{Image, Volume};
use ndarray::{Array3, ShapeBuilder};

/// Uniform noise in [1, 2) (no zero voxels), C order, spacing 1 mm except 2 mm on axis 2.
fn noisy(shape: (usize, usize, usize)) -> Image {
    let (_, n1, n2) = shape;
    let data = Array3::from_shape_fn(shape, |(i, j, k)| {
        1.0 + noise::Stream::new(5, 0).uniform(((i * n1 + j) * n2 + k) as u64)
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
    Plan::new(&ctx, p)
        .unwrap()
        .degrade(image.data.view(), [0; 3])
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
        let slab =
            (0.5 * x[[3, j, k]] + x[[4, j, k]] + x[[5, j, k]] + x[[6, j, k]] + 0.5 * x[[7, j, k]])
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
        let d = &a.slice_axis(Axis(axis), (1..).into()) - &a.slice_axis(Axis(axis), (..-1).into());
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
    let m = Plan::new(&ctx, &p)
        .unwrap()
        .degrade_mask(mask.view(), [0; 3]);
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
        let d =
            &log.slice_axis(Axis(axis), (1..).into()) - &log.slice_axis(Axis(axis), (..-1).into());
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
    // Rician on a zero signal (background not kept): the Rayleigh mean, sigma sqrt(pi / 2) =
    // 1.2533 sigma for normal parts; with Irwin-Hall parts (`noise::Stream::normal`, lighter
    // tails) it is 1.2657 sigma, by simulation of four million voxels.
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
    assert!((mean - 2.0 * 1.2657).abs() < 0.03, "{mean}");
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
fn rows_longer_than_a_run_give_the_voxels_of_short_rows() {
    // C order walks runs along axis 2 (150 voxels: three runs of up to RUN), Fortran order
    // along axis 0 (5 voxels); the voxels must agree for every slice axis and every step.
    let image = noisy((5, 4, 150));
    let mut fortran = Array3::<f32>::zeros(image.data.raw_dim().f());
    fortran.assign(&image.data);
    let fortran = image.with_data(fortran);
    let ctx = Context::new(Inputs::new(&image)).unwrap();
    for axis in 0..3 {
        let n = ctx.shape[axis];
        let mut p = nothing(axis);
        p.contrast = Some(ContrastParams {
            factor: 1.2,
            pivot: 1.4,
        });
        p.gamma = Some(GammaParams {
            gamma: 1.3,
            reference: 1.5,
        });
        p.bias_field = Some(BiasFieldParams {
            order: 2,
            coefficients: (0..26).map(|i| 0.01 * (i as f64 - 13.0)).collect(),
        });
        p.noise = Some(NoiseParams {
            kind: NoiseKind::Rician,
            sigma: 0.1,
            seed: 8,
        });
        p.coverage = Some(CoverageParams {
            first: n / 3,
            end: n - n / 3,
        });
        let c = run(&image, &p);
        assert_eq!(run(&fortran, &p), c, "slice axis {axis}");
        // Outside the band: the background; inside: a degraded voxel.
        for ((i, j, k), &v) in c.indexed_iter() {
            let inside = (n / 3..n - n / 3).contains(&[i, j, k][axis]);
            assert_eq!(v == 0.0, !inside, "{axis} {i} {j} {k}");
        }
    }
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
