//! `layerseg synthesize` end to end on the real sample scans (`make samples`).

use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::synth::{self, Inputs, SynthParams};

mod common;
use common::{layerseg, sample};

fn sample_str(name: &str, file: &str) -> String {
    sample(name, file).to_string_lossy().into_owned()
}

#[test]
fn writes_cases_on_the_healthy_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let (ct, liver) = (
        sample_str("totalseg_ct", "image.nii.gz"),
        sample_str("totalseg_ct", "liver.nii.gz"),
    );
    let out = layerseg(&[
        "synthesize",
        "--profile",
        "liver-ct",
        "--healthy",
        &ct,
        "--organ-mask",
        &liver,
        "--out",
        out_dir.to_str().unwrap(),
        "--count",
        "2",
        "--seed",
        "5",
        "--preview",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote 2 case(s)"));
    let o = ReadOptions::default();
    let (healthy, _) = read_image(&ct, &o).unwrap();
    let (organ, _) = read_labels(&liver, &o).unwrap();
    for (i, seed) in [(0, 5), (1, 6)] {
        let case = out_dir.join(format!("case_{i:04}"));
        let params = std::fs::read_to_string(case.join("params.json")).unwrap();
        let params = SynthParams::from_json(&params).unwrap();
        assert_eq!(params.seed, seed);
        let (image, _) = read_image(case.join("image.nii.gz"), &o).unwrap();
        let (mask, _) = read_labels(case.join("mask.nii.gz"), &o).unwrap();
        let (layer, _) = read_image(case.join("healthy.nii.gz"), &o).unwrap();
        assert!(image.same_grid(&healthy) && mask.same_grid(&healthy));
        assert!(mask.data.iter().any(|&m| m == 1));
        // The files are the case its params.json describes, the healthy layer degraded with the
        // image when the profile's acquisition randomisation drew a step.
        let inputs = Inputs {
            healthy: &healthy,
            organ_mask: Some(&organ),
            textures: &[],
        };
        let replay = synth::synthesize(&params, inputs).unwrap();
        assert_eq!(layer.data, replay.healthy_or(&healthy).data);
        assert_eq!(image.data, replay.image.data);
        assert_eq!(mask.data, replay.mask.data);
        if params.acquisition.is_none() {
            assert_eq!(layer.data, healthy.data);
        }
        let png = std::fs::read(case.join("preview.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap().to_string();
    let colin = sample_str("colin27", "image.nii.gz");
    let liver = sample_str("totalseg_ct", "liver.nii.gz");
    let ct = sample_str("totalseg_ct", "image.nii.gz");
    for (args, needle) in [
        (
            vec!["--healthy", colin.as_str(), "--organ-mask", liver.as_str()],
            "liver.nii.gz: organ mask: it is on another grid than the healthy scan: shape \
             181x217x181 vs 122x101x112 voxels",
        ),
        (
            vec!["--profile", "liver-ct", "--healthy", ct.as_str()],
            "pass one (CLI --organ-mask, Python organ_mask=)",
        ),
        (
            vec!["--profile", "kidney-mri", "--healthy", ct.as_str()],
            "no built-in profile",
        ),
    ] {
        let mut full = vec!["synthesize", "--out", out_dir.as_str()];
        full.extend(args);
        let out = layerseg(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
}
