//! The pretraining loop.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use layerseg_core::Progress;
use ndarray::Array3;
use tch::{Device, Tensor};

use super::amp;
use super::source::{Batch, Loader, Sample, SampleSource, VALIDATION_BASE};
use super::{Adam, Outcome, TrainConfig, TrainReport, TrainState};
use crate::checkpoint::{
    export_model, latest_checkpoint, save_checkpoint, write_atomic, Checkpoint, ModelCard,
};
use crate::error::{Error, Result};
use crate::losses::{layer_losses, recomposition_l1, LossValues};
use crate::network::{load_weights, BasicUNetConfig, Model};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const MODEL_FILE: &str = "model.safetensors";

/// Where and how a run happens, apart from its settings.
pub struct RunOptions<'a> {
    pub run_dir: &'a Path,
    pub device: Device,
    /// Continue from the newest checkpoint in `run_dir` (a fresh start when there is none).
    pub resume: bool,
    pub progress: &'a dyn Progress,
}

struct Trainer {
    model: Model,
    adam: Adam,
    state: TrainState,
    card: ModelCard,
    config: TrainConfig,
}

impl Trainer {
    fn new(net: &BasicUNetConfig, config: &TrainConfig, run: &RunOptions) -> Result<Trainer> {
        let model = Model::new(net, run.device)?;
        let adam = Adam::new(&model.vs, config.adam)?;
        let mut card = ModelCard::new(net, run.device);
        card.profile = config.profile.clone();
        let mut trainer = Trainer {
            model,
            adam,
            state: TrainState::new(config),
            card,
            config: config.clone(),
        };
        match (run.resume, latest_checkpoint(run.run_dir)?) {
            (true, Some(checkpoint)) => trainer.restore(&checkpoint, net, run)?,
            (true, None) => run.progress.message(&format!(
                "no checkpoint in {} to resume from: starting from scratch",
                run.run_dir.display()
            )),
            (false, Some(checkpoint)) => {
                return Err(Error::Checkpoint {
                    path: checkpoint.dir,
                    reason: "this run folder already has checkpoints: resume it, or choose \
                             another output folder"
                        .to_string(),
                })
            }
            (false, None) => {}
        }
        Ok(trainer)
    }

    fn restore(
        &mut self,
        checkpoint: &Checkpoint,
        net: &BasicUNetConfig,
        run: &RunOptions,
    ) -> Result<()> {
        checkpoint.check_config(net)?;
        load_weights(&mut self.model.vs, &checkpoint.weights_path())?;
        let saved: TrainState =
            serde_json::from_value(checkpoint.card.training.clone()).map_err(|e| {
                Error::Checkpoint {
                    path: checkpoint.dir.clone(),
                    reason: format!("unreadable training state: {e}"),
                }
            })?;
        let moments = checkpoint.optimizer_state(run.device)?;
        if moments.is_empty() {
            run.progress
                .message("the checkpoint has no optimiser state: Adam moments start at zero");
        } else {
            self.adam
                .load_state(&moments, checkpoint.card.step, saved.lr)?;
        }
        self.adam.set_lr(saved.lr);
        // The new settings (e.g. more steps) apply; the schedule continues where it was.
        self.state = TrainState {
            config: self.config.clone(),
            ..saved
        };
        let profile = self.card.profile.clone();
        self.card = checkpoint.card.clone();
        self.card.profile = profile.or(self.card.profile.take());
        self.card.device = crate::checkpoint::device_name(run.device);
        Ok(())
    }

    fn train_step(&mut self, batch: &Batch, step: u64) -> Result<LossValues> {
        let amp = self.config.mixed_precision && batch.image.device().is_cuda();
        let pred = amp::forward(amp, || self.model.net.forward_t(&batch.image, true))?;
        // The losses are computed in float32 whatever the forward pass ran in.
        let losses = layer_losses(
            &pred,
            &batch.healthy,
            &batch.tumour,
            &batch.mask,
            &self.config.loss_weights,
        )?;
        self.adam.zero_grad();
        let to_backward = if amp {
            self.state.grad_scaler.scale(&losses.total)?
        } else {
            losses.total.shallow_clone()
        };
        to_backward.f_backward().map_err(|e| Error::Torch {
            context: format!("backward pass of step {step}"),
            source: e,
        })?;
        let values = losses.values()?;
        if amp {
            // An overflow in float16 skips this update and lowers the scale, as GradScaler does.
            let params = self.model.vs.trainable_variables();
            let finite = self.state.grad_scaler.unscale(&params)? && values.total.is_finite();
            if finite {
                self.adam.step()?;
            }
            self.state.grad_scaler.update(finite);
            return Ok(values);
        }
        if !values.total.is_finite() {
            return Err(Error::Diverged {
                step,
                value: values.total,
            });
        }
        self.adam.step()?;
        Ok(values)
    }

