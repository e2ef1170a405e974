//! The pretraining loop on a fake in-memory sample source: learning, resume, cancel, bad input,
//! and our Adam against libtorch's.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use layerseg_core::{NoProgress, Progress};
use layerseg_torch::checkpoint::{latest_checkpoint, ModelCard};
use layerseg_torch::train::{
    pretrain, Adam, AdamConfig, Outcome, RunOptions, Sample, SampleSource, SourceError, TrainConfig,
};
use layerseg_torch::{BasicUNetConfig, Error};
use ndarray::Array3;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

const SIZE: usize = 16;

/// A smooth healthy background with a bright cube whose place depends on the index.
struct Cubes {
    fail_at: Option<u64>,
}

impl SampleSource for Cubes {
    fn sample(&self, index: u64) -> Result<Sample, SourceError> {
        if Some(index) == self.fail_at {
            return Err(format!("cannot synthesise case {index}").into());
        }
        let offset = (index % 7) as usize;
        let healthy = Array3::from_shape_fn((SIZE, SIZE, SIZE), |(z, y, x)| {
            ((z + 2 * y + 3 * x + offset) as f32 / 24.0).sin()
        });
        let mask = Array3::from_shape_fn((SIZE, SIZE, SIZE), |(z, y, x)| {
            let inside = |v: usize| (3 + offset..8 + offset).contains(&v);
            f32::from(u8::from(inside(z) && inside(y) && inside(x)))
        });
        let tumour = healthy.mapv(|h| 2.0 + 0.5 * h);
        let image = &healthy * &mask.mapv(|m| 1.0 - m) + &tumour * &mask;
        Ok(Sample {
            image,
            healthy,
            tumour,
            mask,
        })
    }
}

fn net() -> BasicUNetConfig {
    BasicUNetConfig {
        features: [4, 4, 4, 4, 4, 4],
        ..BasicUNetConfig::default()
    }
}

fn settings(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 2,
        period_steps: 5,
        checkpoint_every: 3,
        validate_every: 4,
        validation_samples: 2,
        workers: 2,
        ..TrainConfig::default()
    }
}

fn train(
    dir: &Path,
    config: &TrainConfig,
    resume: bool,
    progress: &dyn Progress,
) -> Result<layerseg_torch::train::TrainReport, Error> {
    let run = RunOptions {
        resume,
        ..RunOptions::new(dir, Device::Cpu, progress)
    };
    pretrain(Arc::new(Cubes { fail_at: None }), &net(), config, &run)
}

fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(path).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn read_metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn loss_goes_down() {
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(40);
    config.adam.lr = 3e-3;
    config.period_steps = 1000;
    let report = train(dir.path(), &config, false, &NoProgress).unwrap();
    assert_eq!(report.outcome, Outcome::Finished);
    assert_eq!(report.step, 40);
    // Every step but the first is timed, and its wait for samples is part of it.
    let t = report.throughput;
    assert_eq!(t.steps, 39);
    assert!(
        t.seconds > 0.0 && (0.0..=t.seconds).contains(&t.waiting_s),
        "{t:?}"
    );
    let summary = t.summary(config.batch_size).unwrap();
    assert!(
        summary.contains("steps/s") && summary.contains("waiting"),
        "{summary}"
    );
    let losses: Vec<f64> = read_metrics(dir.path())
        .iter()
        .filter_map(|m| m["loss"]["total"].as_f64())
        .collect();
    assert_eq!(losses.len(), 40);
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[35..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.7 * first, "first {first}, last {last}");
    assert!(report.validation.is_some());
    assert!(dir.path().join("model.safetensors").is_file());
    let card = ModelCard::read(&dir.path().join("model.json")).unwrap();
    assert_eq!((card.step, &card.config), (40, &net()));
    assert!(card.losses.is_some() && card.validation.is_some() && !card.optimizer_state);
}

