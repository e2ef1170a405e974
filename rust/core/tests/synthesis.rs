//! Tumour synthesis on the real sample scans (`make samples`): determinism across thread counts,
//! replay from JSON, placement inside the organ, the sampled size range, the intensity rules,
//! per-seed statistics (insta) and the bad inputs that must give errors.

use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::synth::params::{IntensityParams, TextureParams};
use layerseg_core::synth::{self, Inputs, SynthParams, Synthesized, Synthesizer};
use layerseg_core::{Error, Image, LabelMap, Profile, Volume};
use ndarray::{s, Array3};
use serde_json::json;
use std::sync::OnceLock;

#[path = "../../test-support/samples.rs"]
mod support;
use support::sample;

struct Scans {
    colin: Image,
    colin_brain: LabelMap,
    tumour_t1c: Image,
    ct: Image,
    liver: LabelMap,
}

fn scans() -> &'static Scans {
    static SCANS: OnceLock<Scans> = OnceLock::new();
    SCANS.get_or_init(|| {
        let o = ReadOptions::default();
        Scans {
            colin: read_image(sample("colin27", "image.nii.gz"), &o).unwrap().0,
            colin_brain: read_labels(sample("colin27", "brain.nii.gz"), &o)
                .unwrap()
                .0,
            tumour_t1c: read_image(sample("mrbraintumor2", "image.nii.gz"), &o)
                .unwrap()
                .0,
            ct: read_image(sample("totalseg_ct", "image.nii.gz"), &o)
                .unwrap()
                .0,
            liver: read_labels(sample("totalseg_ct", "liver.nii.gz"), &o)
                .unwrap()
                .0,
        }
    })
}

fn brain_inputs(s: &Scans) -> Inputs<'_> {
    Inputs {
        healthy: &s.colin,
        organ_mask: Some(&s.colin_brain),
        textures: std::slice::from_ref(&s.tumour_t1c),
    }
}

fn liver_inputs(s: &Scans) -> Inputs<'_> {
    Inputs {
        healthy: &s.ct,
        organ_mask: Some(&s.liver),
        textures: &[],
    }
}

/// A built-in profile without its acquisition randomisation: the tumour recipe alone.
fn recipe(name: &str) -> Profile {
    let mut p = Profile::builtin(name).unwrap();
    p.synthesis.acquisition = None;
    p
}

/// A built-in profile with every acquisition step it has always applied.
fn always_acquired(name: &str) -> Profile {
    let mut v: serde_json::Value =
        serde_json::from_str(&Profile::builtin(name).unwrap().to_json()).unwrap();
    let steps = v["synthesis"]["acquisition"].as_object_mut().unwrap();
    for (_, step) in steps.iter_mut() {
        if let Some(p) = step.get_mut("probability") {
            *p = json!(1.0);
        }
    }
    Profile::from_json(&v.to_string(), &format!("{name}, every step")).unwrap()
}

fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

fn bytes(out: &Synthesized) -> Vec<u8> {
    let mut v = Vec::new();
    for img in [&out.image, &out.tumour].into_iter().chain(&out.healthy) {
        v.extend(img.data.iter().flat_map(|x| x.to_le_bytes()));
    }
    v.extend(out.mask.data.iter());
    v
}

#[test]
fn byte_identical_for_1_and_4_threads() {
    let s = scans();
    for (name, inputs) in [
        ("brain-mri", brain_inputs(s)),
        ("liver-ct", liver_inputs(s)),
    ] {
        for (profile, seed) in [
            (Profile::builtin(name).unwrap(), 3),
            (always_acquired(name), 11),
        ] {
            let one = with_threads(1, || synth::generate(&profile, inputs, seed).unwrap());
            let four = with_threads(4, || synth::generate(&profile, inputs, seed).unwrap());
            assert_eq!(one.0, four.0, "{name} seed {seed}: parameters");
            assert!(
                bytes(&one.1) == bytes(&four.1),
                "{name} seed {seed}: voxels differ"
            );
            assert!(
                one.1.mask.data.iter().any(|&m| m == 1),
                "{name} seed {seed}: no tumour"
            );
        }
    }
}