    /// Mean recomposition L1 over the validation samples, batch by batch, without gradients.
    fn validate(&self, samples: &[Sample], device: Device) -> Result<f64> {
        let mut total = 0.0;
        for chunk in samples.chunks(self.config.batch_size) {
            let batch = Batch::from_samples(chunk, device)?;
            let scores = tch::no_grad(|| -> Result<Tensor> {
                let pred = self.model.net.forward_t(&batch.image, false)?;
                recomposition_l1(&pred, &batch.image)
            })?;
            total += scores
                .f_sum(tch::Kind::Double)
                .and_then(|t| t.f_double_value(&[]))
                .map_err(Error::from)?;
        }
        Ok(total / samples.len() as f64)
    }

    /// Mean recomposition L1 over unlabelled real volumes, one at a time (shapes may differ).
    fn validate_real(&self, volumes: &[Array3<f32>], device: Device) -> Result<f64> {
        let mut total = 0.0;
        for volume in volumes {
            let (d, h, w) = volume.dim();
            let flat: Vec<f32> = volume.iter().copied().collect();
            let score = tch::no_grad(|| -> Result<f64> {
                let image = Tensor::f_from_slice(&flat)
                    .and_then(|t| t.f_reshape([1, 1, d as i64, h as i64, w as i64]))
                    .and_then(|t| t.f_to_device(device))?;
                let pred = self.model.net.forward_t(&image, false)?;
                Ok(recomposition_l1(&pred, &image)?.f_double_value(&[0])?)
            })?;
            total += score;
        }
        Ok(total / volumes.len() as f64)
    }

    fn checkpoint(&mut self, run_dir: &Path, wall_time_s: f64) -> Result<PathBuf> {
        self.card.step = self.adam.steps();
        self.card.wall_time_s = wall_time_s;
        self.state.lr = self.adam.lr();
        self.card.training = serde_json::to_value(&self.state)
            .map_err(|e| Error::Config(format!("training state: {e}")))?;
        let moments = self.adam.state();
        save_checkpoint(
            run_dir,
            &self.card,
            &self.model.vs,
            Some(&moments),
            self.config.keep_checkpoints,
        )
    }
}

/// Appends one JSON object per line to `RUN_DIR/metrics.jsonl`.
struct Metrics {
    file: File,
    path: PathBuf,
}

impl Metrics {
    /// Opens the metrics for appending after dropping the records of steps past `step`: those
    /// of an interrupted session that the resumed one is about to redo.
    fn open(run_dir: &Path, step: u64) -> Result<Metrics> {
        let path = run_dir.join(METRICS_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|record| record["step"].as_u64())
                        .is_some_and(|s| s <= step)
                })
                .flat_map(|line| [line, "\n"])
                .collect();
            if kept.len() != text.len() {
                write_atomic(&path, |tmp| {
                    std::fs::write(tmp, &kept).map_err(|e| Error::io(tmp, e))
                })?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Metrics { file, path })
    }

    fn write(&mut self, record: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| Error::io(&self.path, e))
    }
}

fn validation_samples<S: SampleSource + ?Sized>(source: &S, n: u64) -> Result<Vec<Sample>> {
    (0..n)
        .map(|i| {
            let index = VALIDATION_BASE + i;
            source
                .sample(index)
                .map_err(|source| Error::Source { index, source })
        })
        .collect()
}

/// Pretrains a `net`-shaped BasicUNet on `source` into `run.run_dir`: checkpoints under
/// `checkpoints/`, per-step metrics in `metrics.jsonl`, and the final `model.safetensors` with
/// its card `model.json`.
pub fn pretrain<S: SampleSource + ?Sized + 'static>(
    source: Arc<S>,
    net: &BasicUNetConfig,
    config: &TrainConfig,
    run: &RunOptions,
) -> Result<TrainReport> {
    pretrain_with_real(source, net, config, run, &[])
}

