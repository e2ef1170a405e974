//! Pretraining on real sample scans (Colin27 with its brain mask, MRHead) through on-the-fly
//! synthesis: a tiny network on a 32^3 grid learns, resumes where it stopped, and bad inputs
//! fail before training. The scans come from `python -m layerseg.samples fetch` (`make samples`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use layerseg_core::io::{read_image, ReadOptions};
use layerseg_core::{NoProgress, Profile};
use layerseg_torch::train::{
    pretrain, RunOptions, SampleSource, ScanInput, SynthesisSource, TrainConfig, METRICS_FILE,
};
use layerseg_torch::BasicUNetConfig;
use ndarray::Array3;
use tch::Device;

fn sample_dir(name: &str) -> PathBuf {
    let dir = layerseg_core::samples::sample_cache().join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: run `make samples`",
        dir.display()
    );
    dir
}

/// brain-mri squashed onto a 32^3 grid (or `grid`), trained on `patch`-sized samples.
fn tiny_profile(grid: usize, patch: usize) -> Profile {
    let mut profile = Profile::builtin("brain-mri").unwrap();
    profile.resample.target_size = Some([grid; 3]);
    profile.inference.patch_size = [patch; 3];
    profile
}

fn tiny_net() -> BasicUNetConfig {
    BasicUNetConfig {
        features: [4, 4, 8, 8, 16, 4],
        ..BasicUNetConfig::default()
    }
}

fn source(profile: &Profile) -> SynthesisSource {
    let colin = sample_dir("colin27");
    let mrhead = sample_dir("mrhead");
    let healthy = [colin.join("image.nii.gz"), mrhead.join("image.nii.gz")];
    SynthesisSource::from_files(profile, &healthy, &[], &[], 7).unwrap()
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run_dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"]["total"].as_f64()?)))
        .collect()
}

fn mean(values: &[(u64, f64)]) -> f64 {
    values.iter().map(|v| v.1).sum::<f64>() / values.len() as f64
}

#[test]
fn samples_are_deterministic_normalised_and_patched() {
    let profile = tiny_profile(48, 32);
    let colin = sample_dir("colin27");
    let healthy = [colin.join("image.nii.gz")];
    let masks = [colin.join("brain.nii.gz")];
    let source = SynthesisSource::from_files(&profile, &healthy, &masks, &[], 3).unwrap();
    assert_eq!(source.sample_shape(), [32; 3]);
    let mut tumour_voxels = 0.0;
    for index in 0..6 {
        let a = source.sample(index).unwrap();
        let b = source.sample(index).unwrap();
        assert_eq!(a.image, b.image, "sample {index} is not deterministic");
        assert_eq!(a.image.dim(), (32, 32, 32));
        assert!(a.mask.iter().all(|&m| m == 0.0 || m == 1.0));
        let outside = a.tumour.iter().zip(&a.mask).filter(|(_, &m)| m == 0.0);
        assert!(
            outside.into_iter().all(|(&t, _)| t == 0.0),
            "tumour layer outside the mask"
        );
        let nonzero: Vec<f32> = a.healthy.iter().copied().filter(|&v| v != 0.0).collect();
        assert!(nonzero.iter().all(|v| v.is_finite()));
        tumour_voxels += a.mask.sum();
    }
    assert!(tumour_voxels > 0.0, "no tumour in any patch");
    assert_ne!(
        source.sample(0).unwrap().image,
        source.sample(1).unwrap().image
    );
}

#[test]
fn bad_sources_fail_naming_the_problem() {
    let profile = tiny_profile(32, 32);
    let err = SynthesisSource::new(&profile, Vec::new(), Vec::new(), 0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("no healthy scans"), "{err}");

    let path = sample_dir("colin27").join("image.nii.gz");
    let (image, _) = read_image(&path, &ReadOptions::default()).unwrap();
    let organ = Some(image.with_data(Array3::<u8>::ones((4, 4, 4))));
    let scan = ScanInput {
        name: path.clone(),
        image,
        organ,
    };
    let err = SynthesisSource::new(&profile, vec![scan], Vec::new(), 0)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("image.nii.gz") && text.contains("another grid"),
        "{text}"
    );

    let missing = [PathBuf::from("/nonexistent/scan.nii.gz")];
    let err = SynthesisSource::from_files(&profile, &missing, &[], &[], 0)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("/nonexistent/scan.nii.gz"),
        "{err}"
    );
}

#[test]
fn tiny_network_learns_on_real_scans_and_resumes() {
    tch::set_num_threads(2);
    tch::manual_seed(0);
    let profile = tiny_profile(32, 32);
    let source = Arc::new(source(&profile));
    let dir = tempfile::tempdir().unwrap();
    let mut config = TrainConfig::from_profile(&profile);
    config.steps = 60;
    config.checkpoint_every = 30;
    config.validate_every = 30;
    config.validation_samples = 2;
    config.workers = 1;
    let run = RunOptions::new(dir.path(), Device::Cpu, &NoProgress);
    let report = pretrain(Arc::clone(&source), &tiny_net(), &config, &run).unwrap();
    assert_eq!(report.step, 60);
    let first = losses(dir.path());
    let (head, tail) = (mean(&first[..5]), mean(&first[first.len() - 5..]));
    eprintln!("loss: first 5 {head:.3}, last 5 {tail:.3}");
    assert!(
        tail < 0.85 * head,
        "loss did not drop clearly: first 5 {head:.3}, last 5 {tail:.3}"
    );

    config.steps = 65;
    let resume = RunOptions {
        resume: true,
        ..run.clone()
    };
    let report = pretrain(Arc::clone(&source), &tiny_net(), &config, &resume).unwrap();
    assert_eq!((report.started_at, report.step), (60, 65));
    let steps: Vec<u64> = losses(dir.path()).iter().map(|l| l.0).collect();
    assert_eq!(steps, (1..=65).collect::<Vec<_>>());

    let wider = BasicUNetConfig {
        features: [8, 8, 8, 8, 16, 8],
        ..BasicUNetConfig::default()
    };
    let err = pretrain(source, &wider, &config, &resume).unwrap_err();
    assert!(err.to_string().contains("another network width"), "{err}");
}