#[test]
fn replays_from_its_json() {
    let s = scans();
    for (profile, inputs) in [
        (Profile::builtin("brain-mri").unwrap(), brain_inputs(s)),
        (always_acquired("brain-mri"), brain_inputs(s)),
        (always_acquired("liver-ct"), liver_inputs(s)),
    ] {
        let (params, out) = synth::generate(&profile, inputs, 5).unwrap();
        let again = SynthParams::from_json(&params.to_json()).unwrap();
        assert!(
            params == again,
            "the JSON round trip changed the parameters"
        );
        let replay = synth::synthesize(&again, inputs).unwrap();
        assert!(bytes(&out) == bytes(&replay), "{}", profile.name);
    }
}

#[test]
fn acquisition_degrades_image_and_healthy_layer_alike() {
    let s = scans();
    for (name, inputs) in [
        ("brain-mri", brain_inputs(s)),
        ("liver-ct", liver_inputs(s)),
    ] {
        let profile = always_acquired(name);
        let (p, out) = synth::generate(&profile, inputs, 4).unwrap();
        // The tumour is the one the recipe alone draws: the acquisition has its own stream.
        let (plain, _) = synth::generate(&recipe(name), inputs, 4).unwrap();
        let a = p
            .acquisition
            .clone()
            .expect("the profile randomises the acquisition");
        assert_eq!(
            SynthParams {
                acquisition: None,
                ..p.clone()
            },
            plain
        );
        let healthy = out.healthy.as_ref().expect("a degraded healthy layer");
        assert!(healthy.same_grid(inputs.healthy) && healthy.data != inputs.healthy.data);
        let cov = a.coverage.expect("coverage drawn");
        let mut differ = 0;
        for ((idx, &m), &t) in out.mask.data.indexed_iter().zip(out.tumour.data.iter()) {
            let (x, h) = (out.image.data[idx], healthy.data[idx]);
            let slice = [idx.0, idx.1, idx.2][a.slice_axis];
            if !(cov.first..cov.end).contains(&slice) {
                assert_eq!((x, h, m), (a.background as f32, a.background as f32, 0));
            }
            if m == 1 {
                assert_eq!(t, x);
            } else {
                assert_eq!(t, 0.0);
            }
            differ += usize::from(x != h);
        }
        // The image departs from the healthy layer only around the tumour, as before.
        let voxels = out.mask.data.iter().filter(|&&m| m == 1).count();
        assert!(voxels > 0, "{name}: the tumour is inside the covered band");
        assert!(
            differ > 0 && differ < 20 * voxels,
            "{name}: {differ} vs {voxels}"
        );
    }
}

#[test]
fn outputs_are_consistent_layers() {
    let s = scans();
    let profile = recipe("brain-mri");
    let (_, out) = synth::generate(&profile, brain_inputs(s), 8).unwrap();
    assert!(out.image.same_grid(&s.colin) && out.mask.same_grid(&s.colin));
    let mut outside_changed = 0;
    for ((idx, &m), &t) in out.mask.data.indexed_iter().zip(out.tumour.data.iter()) {
        let (x, n) = (out.image.data[idx], s.colin.data[idx]);
        if m == 1 {
            assert_eq!(t, x);
        } else {
            assert_eq!(t, 0.0);
            outside_changed += usize::from(x != n);
        }
    }
    assert_eq!(
        outside_changed, 0,
        "a hard-edged blend changes only voxels in the mask"
    );
}

#[test]
fn mask_stays_inside_the_organ() {
    let s = scans();
    for (name, inputs, organ) in [
        ("brain-mri", brain_inputs(s), &s.colin_brain),
        ("liver-ct", liver_inputs(s), &s.liver),
    ] {
        let profile = recipe(name);
        let mut total = 0;
        for seed in 0..6 {
            let (_, out) = synth::generate(&profile, inputs, seed).unwrap();
            let outside = out
                .mask
                .data
                .iter()
                .zip(organ.data.iter())
                .filter(|(&m, &o)| m == 1 && o == 0)
                .count();
            assert_eq!(outside, 0, "{name} seed {seed}");
            total += out.mask.data.iter().filter(|&&m| m == 1).count();
        }
        assert!(total > 0, "{name}: no tumour in 6 seeds");
    }
}

