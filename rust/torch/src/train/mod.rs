//! Training: the one loop (`run`) and what it trains on, for all three kinds of training:
//! - pretraining on synthetic tumours (`pretrain`, `synthetic`): the network learns to decompose
//!   an image into healthy layer, tumour layer and mask (method.md sections 5 and 6);
//! - fine-tuning on a few labelled cases (`finetune`, `labelled`);
//! - self-training on unlabelled scans with pseudo-labels (`adapt`).
//!
//! The loop is generic over a [`SampleSource`] (`source`); background workers fill a bounded
//! queue so the network does not wait on data. Adam (`adam`) with a ReduceLROnPlateau schedule
//! (`plateau`) and, on CUDA, mixed precision (`amp`); a checkpoint every `checkpoint_every`
//! steps, at the end, and on cancel (Ctrl-C through [`layerseg_core::Progress::cancelled`]);
//! `resume` continues from the newest checkpoint with the weights, Adam moments, learning rate
//! and scheduler state it saved; `metrics` keeps the run's `metrics.jsonl` in step with its
//! checkpoints. This file holds what every kind shares: the loop's settings
//! ([`TrainConfig`]), its state saved in checkpoints ([`TrainState`]) and how it ended
//! ([`Outcome`], [`TrainReport`]).

mod adam;
mod adapt;
mod amp;
mod finetune;
mod labelled;
mod metrics;
mod plateau;
mod pretrain;
mod run;
mod source;
mod synthetic;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use adam::{Adam, AdamConfig};
pub use adapt::{
    adapt, AdaptConfig, AdaptReport, AdaptRound, CaseScore, RoundScores, ADAPT_REPORT,
};
pub use amp::GradScaler;
pub use finetune::{
    finetune, finetune_cases, FinetuneConfig, FinetuneData, FinetuneReport, FoldResult,
    ValidationCase, FINETUNE_REPORT,
};
pub use labelled::{GridCase, LabelledSource};
pub use metrics::METRICS_FILE;
pub use plateau::{Plateau, PlateauConfig, PlateauDecision};
pub use pretrain::{pretrain, pretrain_with_real, time_train_step};
pub use run::{train, Objective, RunOptions, Validation, BEST_FILE, MODEL_FILE};
pub use source::{Batch, Loader, Sample, SampleSource, SourceError, VALIDATION_BASE};
pub use synthetic::{
    list_scans, load_real_validation, pair_masks, synthesis_record, ScanInput, SynthesisSource,
};

use layerseg_core::profile::NetworkInput;
use layerseg_core::Profile;

use crate::error::{Error, Result};
use crate::losses::{LossValues, LossWeights};

/// Pretraining settings. Defaults follow the paper where it says (Adam, plateau schedule, all
/// loss weights 1, batch 2); the rest are ours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser steps in total (a resumed run continues up to this).
    pub steps: u64,
    pub batch_size: usize,
    pub adam: AdamConfig,
    pub plateau: PlateauConfig,
    /// Steps per scheduler period (the paper's epoch: 285 samples at batch 2 is 143 steps). The
    /// scheduler sees the period's mean training loss (the paper rounds each step's loss to two
    /// decimals first; we do not).
    pub period_steps: u64,
    pub loss_weights: LossWeights,
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// Steps between label-free validations (0: never).
    pub validate_every: u64,
    /// Held-out synthetic samples scored by the recomposition L1.
    pub validation_samples: u64,
    /// Sample worker threads (0: one less than the available cores, at least one).
    pub workers: usize,
    /// Finished samples waiting for the trainer (0: two batches).
    pub queue: usize,
    /// The profile the samples come from, recorded in the model card.
    pub profile: Option<String>,
    /// How the profile makes the network's input, recorded in the model card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<NetworkInput>,
    /// float16 autocast with a dynamic loss scale when training on CUDA (CPU stays float32).
    pub mixed_precision: bool,
    /// When the objective selects by validation: stop after this many validations without a
    /// better score (0: never).
    pub early_stop_validations: u32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 2,
            adam: AdamConfig::default(),
            plateau: PlateauConfig::default(),
            period_steps: 143,
            loss_weights: LossWeights::default(),
            checkpoint_every: 500,
            keep_checkpoints: 3,
            validate_every: 500,
            validation_samples: 8,
            workers: 0,
            queue: 0,
            profile: None,
            input: None,
            mixed_precision: true,
            early_stop_validations: 0,
        }
    }
}

