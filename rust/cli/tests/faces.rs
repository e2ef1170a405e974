//! The application layer both faces call (`layerseg_app`): the command line parses into the
//! same request the Python bindings build (rust/python-libtorch/src/training.rs), and the
//! request's checks run before any scan is read. tests/test_faces.py drives both faces end to
//! end with the same requests.

use std::path::{Path, PathBuf};

use clap::Parser;
use layerseg_app::finetune::FinetuneRequest;
use layerseg_app::pretrain::PretrainRequest;
use layerseg_cli::{Cli, Command};
use layerseg_core::Profile;
use layerseg_torch::checkpoint::{save_checkpoint, ModelCard};
use layerseg_torch::{BasicUNetConfig, Device, DeviceChoice, Model};

const TINY: [i64; 6] = [4, 4, 8, 8, 16, 4];

fn parse(argv: &[&str]) -> Command {
    Cli::try_parse_from(argv).unwrap().command
}

/// `layerseg.pretrain(healthy, out, device="cpu", steps=3, seed=2, features=TINY)`, as the
/// bindings build it (their defaults: profile brain-mri, checkpoint_every 500, workers 0).
fn python_pretrain(healthy: &Path, out: &Path) -> PretrainRequest {
    PretrainRequest {
        profile: "brain-mri".to_string(),
        healthy: vec![healthy.to_path_buf()],
        organ_masks: Vec::new(),
        textures: Vec::new(),
        out: out.to_path_buf(),
        steps: Some(3),
        batch: None,
        lr: None,
        device: DeviceChoice::Cpu,
        resume: false,
        init_from: None,
        deadline: None,
        validate_on: Vec::new(),
        checkpoint_every: 500,
        workers: 0,
        seed: 2,
        features: Some(TINY),
    }
}

#[test]
fn the_command_line_makes_the_request_python_makes() {
    let Command::Pretrain(args) = parse(&[
        "layerseg",
        "pretrain",
        "--healthy",
        "scan.nii.gz",
        "--out",
        "run",
        "--device",
        "cpu",
        "--steps",
        "3",
        "--seed",
        "2",
        "--features",
        "4,4,8,8,16,4",
    ]) else {
        panic!("not pretrain");
    };
    let cli = args.request().unwrap();
    let python = python_pretrain(Path::new("scan.nii.gz"), Path::new("run"));
    assert_eq!(cli, python);
    let profile = Profile::load("brain-mri").unwrap();
    let config = cli.config(&profile).unwrap();
    assert_eq!(config, python.config(&profile).unwrap());
    assert_eq!((config.steps, config.validate_every), (3, 500));

    let Command::Finetune(args) = parse(&[
        "layerseg",
        "finetune",
        "--datalist",
        "cases.json",
        "--out",
        "run",
        "--steps",
        "4",
        "--no-augmentation",
    ]) else {
        panic!("not finetune");
    };
    let cli = FinetuneRequest::from(args);
    // layerseg.finetune("cases.json", "run", steps=4, augmentation=False)
    let python = FinetuneRequest {
        datalist: PathBuf::from("cases.json"),
        out: PathBuf::from("run"),
        profile: None,
        model: None,
        folds: None,
        fold: None,
        label_values: Vec::new(),
        steps: Some(4),
        batch: None,
        lr: None,
        validate_every: None,
        patience: None,
        checkpoint_every: None,
        augmentation: false,
        config: None,
        device: DeviceChoice::Auto,
        resume: false,
        seed: None,
        workers: 0,
    };
    assert_eq!(cli, python);
    let settings = cli.settings(&profile).unwrap();
    assert_eq!(settings.train.steps, 4);
    assert_eq!(
        settings.augmentation,
        layerseg_core::augment::Augmentation::none()
    );
}

/// A run folder holding a step-1 checkpoint of a `features`-wide network.
fn run_folder_with_checkpoint(features: [i64; 6]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let net = BasicUNetConfig {
        features,
        ..BasicUNetConfig::default()
    };
    let model = Model::new(&net, Device::Cpu).unwrap();
    let mut card = ModelCard::new(&net, Device::Cpu);
    card.step = 1;
    save_checkpoint(dir.path(), &card, &model.vs, None, 1).unwrap();
    dir
}

#[test]
fn the_run_folder_is_checked_before_any_scan_is_read() {
    let run = run_folder_with_checkpoint(TINY);
    // A folder without scans: refused as "no healthy scans found" when the scans are listed.
    let empty = tempfile::tempdir().unwrap();
    let request = python_pretrain(empty.path(), run.path());

    let err = format!("{:#}", request.clone().prepare().unwrap_err());
    assert!(err.contains("already has checkpoints"), "{err}");

    // Resuming a run of another network is refused the same way, before the scans.
    let other = PretrainRequest {
        resume: true,
        features: Some([8, 8, 16, 32, 64, 8]),
        ..request.clone()
    };
    let err = format!("{:#}", other.prepare().unwrap_err());
    assert!(err.contains("not the requested"), "{err}");

    // Resuming the same network passes the run folder; the scans are next.
    let resumed = PretrainRequest {
        resume: true,
        ..request
    };
    let err = format!("{:#}", resumed.prepare().unwrap_err());
    assert!(err.contains("no healthy scans found"), "{err}");
}

#[test]
fn a_missing_model_is_a_missing_file_for_both_faces() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("missing.safetensors");
    let request = FinetuneRequest {
        model: Some(model.clone()),
        ..FinetuneRequest::from(
            match parse(&["layerseg", "finetune", "--datalist", "d.json", "--out", "r"]) {
                Command::Finetune(args) => args,
                _ => panic!("not finetune"),
            },
        )
    };
    let err = request.run(&layerseg_core::NoProgress).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!("{}: file not found", model.display())
    );
    // Typed, so Python raises FileNotFoundError (rust/python-libtorch/src/errors.rs).
    assert!(matches!(
        err.root_cause().downcast_ref::<layerseg_torch::Error>(),
        Some(layerseg_torch::Error::NotFound { .. })
    ));
}