#[test]
fn sampled_sizes_span_the_configured_range() {
    let s = scans();
    let profile = Profile::builtin("brain-mri").unwrap();
    let brain = Synthesizer::new(brain_inputs(s)).unwrap();
    let mut by_class: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for seed in 0..600 {
        let p = brain.sample(&profile, seed).unwrap();
        let n = p.tumours.len();
        assert!(n == 1 || (p.size_class != "paper" && n <= 3), "{n}");
        by_class.entry(p.size_class.clone()).or_default().extend(
            p.tumours
                .iter()
                .map(|t| 4.0 / 3.0 * std::f64::consts::PI * t.base_radius_mm.powi(3)),
        );
    }
    for (class, lo, hi) in [
        ("paper", 7000.0, 200_000.0),
        ("small", 2000.0, 7000.0),
        ("tiny", 300.0, 2000.0),
    ] {
        let volumes = &by_class[class];
        let min = volumes.iter().copied().fold(f64::INFINITY, f64::min);
        let max = volumes.iter().copied().fold(0.0, f64::max);
        assert!(min >= lo - 1e-6 && max <= hi + 1e-6, "{class}: {min} {max}");
        assert!(
            min < lo + 0.03 * (hi - lo) && max > hi - 0.03 * (hi - lo),
            "{class}: {min} {max}"
        );
        // Uniform in volume: each quarter of the range holds about a quarter of the draws.
        for q in 0..4 {
            let (a, b) = (
                lo + q as f64 * (hi - lo) / 4.0,
                lo + (q + 1) as f64 * (hi - lo) / 4.0,
            );
            let n = volumes.iter().filter(|v| (a..b).contains(*v)).count() as f64;
            let expected = volumes.len() as f64 / 4.0;
            assert!(
                (n - expected).abs() < 0.4 * expected,
                "{class} quarter {q}: {n}"
            );
        }
    }

    let liver = Profile::builtin("liver-ct").unwrap();
    let mut classes = std::collections::BTreeSet::new();
    let livers = Synthesizer::new(liver_inputs(s)).unwrap();
    for seed in 0..60 {
        let p = livers.sample(&liver, seed).unwrap();
        for t in &p.tumours {
            let r = t.base_radius_mm;
            assert!([4.0, 8.0, 16.0, 32.0].contains(&r));
            assert!(t
                .radii_mm
                .iter()
                .all(|&x| x >= 0.75 * r - 1e-9 && x <= 1.25 * r + 1e-9));
        }
        let n = p.tumours.len();
        match p.size_class.as_str() {
            "tiny" | "small" => assert!((3..=10).contains(&n)),
            "medium" => assert!((2..=5).contains(&n)),
            "large" => assert!((1..=3).contains(&n)),
            "mix" => assert!((11..=28).contains(&n)),
            other => panic!("unknown class {other}"),
        }
        classes.insert(p.size_class);
    }
    assert_eq!(classes.len(), 5, "{classes:?}");
}

/// Mean of `f` over the voxels where it is `Some`.
fn mean(values: impl Iterator<Item = Option<f64>>) -> f64 {
    let (s, n) = values
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    s / n as f64
}

/// brain-mri with its intensity modes replaced.
fn with_ratio_modes(modes: serde_json::Value) -> Profile {
    let mut v: serde_json::Value = serde_json::from_str(&recipe("brain-mri").to_json()).unwrap();
    v["synthesis"]["intensity"]["modes"] = modes;
    Profile::from_json(&v.to_string(), "brain-mri, modes replaced").unwrap()
}

#[test]
fn mri_tumour_mean_is_the_drawn_ratio_of_the_healthy_mean() {
    let s = scans();
    // The paper's uniform mode alone: a core would move the mean away from the drawn ratio.
    let profile = with_ratio_modes(json!([{ "weight": 1.0, "ratio": { "min": 1.0, "max": 3.0 } }]));
    let brain_mean = mean(
        s.colin
            .data
            .iter()
            .zip(s.colin_brain.data.iter())
            .map(|(&v, &m)| (m != 0).then_some(v as f64)),
    );
    for seed in [1, 2, 4] {
        let (p, out) = synth::generate(&profile, brain_inputs(s), seed).unwrap();
        let IntensityParams::RatioToHealthyMean { ratio, .. } = p.intensity else {
            panic!("brain-mri uses the ratio rule")
        };
        assert!((1.0..=3.0).contains(&ratio) && (0.2..=0.8).contains(&p.opacity));
        // Undo the blend X = N + alpha (S - N) inside the mask to recover the texture S.
        let a = p.opacity;
        let texture_mean = mean(out.mask.data.indexed_iter().map(|(idx, &m)| {
            let (x, n) = (out.image.data[idx] as f64, s.colin.data[idx] as f64);
            let texture = (x - (1.0 - a) * n) / a;
            (m == 1 && texture.abs() > 1e-3).then_some(texture)
        }));
        let got = texture_mean / brain_mean;
        assert!(
            (got - ratio).abs() < 2e-3 * ratio,
            "seed {seed}: {got} vs {ratio}"
        );
    }
}

