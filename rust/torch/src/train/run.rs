//! The training loop, shared by pretraining, fine-tuning and self-training: Adam with the
//! plateau schedule, checkpoints and resume, metrics, progress and cancel. What differs between
//! them (the loss, the validation, the starting weights) is an [`Objective`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use layerseg_core::Progress;
use tch::{Device, Tensor};

use super::amp;
use super::metrics::Metrics;
use super::source::{Batch, Loader, Sample, SampleSource};
use super::{Adam, Outcome, Throughput, TrainConfig, TrainReport, TrainState};
use crate::checkpoint::{
    device_name, export_model, latest_checkpoint, save_checkpoint, write_atomic, Checkpoint,
    ModelCard, RunRecord,
};
use crate::error::{Error, Result};
use crate::losses::{LossValues, Losses};
use crate::network::{load_weights, BasicUNetConfig, Model};

/// Adam's warm-up (updates) when training continues from weights without their moments: a rule of
/// thumb fixed beforehand, not tuned on any result.
pub const MOMENT_RESTART_WARMUP: u64 = 100;
pub const MODEL_FILE: &str = "model.safetensors";
/// The weights of the best validation so far, with their card `best.json`, when the objective
/// selects by validation.
pub const BEST_FILE: &str = "best.safetensors";

/// What one validation found.
#[derive(Clone, Debug, Default)]
pub struct Validation {
    /// Scores written to the metrics, one record each (e.g. `"validation"`, `"validation_dice"`).
    pub scores: Vec<(&'static str, f64)>,
    /// More detail for the metrics (e.g. per case), written as one record when not null.
    pub detail: Option<(&'static str, serde_json::Value)>,
    /// The label-free score for the model card's `validation`.
    pub card_validation: Option<f64>,
    /// Higher is better. When given, the best validation's weights become the run's model and
    /// `early_stop_validations` watches it.
    pub selection: Option<f64>,
}

/// What a run optimises and how it is validated; the loop around it is shared.
pub trait Objective {
    /// The progress phase, e.g. "pretrain".
    fn name(&self) -> &'static str;
    /// Weights to start a fresh run from, instead of a random initialisation.
    fn initial_weights(&self) -> Option<&Path> {
        None
    }
    /// The training loss of one batch.
    fn losses(&self, pred: &Tensor, batch: &Batch) -> Result<Losses>;
    /// Scores the model at a validation step (without gradients).
    fn validate(&self, model: &Model, device: Device, batch_size: usize) -> Result<Validation>;
    /// Whether validation selects the model: then the starting weights (before the first step
    /// of a fresh run) and the last step are validated too, so that neither can be missed.
    fn selects_by_validation(&self) -> bool {
        false
    }
    /// The objective's own settings, recorded in the training state.
    fn record(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Where and how a run happens, apart from its settings.
#[derive(Clone)]
pub struct RunOptions<'a> {
    pub run_dir: &'a Path,
    pub device: Device,
    /// Continue from the newest checkpoint in `run_dir` (a fresh start when there is none).
    pub resume: bool,
    /// Continue another run's training in this (new) run folder: its weights, step count,
    /// learning rate and schedule, and its Adam moments when it is a checkpoint folder (see
    /// [`Checkpoint::open`]). `resume` wins when the run folder has a checkpoint.
    pub warm_start: Option<&'a Path>,
    /// Stop cleanly before this moment, keeping time for the last checkpoint, validation and
    /// export ([`Outcome::TimeLimit`]).
    pub deadline: Option<Instant>,
    /// What the run trains on (scan names, seed, ...), for the model card's history.
    pub data: serde_json::Value,
    pub progress: &'a dyn Progress,
}

impl<'a> RunOptions<'a> {
    /// A fresh run in `run_dir`: no resume, no warm start, no deadline, no data record.
    pub fn new(run_dir: &'a Path, device: Device, progress: &'a dyn Progress) -> RunOptions<'a> {
        RunOptions {
            run_dir,
            device,
            resume: false,
            warm_start: None,
            deadline: None,
            data: serde_json::Value::Null,
            progress,
        }
    }
}

struct Trainer {
    model: Model,
    adam: Adam,
    state: TrainState,
    /// `history`'s last record is this session's.
    card: ModelCard,
    config: TrainConfig,
    /// The card's wall time when this session started.
    session_wall_start: f64,
}

impl Trainer {
    fn new(
        net: &BasicUNetConfig,
        config: &TrainConfig,
        run: &RunOptions,
        objective: &dyn Objective,
    ) -> Result<Trainer> {
        let init = objective.initial_weights();
        let model = match init {
            Some(path) => Model::load(net, run.device, path)?,
            None => Model::new(net, run.device)?,
        };
        let adam = Adam::new(&model.vs, config.adam)?;
        let mut card = ModelCard::new(net, run.device);
        card.profile = config.profile.clone();
        card.input = config.input.clone();
        if let Some(card_path) = init.map(|p| p.with_extension("json")) {
            // Fine-tuning starts a new schedule but keeps the history of the weights it starts from.
            if card_path.is_file() {
                card.history = ModelCard::read(&card_path)?.lineage();
            }
        }
        let mut trainer = Trainer {
            model,
            adam,
            state: TrainState::new(config),
            card,
            config: config.clone(),
            session_wall_start: 0.0,
        };
        match (run.resume, latest_checkpoint(run.run_dir)?, run.warm_start) {
            (true, Some(checkpoint), _) => trainer.restore(&checkpoint, net, run)?,
            (_, None, Some(from)) => {
                let checkpoint = Checkpoint::open(from)?;
                run.progress.message(&format!(
                    "continuing the training of {} from step {}",
                    from.display(),
                    checkpoint.card.step
                ));
                if checkpoint.card.step >= config.steps {
                    return Err(Error::Config(format!(
                        "{}: already trained for {} steps, and the step count includes them: \
                         ask for more steps than that",
                        from.display(),
                        checkpoint.card.step
                    )));
                }
                trainer.restore(&checkpoint, net, run)?;
            }
            (true, None, None) => run.progress.message(&format!(
                "no checkpoint in {} to resume from: starting from scratch",
                run.run_dir.display()
            )),
            (false, Some(checkpoint), _) => {
                return Err(Error::Checkpoint {
                    path: checkpoint.dir,
                    reason: "this run folder already has checkpoints: resume it, or choose \
                             another output folder"
                        .to_string(),
                })
            }
            (false, None, None) => {}
        }
        trainer.session_wall_start = trainer.card.wall_time_s;
        let step = trainer.step();
        trainer.card.history.push(RunRecord {
            kind: objective.name().to_string(),
            from_step: step,
            to_step: step,
            wall_time_s: 0.0,
            device: device_name(run.device),
            layerseg_version: env!("CARGO_PKG_VERSION").to_string(),
            data: run.data.clone(),
        });
        Ok(trainer)
    }

    /// Optimiser steps in total, including those of a warm start's earlier runs.
    fn step(&self) -> u64 {
        self.state.step_offset + self.adam.steps()
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
        // Adam's bias correction counts its own updates, from zero when the moments do.
        let (step_offset, warmup_updates) = if moments.is_empty() {
            run.progress.message(&format!(
                "the checkpoint has no optimiser state: Adam moments start at zero, and the \
                 learning rate ramps up over {MOMENT_RESTART_WARMUP} steps"
            ));
            (checkpoint.card.step, MOMENT_RESTART_WARMUP)
        } else {
            let updates = checkpoint.card.step.saturating_sub(saved.step_offset);
            self.adam.load_state(&moments, updates, saved.lr)?;
            (saved.step_offset, saved.warmup_updates)
        };
        self.adam.set_lr(saved.lr);
        self.adam.set_warmup(warmup_updates);
        // The new settings (e.g. more steps) apply; the schedule continues where it was.
        self.state = TrainState {
            config: self.config.clone(),
            step_offset,
            warmup_updates,
            ..saved
        };
        let (profile, input) = (self.card.profile.clone(), self.card.input.clone());
        self.card = checkpoint.card.clone();
        self.card.history = checkpoint.card.lineage();
        self.card.profile = profile.or(self.card.profile.take());
        self.card.input = input.or(self.card.input.take());
        self.card.device = device_name(run.device);
        Ok(())
    }

    /// Brings the card's step, wall time and this session's history record up to date.
    fn stamp_card(&mut self, wall_time_s: f64) {
        self.card.step = self.step();
        self.card.wall_time_s = wall_time_s;
        let session_time = wall_time_s - self.session_wall_start;
        if let Some(session) = self.card.history.last_mut() {
            session.to_step = self.card.step;
            session.wall_time_s = session_time;
        }
    }

    fn train_step(
        &mut self,
        objective: &dyn Objective,
        batch: &Batch,
        step: u64,
    ) -> Result<LossValues> {
        let amp = self.config.mixed_precision && batch.image.device().is_cuda();
        let pred = amp::forward(amp, || self.model.net.forward_t(&batch.image, true))?;
        // The losses are computed in float32 whatever the forward pass ran in.
        let losses = objective.losses(&pred, batch)?;
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

    fn checkpoint(&mut self, run_dir: &Path, wall_time_s: f64) -> Result<PathBuf> {
        self.stamp_card(wall_time_s);
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

    /// The current weights as `RUN_DIR/best.safetensors` (and `best.json`).
    fn export_best(&mut self, run_dir: &Path, wall_time_s: f64) -> Result<()> {
        self.stamp_card(wall_time_s);
        export_model(&self.model.vs, &self.card, &run_dir.join(BEST_FILE))?;
        Ok(())
    }
}

/// Trains a `net`-shaped BasicUNet on `source` for `objective` into `run.run_dir`: checkpoints
/// under `checkpoints/`, per-step metrics in `metrics.jsonl`, and the run's `model.safetensors`
/// with its card `model.json`: the last weights, or the best validation's when the objective
/// selects (they are also kept as `best.safetensors` while the run goes on).
pub fn train<S: SampleSource + ?Sized + 'static>(
    source: Arc<S>,
    net: &BasicUNetConfig,
    config: &TrainConfig,
    run: &RunOptions,
    objective: &dyn Objective,
) -> Result<TrainReport> {
    config.validate()?;
    std::fs::create_dir_all(run.run_dir).map_err(|e| Error::io(run.run_dir, e))?;
    if run.device.is_cuda() {
        // Every batch has the profile's shape, so cuDNN's autotuner picks the fastest
        // convolution kernels once, on the first step (issue 17, part 3).
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let mut trainer = Trainer::new(net, config, run, objective)?;
    trainer.state.objective = objective.record();
    let mut metrics = Metrics::open(run.run_dir, trainer.step())?;

    let started_at = trainer.step();
    let batch = config.batch_size;
    let clock = Instant::now();
    let wall_before = trainer.card.wall_time_s;
    let wall = || wall_before + clock.elapsed().as_secs_f64();
    let mut last: Option<Validation> = None;
    let mut outcome = Outcome::Finished;
    let validate = |trainer: &mut Trainer,
                    metrics: &mut Metrics,
                    step: u64,
                    wall_time_s: f64|
     -> Result<Option<Validation>> {
        let result = objective.validate(&trainer.model, run.device, batch)?;
        for (key, value) in &result.scores {
            metrics.write(serde_json::json!({"step": step, *key: value}))?;
        }
        if let Some((key, detail)) = &result.detail {
            metrics.write(serde_json::json!({"step": step, *key: detail}))?;
        }
        if let Some(score) = result.card_validation {
            trainer.card.validation = Some(score);
        }
        let mut stop = false;
        if let Some(score) = result.selection {
            let state = &mut trainer.state;
            if state.best_score.is_none_or(|best| score > best) {
                state.best_score = Some(score);
                state.best_step = Some(step);
                state.validations_since_best = 0;
                trainer.export_best(run.run_dir, wall_time_s)?;
            } else {
                state.validations_since_best += 1;
                let patience = config.early_stop_validations;
                stop = patience > 0 && state.validations_since_best >= patience;
            }
        }
        Ok(if stop { None } else { Some(result) })
    };
    let selects = objective.selects_by_validation() && config.validate_every > 0;
    if started_at == 0 && selects {
        run.progress.message(&format!(
            "validating the starting weights ({})",
            objective.name()
        ));
        let result = validate(&mut trainer, &mut metrics, 0, wall())?;
        last = result;
    }

    let mut loader = Loader::start(
        Arc::clone(&source),
        started_at * batch as u64,
        config.worker_count(),
        config.queue_len(),
    );
    run.progress.start(objective.name(), config.steps);
    run.progress.advance(started_at.min(config.steps));

    let mut last_losses = trainer.card.losses;
    let mut last_checkpoint = None;
    let mut throughput = Throughput::default();
    let mut step = started_at;
    let mut deadline = run.deadline.map(Deadline::new);
    while step < config.steps {
        if run.progress.cancelled() {
            outcome = Outcome::Cancelled;
            break;
        }
        if deadline.as_ref().is_some_and(Deadline::reached) {
            run.progress
                .message(&format!("stopping at step {step}: the time limit is near"));
            outcome = Outcome::TimeLimit;
            break;
        }
        let step_started = Instant::now();
        let samples = loader.next_samples(batch)?;
        let waited = step_started.elapsed();
        let batch_tensors = Batch::from_samples(&samples, run.device)?;
        let values = trainer.train_step(objective, &batch_tensors, step)?;
        if step > started_at {
            throughput.steps += 1;
            throughput.seconds += step_started.elapsed().as_secs_f64();
            throughput.waiting_s += waited.as_secs_f64();
        }
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
        if let Some(deadline) = deadline.as_mut() {
            deadline.step_took(step_started.elapsed());
        }
        let save_started = Instant::now();
        if config.validate_every > 0 && step % config.validate_every == 0 {
            match validate(&mut trainer, &mut metrics, step, wall())? {
                Some(result) => last = Some(result),
                None => outcome = Outcome::EarlyStopped,
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
        if let Some(deadline) = deadline.as_mut() {
            deadline.save_took(save_started.elapsed());
        }
        if outcome == Outcome::EarlyStopped {
            break;
        }
    }
    drop(loader);
    let validated = config.validate_every > 0 && step % config.validate_every == 0;
    if selects && !validated && step > started_at && outcome != Outcome::Cancelled {
        if let Some(result) = validate(&mut trainer, &mut metrics, step, wall())? {
            last = Some(result);
        }
    }
    let checkpoint = match last_checkpoint {
        Some((at, path)) if at == step => path,
        _ => trainer.checkpoint(run.run_dir, wall())?,
    };
    let model = run.run_dir.join(MODEL_FILE);
    let best = run.run_dir.join(BEST_FILE);
    if trainer.state.best_step.is_some() && best.is_file() {
        copy_model(&best, &model)?;
    } else {
        export_model(&trainer.model.vs, &trainer.card, &model)?;
    }
    run.progress.finish();
    let score = |key: &str| {
        last.as_ref()
            .and_then(|v| v.scores.iter().find(|(k, _)| *k == key).map(|(_, s)| *s))
    };
    Ok(TrainReport {
        outcome,
        step,
        started_at,
        losses: last_losses,
        validation: last
            .as_ref()
            .and_then(|v| v.card_validation)
            .or(trainer.card.validation),
        validation_real: score("validation_real"),
        best_step: trainer.state.best_step,
        best_score: trainer.state.best_score,
        last_selection: last.as_ref().and_then(|v| v.selection),
        checkpoint,
        model,
        throughput,
    })
}

/// When to stop a run with a time limit: before a step that could not finish, with the last
/// checkpoint, validation and export after it, by the limit. Each is estimated by the longest
/// seen so far, doubled for the step.
struct Deadline {
    at: Instant,
    longest_step: Duration,
    longest_save: Duration,
}

impl Deadline {
    /// The last save is guessed at this until one has been timed.
    const FIRST_SAVE_GUESS: Duration = Duration::from_secs(10);

    fn new(at: Instant) -> Deadline {
        Deadline {
            at,
            longest_step: Duration::ZERO,
            longest_save: Self::FIRST_SAVE_GUESS,
        }
    }

    fn step_took(&mut self, time: Duration) {
        self.longest_step = self.longest_step.max(time);
    }

    fn save_took(&mut self, time: Duration) {
        self.longest_save = self.longest_save.max(time);
    }

    fn reached(&self) -> bool {
        Instant::now() + 2 * self.longest_step + self.longest_save >= self.at
    }
}

/// Copies a model and its card (`NAME.json`) to `to` (and its `.json`), each atomically.
pub(super) fn copy_model(from: &Path, to: &Path) -> Result<()> {
    for (a, b) in [
        (from.to_path_buf(), to.to_path_buf()),
        (from.with_extension("json"), to.with_extension("json")),
    ] {
        write_atomic(&b, |tmp| {
            std::fs::copy(&a, tmp)
                .map(|_| ())
                .map_err(|e| Error::io(&a, e))
        })?;
    }
    Ok(())
}

/// Seconds per training step of `objective` (forward, losses, backward, Adam, reading the loss
/// values, as in [`train`]) on one fixed batch already on `device`, the mean over `steps` after
/// `warmup` untimed ones.
pub(super) fn time_steps(
    objective: &dyn Objective,
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
        session_wall_start: 0.0,
    };
    let batch = Batch::from_samples(samples, device)?;
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for step in 0..warmup {
        trainer.train_step(objective, &batch, step)?;
    }
    sync();
    let clock = Instant::now();
    for step in 0..steps {
        trainer.train_step(objective, &batch, warmup + step)?;
    }
    sync();
    Ok(clock.elapsed().as_secs_f64() / steps.max(1) as f64)
}