#[test]
fn resume_gives_the_same_weights_as_not_stopping() {
    let straight = tempfile::tempdir().unwrap();
    tch::manual_seed(1);
    train(straight.path(), &settings(8), false, &NoProgress).unwrap();

    let stopped = tempfile::tempdir().unwrap();
    tch::manual_seed(1);
    let first = train(stopped.path(), &settings(5), false, &NoProgress).unwrap();
    assert_eq!(first.step, 5);
    // As if killed after step 5 but before its checkpoint: the newest left is step 3, and the
    // metrics of steps 4 and 5 are redone, not duplicated.
    std::fs::remove_dir_all(stopped.path().join("checkpoints/step-000000005")).unwrap();
    let second = train(stopped.path(), &settings(8), true, &NoProgress).unwrap();
    assert_eq!((second.started_at, second.step), (3, 8));

    let a = weights(&straight.path().join("model.safetensors"));
    let b = weights(&stopped.path().join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
    let steps = |dir: &Path| -> Vec<u64> {
        read_metrics(dir)
            .iter()
            .filter(|m| m.get("loss").is_some())
            .map(|m| m["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps(stopped.path()), (1..=8).collect::<Vec<u64>>());
    let card_a = latest_checkpoint(straight.path()).unwrap().unwrap().card;
    let card_b = latest_checkpoint(stopped.path()).unwrap().unwrap().card;
    assert_eq!(card_a.step, card_b.step);
    assert_eq!(card_a.training["lr"], card_b.training["lr"]);
    assert_eq!(card_a.training["plateau"], card_b.training["plateau"]);
}

fn warm_started(
    dir: &Path,
    from: &Path,
    config: &TrainConfig,
) -> Result<layerseg_torch::train::TrainReport, Error> {
    let run = RunOptions {
        warm_start: Some(from),
        data: serde_json::json!({"healthy": ["cubes"]}),
        ..RunOptions::new(dir, Device::Cpu, &NoProgress)
    };
    pretrain(Arc::new(Cubes { fail_at: None }), &net(), config, &run)
}

#[test]
fn warm_start_from_a_checkpoint_folder_equals_not_stopping() {
    let straight = tempfile::tempdir().unwrap();
    tch::manual_seed(2);
    train(straight.path(), &settings(8), false, &NoProgress).unwrap();

    let first = tempfile::tempdir().unwrap();
    tch::manual_seed(2);
    train(first.path(), &settings(6), false, &NoProgress).unwrap();
    let second = tempfile::tempdir().unwrap();
    let checkpoint = first.path().join("checkpoints/step-000000006");
    let report = warm_started(second.path(), &checkpoint, &settings(8)).unwrap();
    assert_eq!((report.started_at, report.step), (6, 8));

    let a = weights(&straight.path().join("model.safetensors"));
    let b = weights(&second.path().join("model.safetensors"));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
    let card = ModelCard::read(&second.path().join("model.json")).unwrap();
    let spans: Vec<(u64, u64)> = card
        .history
        .iter()
        .map(|r| (r.from_step, r.to_step))
        .collect();
    assert_eq!(spans, [(0, 6), (6, 8)]);
    assert_eq!(card.history[1].data["healthy"][0], "cubes");
    assert!(card
        .history
        .iter()
        .all(|r| r.kind == "pretrain" && r.device == "cpu"));
    let total: f64 = card.history.iter().map(|r| r.wall_time_s).sum();
    assert!(
        (total - card.wall_time_s).abs() < 1e-6,
        "{total} vs {}",
        card.wall_time_s
    );
}

#[test]
fn warm_start_from_an_exported_model_continues_its_count_and_schedule() {
    let first = tempfile::tempdir().unwrap();
    train(first.path(), &settings(5), false, &NoProgress).unwrap();
    let model = first.path().join("model.safetensors");
    // A card from before histories were kept: one unrecorded session stands for it.
    let card_path = model.with_extension("json");
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("history");
    std::fs::write(&card_path, old.to_string()).unwrap();

    let second = tempfile::tempdir().unwrap();
    let err = warm_started(second.path(), &model, &settings(5)).unwrap_err();
    assert!(
        err.to_string().contains("already trained for 5 steps"),
        "{err}"
    );
    let report = warm_started(second.path(), &model, &settings(7)).unwrap();
    assert_eq!(
        (report.started_at, report.step, report.outcome),
        (5, 7, Outcome::Finished)
    );
    let steps: Vec<u64> = read_metrics(second.path())
        .iter()
        .filter(|m| m.get("loss").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [6, 7]);
    let card = ModelCard::read(&second.path().join("model.json")).unwrap();
    let kinds: Vec<(&str, u64, u64)> = card
        .history
        .iter()
        .map(|r| (r.kind.as_str(), r.from_step, r.to_step))
        .collect();
    assert_eq!(kinds, [("unrecorded", 0, 5), ("pretrain", 5, 7)]);

    // Resuming the warm-started run counts Adam's own updates from the warm start.
    let report = train(second.path(), &settings(9), true, &NoProgress).unwrap();
    assert_eq!((report.started_at, report.step), (7, 9));
    let card = latest_checkpoint(second.path()).unwrap().unwrap().card;
    assert_eq!(card.training["step_offset"], 5);
    assert_eq!(card.history.len(), 3);
}

#[test]
fn restarted_moments_ramp_the_first_update_down() {
    let first = tempfile::tempdir().unwrap();
    let config = settings(5);
    train(first.path(), &config, false, &NoProgress).unwrap();
    let model = first.path().join("model.safetensors");
    let second = tempfile::tempdir().unwrap();
    warm_started(second.path(), &model, &settings(6)).unwrap();
    // Adam's first update moves every weight by about the step size: lr / 100 here, not lr.
    let lr = ModelCard::read(&model.with_extension("json"))
        .unwrap()
        .training["lr"]
        .as_f64()
        .unwrap();
    let before = weights(&model);
    let after = weights(&second.path().join("model.safetensors"));
    let moved = before
        .iter()
        .zip(&after)
        .filter(|((name, _), _)| !name.contains("running"))
        .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(
        moved > 0.0 && moved <= 1.001 * lr / 100.0,
        "moved {moved}, lr {lr}"
    );
}

#[test]
fn a_past_deadline_stops_before_the_first_step_and_still_exports() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunOptions {
        deadline: Some(std::time::Instant::now()),
        ..RunOptions::new(dir.path(), Device::Cpu, &NoProgress)
    };
    let report = pretrain(
        Arc::new(Cubes { fail_at: None }),
        &net(),
        &settings(50),
        &run,
    )
    .unwrap();
    assert_eq!((report.outcome, report.step), (Outcome::TimeLimit, 0));
    assert!(dir.path().join("model.safetensors").is_file());
    assert_eq!(latest_checkpoint(dir.path()).unwrap().unwrap().card.step, 0);
}

/// Cancels once `after` steps have been reported.
struct CancelAfter {
    after: u64,
    done: AtomicU64,
}

impl Progress for CancelAfter {
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
    }
    fn cancelled(&self) -> bool {
        self.done.load(Ordering::SeqCst) >= self.after
    }
}

#[test]
fn cancel_saves_a_checkpoint_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let progress = CancelAfter {
        after: 4,
        done: AtomicU64::new(0),
    };
    let report = train(dir.path(), &settings(50), false, &progress).unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.step, 4);
    let latest = latest_checkpoint(dir.path()).unwrap().unwrap();
    assert_eq!(latest.card.step, 4);
    assert!(latest.card.optimizer_state);
}