/// [`pretrain`], also scoring unlabelled real volumes (normalised, on the network grid, each
/// (D, H, W)) by the recomposition L1 at every validation: `validation_real` in the metrics.
pub fn pretrain_with_real<S: SampleSource + ?Sized + 'static>(
    source: Arc<S>,
    net: &BasicUNetConfig,
    config: &TrainConfig,
    run: &RunOptions,
    real: &[Array3<f32>],
) -> Result<TrainReport> {
    config.validate()?;
    std::fs::create_dir_all(run.run_dir).map_err(|e| Error::io(run.run_dir, e))?;
    let mut trainer = Trainer::new(net, config, run)?;
    let mut metrics = Metrics::open(run.run_dir, trainer.adam.steps())?;
    let validation = if config.validate_every > 0 {
        validation_samples(source.as_ref(), config.validation_samples)?
    } else {
        Vec::new()
    };

    let started_at = trainer.adam.steps();
    let batch = config.batch_size;
    let mut loader = Loader::start(
        Arc::clone(&source),
        started_at * batch as u64,
        config.worker_count(),
        config.queue_len(),
    );
    let clock = Instant::now();
    let wall_before = trainer.card.wall_time_s;
    let wall = || wall_before + clock.elapsed().as_secs_f64();
    run.progress.start("pretrain", config.steps);
    run.progress.advance(started_at.min(config.steps));

    let mut outcome = Outcome::Finished;
    let mut last_losses = trainer.card.losses;
    let mut last_validation = trainer.card.validation;
    let mut last_validation_real = None;
    let mut last_checkpoint = None;
    let mut step = started_at;
    while step < config.steps {
        if run.progress.cancelled() {
            outcome = Outcome::Cancelled;
            break;
        }
        let samples = loader.next_samples(batch)?;
        let batch_tensors = Batch::from_samples(&samples, run.device)?;
        let values = trainer.train_step(&batch_tensors, step)?;
        step += 1;
        last_losses = Some(values);
        trainer.card.losses = Some(values);
        metrics.write(serde_json::json!({
            "step": step, "lr": trainer.adam.lr(), "loss": values, "wall_time_s": wall(),
        }))?;

        trainer.state.period_loss_sum += values.total;
        trainer.state.period_steps_done += 1;
        if trainer.state.period_steps_done >= config.period_steps {
            let mean = trainer.state.period_loss_sum / trainer.state.period_steps_done as f64;
            let decision = trainer.state.plateau.step(mean, trainer.adam.lr());
            trainer.adam.set_lr(decision.lr);
            trainer.state.period_loss_sum = 0.0;
            trainer.state.period_steps_done = 0;
            if decision.stop {
                outcome = Outcome::EarlyStopped;
            }
        }
        if config.validate_every > 0 && step % config.validate_every == 0 {
            let score = trainer.validate(&validation, run.device)?;
            last_validation = Some(score);
            trainer.card.validation = Some(score);
            metrics.write(serde_json::json!({"step": step, "validation": score}))?;
            if !real.is_empty() {
                let score = trainer.validate_real(real, run.device)?;
                last_validation_real = Some(score);
                metrics.write(serde_json::json!({"step": step, "validation_real": score}))?;
            }
        }
        run.progress.advance(1);
        run.progress.message(&format!(
            "step {step}: loss {:.4}, lr {:.1e}",
            values.total,
            trainer.adam.lr()
        ));
        if step % config.checkpoint_every == 0 {
            last_checkpoint = Some((step, trainer.checkpoint(run.run_dir, wall())?));
        }
        if outcome == Outcome::EarlyStopped {
            break;
        }
    }
    drop(loader);
    let checkpoint = match last_checkpoint {
        Some((at, path)) if at == step => path,
        _ => trainer.checkpoint(run.run_dir, wall())?,
    };
    let model = run.run_dir.join(MODEL_FILE);
    export_model(&trainer.model.vs, &trainer.card, &model)?;
    run.progress.finish();
    Ok(TrainReport {
        outcome,
        step,
        started_at,
        losses: last_losses,
        validation: last_validation,
        validation_real: last_validation_real,
        checkpoint,
        model,
    })
}

/// Seconds per training step (forward, losses, backward, Adam, reading the loss values, as in
/// [`pretrain`]) on one fixed batch already on `device`, the mean over `steps` after `warmup`
/// untimed ones. For benchmarks against other implementations of the same step.
pub fn time_train_step(
    net: &BasicUNetConfig,
    config: &TrainConfig,
    device: Device,
    samples: &[Sample],
    warmup: u64,
    steps: u64,
) -> Result<f64> {
    let model = Model::new(net, device)?;
    let adam = Adam::new(&model.vs, config.adam)?;
    let mut trainer = Trainer {
        model,
        adam,
        state: TrainState::new(config),
        card: ModelCard::new(net, device),
        config: config.clone(),
    };
    let batch = Batch::from_samples(samples, device)?;
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for step in 0..warmup {
        trainer.train_step(&batch, step)?;
    }
    sync();
    let clock = Instant::now();
    for step in 0..steps {
        trainer.train_step(&batch, warmup + step)?;
    }
    sync();
    Ok(clock.elapsed().as_secs_f64() / steps.max(1) as f64)
}