#[test]
fn ct_tumours_are_hypodense_by_the_drawn_drop() {
    let s = scans();
    let profile = recipe("liver-ct");
    for seed in [0, 7, 9] {
        let (p, out) = synth::generate(&profile, liver_inputs(s), seed).unwrap();
        let IntensityParams::HuDrop { drop_hu } = p.intensity else {
            panic!("liver-ct uses the HU drop")
        };
        assert!((60.0..=145.0).contains(&drop_hu));
        let mut in_mask = Vec::new();
        for (idx, &x) in out.image.data.indexed_iter() {
            let d = s.ct.data[idx] as f64 - x as f64;
            assert!(d >= -1e-3 && d <= drop_hu + 1e-3, "drop {d} at {idx:?}");
            if s.liver.data[idx] == 0 {
                assert_eq!(d, 0.0, "changed outside the liver at {idx:?}");
            }
            if out.mask.data[idx] == 1 {
                in_mask.push(d);
            }
        }
        let mean_drop = in_mask.iter().sum::<f64>() / in_mask.len() as f64;
        assert!(
            mean_drop > 0.15 * drop_hu && mean_drop < drop_hu,
            "seed {seed}: {mean_drop}"
        );
    }
}

#[test]
fn t1c_rim_and_core_mode() {
    let s = scans();
    let profile = with_ratio_modes(json!([{ "weight": 1.0, "ratio": { "min": 2.0, "max": 2.0 },
                 "core": { "fraction": { "min": 0.6, "max": 0.6 }, "ratio": { "min": 0.5, "max": 0.5 } } }]));
    let (p, out) = synth::generate(&profile, brain_inputs(s), 2).unwrap();
    let IntensityParams::RatioToHealthyMean {
        core: Some(core), ..
    } = p.intensity
    else {
        panic!("the core mode was drawn")
    };
    assert_eq!(core.ratio, 0.5);
    let centre = p.tumours[0].centre_mm;
    let inv = layerseg_core::affine::inverse(&s.colin.affine).unwrap();
    let c = layerseg_core::affine::apply(&inv, centre).map(|v| v.round() as usize);
    let near = out.image.data.slice(s![
        c[0] - 1..c[0] + 2,
        c[1] - 1..c[1] + 2,
        c[2] - 1..c[2] + 2
    ]);
    let centre_mean = near.mean().unwrap() as f64;
    let tumour_max = out.tumour.data.iter().copied().fold(0.0f32, f32::max) as f64;
    assert!(
        centre_mean < 0.7 * tumour_max,
        "dark core {centre_mean} vs bright rim {tumour_max}"
    );
}

fn stats(p: &SynthParams, out: &Synthesized) -> serde_json::Value {
    let sig = |v: f64| {
        if v == 0.0 {
            0.0
        } else {
            let d = 4 - v.abs().log10().floor() as i32;
            let f = 10f64.powi(d);
            (v * f).round() / f
        }
    };
    let voxels = out.mask.data.iter().filter(|&&m| m == 1).count();
    let tumour_mean = mean(
        out.tumour
            .data
            .iter()
            .zip(out.mask.data.iter())
            .map(|(&t, &m)| (m == 1).then_some(t as f64)),
    );
    let texture = match &p.texture {
        TextureParams::Scan {
            source,
            blur_sigma_mm,
            ..
        } => {
            json!({"source": source, "blur_sigma_mm": blur_sigma_mm.map(sig)})
        }
        TextureParams::Noise {
            sigma_a_mm,
            sigma_b_mm,
            ..
        } => {
            json!({"sigma_a_mm": sig(*sigma_a_mm), "sigma_b_mm": sig(*sigma_b_mm)})
        }
    };
    json!({
        "seed": p.seed,
        "size_class": p.size_class,
        "tumours": p.tumours.len(),
        "first_centre_mm": p.tumours.first().map(|t| t.centre_mm.map(sig)),
        "first_radii_mm": p.tumours.first().map(|t| t.radii_mm.map(sig)),
        "opacity": sig(p.opacity),
        "texture": texture,
        "mask_voxels": voxels,
        "tumour_mean": if voxels > 0 { sig(tumour_mean) } else { 0.0 },
        "image_mean": sig(out.image.data.iter().map(|&v| v as f64).sum::<f64>() / out.image.data.len() as f64),
        "healthy_mean": out.healthy.as_ref().map(|h| sig(h.data.iter().map(|&v| v as f64).sum::<f64>() / h.data.len() as f64)),
        "acquisition": p.acquisition.as_ref().map(|a| json!({
            "slice_axis": a.slice_axis,
            "thickness_mm": a.slice_thickness.map(|t| sig(t.thickness_mm)),
            "contrast": a.contrast.map(|c| sig(c.factor)),
            "gamma": a.gamma.map(|g| sig(g.gamma)),
            "bias_field": a.bias_field.is_some(),
            "noise_sigma": a.noise.map(|n| sig(n.sigma)),
            "coverage": a.coverage.map(|c| [c.first, c.end]),
        })),
    })
}