#[test]
fn refuses_to_overwrite_or_resume_another_width() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), &settings(3), false, &NoProgress).unwrap();
    let err = train(dir.path(), &settings(6), false, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("already has checkpoints"), "{err}");

    let wider = BasicUNetConfig {
        features: [8, 8, 8, 8, 8, 8],
        ..net()
    };
    let run = RunOptions {
        resume: true,
        ..RunOptions::new(dir.path(), Device::Cpu, &NoProgress)
    };
    let err = pretrain(
        Arc::new(Cubes { fail_at: None }),
        &wider,
        &settings(6),
        &run,
    )
    .unwrap_err();
    assert!(err.to_string().contains("another network width"), "{err}");
}

#[test]
fn a_failing_sample_names_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunOptions::new(dir.path(), Device::Cpu, &NoProgress);
    let mut config = settings(10);
    config.validate_every = 0;
    let err = pretrain(Arc::new(Cubes { fail_at: Some(5) }), &net(), &config, &run).unwrap_err();
    assert!(matches!(err, Error::Source { index: 5, .. }), "{err}");
}

#[test]
fn adam_matches_libtorch() {
    let make = || {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.var("w", &[3, 4], tch::nn::Init::Const(0.5));
        let b = (&root / "sub").var("b", &[4], tch::nn::Init::Const(-1.0));
        (vs, w, b)
    };
    let (ours_vs, w1, b1) = make();
    let (theirs_vs, w2, b2) = make();
    let config = AdamConfig {
        lr: 0.05,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    let mut adam = Adam::new(&ours_vs, config).unwrap();
    let mut reference = tch::nn::Adam {
        beta1: config.beta1,
        beta2: config.beta2,
        wd: config.weight_decay,
        eps: config.eps,
        amsgrad: false,
    }
    .build(&theirs_vs, config.lr)
    .unwrap();
    let target = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.25]);
    let loss = |w: &Tensor, b: &Tensor| {
        (w.sum_dim_intlist(0, false, Kind::Float) * b - &target)
            .square()
            .sum(Kind::Float)
    };
    for step in 0..20 {
        if step == 10 {
            adam.set_lr(0.01);
            reference.set_lr(0.01);
        }
        adam.zero_grad();
        loss(&w1, &b1).backward();
        adam.step().unwrap();
        reference.zero_grad();
        loss(&w2, &b2).backward();
        reference.step();
    }
    assert_eq!(adam.steps(), 20);
    for (ours, theirs) in [(&w1, &w2), (&b1, &b2)] {
        let diff = (ours - theirs).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{diff}");
    }
    let moved = (&b1 + 1.0).abs().max().double_value(&[]);
    assert!(moved > 0.1, "the test should move the parameters");
}
