//! `pretrain(...)`: the pretraining loop on synthetic samples, and `bench_train_step(...)`, the
//! timing of its inner step. The GIL is released while they run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::Array3;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use layerseg_app::adapt::AdaptRequest;
use layerseg_app::finetune::FinetuneRequest;
use layerseg_app::pretrain::PretrainRequest;
use layerseg_torch::train::{time_train_step, Outcome, Sample, TrainConfig};
use layerseg_torch::BasicUNetConfig;

use layerseg_python_common::errors::LayerSegError;
use layerseg_python_common::progress::PyProgress;

use layerseg_python_common::gate::without_gil;

use crate::device_choice;

/// A path, or a sequence of paths (files, folders, .txt lists); None is empty.
fn paths(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<PathBuf>> {
    match obj {
        None => Ok(Vec::new()),
        Some(o) => match o.extract::<PathBuf>() {
            Ok(p) => Ok(vec![p]),
            Err(_) => o.extract::<Vec<PathBuf>>(),
        },
    }
}

/// Pretrain on tumours synthesised into ``healthy`` scans; see ``layerseg pretrain --help``.
#[pyfunction]
#[pyo3(signature = (healthy, out, profile="brain-mri", organ_masks=None, textures=None, steps=None, batch=None, device="auto", resume=false, progress=None, validate_on=None, checkpoint_every=500, workers=0, seed=0, features=None, lr=None, init_from=None, max_time=None))]
#[allow(clippy::too_many_arguments)]
fn pretrain<'py>(
    py: Python<'py>,
    healthy: &Bound<'py, PyAny>,
    out: PathBuf,
    profile: &str,
    organ_masks: Option<&Bound<'py, PyAny>>,
    textures: Option<&Bound<'py, PyAny>>,
    steps: Option<u64>,
    batch: Option<usize>,
    device: &str,
    resume: bool,
    progress: Option<Py<PyAny>>,
    validate_on: Option<&Bound<'py, PyAny>>,
    checkpoint_every: u64,
    workers: usize,
    seed: u64,
    features: Option<[i64; 6]>,
    lr: Option<f64>,
    init_from: Option<PathBuf>,
    max_time: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let deadline = match max_time {
        Some(s) if s.is_finite() && s > 0.0 => Some(Instant::now() + Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(LayerSegError::new_err(format!(
                "max_time must be a positive number of seconds, got {s}"
            )))
        }
        None => None,
    };
    let request = PretrainRequest {
        profile: profile.to_string(),
        healthy: paths(Some(healthy))?,
        organ_masks: paths(organ_masks)?,
        textures: paths(textures)?,
        out: out.clone(),
        steps,
        batch,
        lr,
        device: device_choice(device)?,
        resume,
        init_from,
        deadline,
        validate_on: paths(validate_on)?,
        checkpoint_every,
        workers,
        seed,
        features,
    };
    let reporter = PyProgress::new(progress);
    let result = without_gil(py, || request.prepare()?.run(&reporter))
        .map_err(|e| reporter.take_error().unwrap_or(e))?;
    if let Some(e) = reporter.take_error() {
        return Err(e);
    }
    let curves = out.join("curves.png");
    let dict = PyDict::new(py);
    let outcome = match result.outcome {
        Outcome::Finished => "finished",
        Outcome::EarlyStopped => "early_stopped",
        Outcome::Cancelled => "cancelled",
        Outcome::TimeLimit => "time_limit",
    };
    dict.set_item("outcome", outcome)?;
    dict.set_item("step", result.step)?;
    dict.set_item("started_at", result.started_at)?;
    dict.set_item("loss", result.losses.map(|l| l.total))?;
    dict.set_item("validation", result.validation)?;
    dict.set_item("validation_real", result.validation_real)?;
    dict.set_item("checkpoint", result.checkpoint)?;
    dict.set_item("model", result.model)?;
    dict.set_item("curves", curves)?;
    dict.set_item("steps_per_s", result.throughput.steps_per_s())?;
    dict.set_item("waiting_share", result.throughput.waiting_share())?;
    Ok(dict)
}

/// Seconds per training step of the pretraining loop (forward, losses, backward, Adam) on one
/// fixed random batch of ``batch`` volumes of ``size``^3, after ``warmup`` untimed steps.
#[pyfunction]
#[pyo3(signature = (size, batch=2, features=None, steps=5, warmup=2, device="cpu", seed=0))]
#[allow(clippy::too_many_arguments)]
fn bench_train_step(
    py: Python<'_>,
    size: usize,
    batch: usize,
    features: Option<[i64; 6]>,
    steps: u64,
    warmup: u64,
    device: &str,
    seed: u64,
) -> PyResult<f64> {
    let device = crate::device(device)?;
    without_gil(py, move || {
        let net = BasicUNetConfig {
            features: features.unwrap_or(BasicUNetConfig::default().features),
            ..BasicUNetConfig::default()
        };
        let samples: Vec<Sample> = (0..batch as u64).map(|i| blob(size, seed + i)).collect();
        let config = TrainConfig {
            batch_size: batch,
            ..TrainConfig::default()
        };
        time_train_step(&net, &config, device, &samples, warmup, steps)
    })
}