impl TrainConfig {
    /// Records `profile` (its name and network input) for the model card.
    pub fn record_profile(&mut self, profile: &Profile) {
        self.profile = Some(profile.name.clone());
        self.input = Some(profile.network_input());
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(what.to_string()));
        if self.batch_size == 0 {
            return fail("batch_size must be at least 1");
        }
        if self.period_steps == 0 || self.checkpoint_every == 0 {
            return fail("period_steps and checkpoint_every must be at least 1");
        }
        if !(self.adam.lr > 0.0 && self.adam.lr.is_finite()) {
            return fail("the learning rate must be positive");
        }
        if !(0.0..1.0).contains(&self.adam.beta1) || !(0.0..1.0).contains(&self.adam.beta2) {
            return fail("Adam betas must be in [0, 1)");
        }
        if self.validate_every > 0 && !(1..=1 << 20).contains(&self.validation_samples) {
            return fail("validation needs between 1 and 2^20 validation samples");
        }
        if self
            .steps
            .checked_mul(self.batch_size as u64)
            .is_none_or(|n| n >= VALIDATION_BASE)
        {
            return fail("steps x batch_size exceeds the training sample indices (2^62)");
        }
        Ok(())
    }

    pub(crate) fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.saturating_sub(1).max(1)
    }

    pub(crate) fn queue_len(&self) -> usize {
        if self.queue > 0 {
            self.queue
        } else {
            2 * self.batch_size
        }
    }
}

/// The trainer's state beyond weights and moments, stored as the model card's `training`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub config: TrainConfig,
    pub lr: f64,
    pub plateau: Plateau,
    /// Sum and count of the training losses of the period in progress.
    pub period_loss_sum: f64,
    pub period_steps_done: u64,
    /// The loss scale of mixed-precision training (unused on the CPU).
    #[serde(default)]
    pub grad_scaler: GradScaler,
    /// The best validation's step and score, when the objective selects by validation.
    #[serde(default)]
    pub best_step: Option<u64>,
    #[serde(default)]
    pub best_score: Option<f64>,
    /// Validations since the best one (for `early_stop_validations`).
    #[serde(default)]
    pub validations_since_best: u32,
    /// The objective's own settings (e.g. fine-tuning's loss weights and augmentation).
    #[serde(default)]
    pub objective: serde_json::Value,
    /// Steps taken before Adam's moments last started from zero (a warm start from an exported
    /// model): the step count is this plus Adam's own updates.
    #[serde(default)]
    pub step_offset: u64,
    /// Adam's warm-up after its moments restarted on trained weights (0: none).
    #[serde(default)]
    pub warmup_updates: u64,
}

impl TrainState {
    pub fn new(config: &TrainConfig) -> TrainState {
        TrainState {
            config: config.clone(),
            lr: config.adam.lr,
            plateau: Plateau::new(config.plateau),
            period_loss_sum: 0.0,
            period_steps_done: 0,
            grad_scaler: GradScaler::default(),
            best_step: None,
            best_score: None,
            validations_since_best: 0,
            objective: serde_json::Value::Null,
            step_offset: 0,
            warmup_updates: 0,
        }
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Finished,
    /// The scheduler's early stop (long plateau or learning rate below the floor), or no better
    /// validation for `early_stop_validations` validations.
    EarlyStopped,
    /// Cancelled (Ctrl-C); a checkpoint was saved first.
    Cancelled,
    /// Stopped before the run's deadline (`--max-time`), after a checkpoint and the export.
    TimeLimit,
}

/// The result of [`pretrain`].
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub outcome: Outcome,
    /// Steps done in total, including those before a resume.
    pub step: u64,
    /// The step the run (re)started from.
    pub started_at: u64,
    pub losses: Option<LossValues>,
    pub validation: Option<f64>,
    /// The last recomposition L1 on unlabelled real scans, when some were given.
    pub validation_real: Option<f64>,
    /// The best validation's step and score, when the objective selects by validation (the
    /// run's model is that step's weights).
    pub best_step: Option<u64>,
    pub best_score: Option<f64>,
    /// The last validation's selection score.
    pub last_selection: Option<f64>,
    pub checkpoint: PathBuf,
    /// `RUN_DIR/model.safetensors`, with its card `model.json`.
    pub model: PathBuf,
    /// How fast this session's steps ran, and how long they waited for samples.
    pub throughput: Throughput,
}

/// The training steps of one session, timed apart from validations and checkpoints, the first
/// one left out (it allocates, and on CUDA lets cuDNN pick its kernels). Whether the data path
/// or the network bounds the speed (issue 17): the share of the time spent waiting for samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throughput {
    pub steps: u64,
    /// Seconds in those steps: waiting for samples, moving them to the device, forward,
    /// backward and the optimiser, up to reading the loss values (which waits for the GPU).
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for the synthesis workers.
    pub waiting_s: f64,
}

impl Throughput {
    pub fn steps_per_s(&self) -> Option<f64> {
        (self.steps > 0 && self.seconds > 0.0).then(|| self.steps as f64 / self.seconds)
    }

    /// The share of the timed steps' time spent waiting for samples.
    pub fn waiting_share(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.waiting_s / self.seconds)
    }

    /// One line for a log: steps per second and the share spent waiting for samples.
    pub fn summary(&self, batch: usize) -> Option<String> {
        let rate = self.steps_per_s()?;
        let waiting = 100.0 * self.waiting_share()?;
        Some(format!(
            "{rate:.2} steps/s ({:.1} samples/s) over {} timed steps; {waiting:.0} % of that \
             time waiting for synthetic samples ({})",
            rate * batch as f64,
            self.steps,
            if waiting < 5.0 {
                "the network bounds the speed"
            } else {
                "the data path bounds the speed: more --workers would help"
            }
        ))
    }
}