#[test]
fn per_seed_statistics() {
    let s = scans();
    for (name, inputs) in [
        ("brain-mri", brain_inputs(s)),
        ("liver-ct", liver_inputs(s)),
    ] {
        let profile = Profile::builtin(name).unwrap();
        let all: Vec<_> = (0..3)
            .map(|seed| {
                let (p, out) = synth::generate(&profile, inputs, seed).unwrap();
                stats(&p, &out)
            })
            .collect();
        insta::assert_json_snapshot!(format!("stats_{name}"), all);
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let s = scans();
    let brain = Profile::builtin("brain-mri").unwrap();
    let liver = Profile::builtin("liver-ct").unwrap();
    let expect = |r: Result<(SynthParams, Synthesized), Error>, needle: &str| {
        let e = r.expect_err("an error");
        assert!(e.to_string().contains(needle), "{e}");
    };

    // A mask on another grid.
    let other = Volume::new(Array3::<u8>::ones((10, 10, 10)), s.colin.affine);
    let mut inputs = brain_inputs(s);
    inputs.organ_mask = Some(&other);
    expect(
        synth::generate(&brain, inputs, 0),
        "organ mask: it is on another grid than the healthy scan: shape 181x217x181 vs 10x10x10",
    );

    // An empty organ mask.
    let empty = s
        .liver
        .with_data(Array3::<u8>::zeros(s.liver.data.raw_dim()));
    let mut inputs = liver_inputs(s);
    inputs.organ_mask = Some(&empty);
    expect(synth::generate(&liver, inputs, 0), "organ mask: is empty");

    // No organ mask for a profile that places tumours inside one.
    let mut inputs = liver_inputs(s);
    inputs.organ_mask = None;
    expect(
        synth::generate(&liver, inputs, 0),
        "pass one (CLI --organ-mask, Python organ_mask=)",
    );

    // An all-zero texture scan.
    let zeros = [s
        .tumour_t1c
        .with_data(Array3::<f32>::zeros(s.tumour_t1c.data.raw_dim()))];
    let mut inputs = brain_inputs(s);
    inputs.textures = &zeros;
    expect(
        synth::generate(&brain, inputs, 0),
        "texture scan 1: all voxels are zero",
    );

    // Non-finite voxels.
    let mut nan = s.ct.clone();
    nan.data[[5, 5, 5]] = f32::NAN;
    let mut inputs = liver_inputs(s);
    inputs.healthy = &nan;
    expect(synth::generate(&liver, inputs, 0), "NaN");

    // Parameters drawn for another grid.
    let (p, _) = synth::generate(&brain, brain_inputs(s), 0).unwrap();
    let err = synth::synthesize(&p, liver_inputs(s)).unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");

    // A profile whose ranges are inverted.
    let text = brain.to_json().replace(
        r#""opacity": {
      "min": 0.2,
      "max": 0.8
    }"#,
        r#""opacity": { "min": 0.8, "max": 0.2 }"#,
    );
    let err = Profile::from_json(&text, "mine.json").unwrap_err();
    assert_eq!(
        err.to_string(),
        "profile mine.json: synthesis.opacity: min 0.8 > max 0.2"
    );
}