/// A smooth background with a bright ball: a fixed, cheap stand-in for a synthetic sample.
fn blob(size: usize, seed: u64) -> Sample {
    let c = size as f32 * (0.4 + 0.05 * (seed % 4) as f32);
    let r = size as f32 / 6.0;
    let healthy = Array3::from_shape_fn((size, size, size), |(z, y, x)| {
        ((z + 2 * y + 3 * x) as f32 / 17.0).sin()
    });
    let mask = Array3::from_shape_fn((size, size, size), |(z, y, x)| {
        let d = [z, y, x].map(|v| v as f32 - c);
        f32::from(u8::from(d.iter().map(|v| v * v).sum::<f32>() < r * r))
    });
    let tumour = &mask * 2.0;
    let image = &healthy * &mask.mapv(|m| 1.0 - m) + &tumour;
    Sample {
        image,
        healthy,
        tumour,
        mask,
    }
}

/// A JSON-serialisable report as Python objects (the same as the JSON file it is written to).
fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| LayerSegError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Fine-tune a model on labelled cases; see ``layerseg finetune --help``.
#[pyfunction]
#[pyo3(signature = (datalist, out, profile=None, model=None, folds=None, fold=None, label_values=None, steps=None, batch=None, lr=None, validate_every=None, patience=None, checkpoint_every=None, augmentation=true, config=None, device="auto", resume=false, seed=None, workers=0, progress=None))]
#[allow(clippy::too_many_arguments)]
fn finetune<'py>(
    py: Python<'py>,
    datalist: PathBuf,
    out: PathBuf,
    profile: Option<String>,
    model: Option<PathBuf>,
    folds: Option<usize>,
    fold: Option<usize>,
    label_values: Option<Vec<u8>>,
    steps: Option<u64>,
    batch: Option<usize>,
    lr: Option<f64>,
    validate_every: Option<u64>,
    patience: Option<u32>,
    checkpoint_every: Option<u64>,
    augmentation: bool,
    config: Option<PathBuf>,
    device: &str,
    resume: bool,
    seed: Option<u64>,
    workers: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let request = FinetuneRequest {
        datalist,
        out,
        profile,
        model,
        folds,
        fold,
        label_values: label_values.unwrap_or_default(),
        steps,
        batch,
        lr,
        validate_every,
        patience,
        checkpoint_every,
        augmentation,
        config,
        device: device_choice(device)?,
        resume,
        seed,
        workers,
    };
    let reporter = PyProgress::new(progress);
    let report = without_gil(py, || request.run(&reporter))
        .map_err(|e| reporter.take_error().unwrap_or(e))?;
    if let Some(e) = reporter.take_error() {
        return Err(e);
    }
    to_python(py, &report)
}

/// Self-train a model on unlabelled scans; see ``layerseg adapt --help``.
#[pyfunction]
#[pyo3(signature = (images, out, profile=None, model=None, organ_masks=None, rounds=None, steps=None, batch=None, device="auto", seed=0, workers=0, progress=None))]
#[allow(clippy::too_many_arguments)]
fn adapt<'py>(
    py: Python<'py>,
    images: &Bound<'py, PyAny>,
    out: PathBuf,
    profile: Option<String>,
    model: Option<PathBuf>,
    organ_masks: Option<&Bound<'py, PyAny>>,
    rounds: Option<usize>,
    steps: Option<u64>,
    batch: Option<usize>,
    device: &str,
    seed: u64,
    workers: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let request = AdaptRequest {
        images: paths(Some(images))?,
        organ_masks: paths(organ_masks)?,
        out,
        profile,
        model,
        rounds,
        steps,
        batch,
        device: device_choice(device)?,
        seed,
        workers,
    };
    let reporter = PyProgress::new(progress);
    let report = without_gil(py, || request.run(&reporter))
        .map_err(|e| reporter.take_error().unwrap_or(e))?;
    if let Some(e) = reporter.take_error() {
        return Err(e);
    }
    to_python(py, &report)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(finetune, m)?)?;
    m.add_function(wrap_pyfunction!(adapt, m)?)?;
    m.add_function(wrap_pyfunction!(pretrain, m)?)?;
    m.add_function(wrap_pyfunction!(bench_train_step, m)?)?;
    Ok(())
}
