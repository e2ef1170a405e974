//! Fine-tuning on a few labelled real cases (method.md section 9.2): the pretrained model keeps
//! training on patches of labelled scans with the supervised loss of
//! [`crate::losses::finetune_losses`] and the augmentation of method.md section 11, in the shared
//! loop ([`super::train`]): the same checkpoints, resume, metrics, progress and curves as
//! pretraining.
//!
//! Model selection: the mean Dice of the validation cases (segmented whole, as `layerseg segment`
//! does, and compared on their own grids) at every validation, the starting weights included.
//! The best validation's weights become the run's model, and the run stops early after
//! `early_stop_validations` validations without a better Dice. With no validation cases (a
//! single labelled case, say) the training cases are validated instead, which still catches a
//! run that gets worse but says nothing about generalisation; the report says so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use layerseg_core::augment::Augmentation;
use layerseg_core::datalist::{read_cases, Datalist, LabelRule, LabelledCase, LabelledScan};
use layerseg_core::preprocess::{preprocess, Prepared};
use layerseg_core::{Image, NoProgress, Profile};
use ndarray::{Array3, Zip};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::labelled::{GridCase, LabelledSource};
use super::run::{train, Objective, RunOptions, Validation};
use super::source::Batch;
use super::synthetic::invalid;
use super::{TrainConfig, TrainReport};
use crate::brain::BrainExtractor;
use crate::checkpoint::{latest_checkpoint, write_atomic};
use crate::error::{Error, Result};
use crate::inference::{segment_prepared, SegmentOptions};
use crate::losses::{finetune_losses, FinetuneWeights, Losses};
use crate::network::{BasicUNetConfig, Model};

/// Fine-tuning settings. The defaults suit 1 to 10 labelled cases: a learning rate ten times
/// below pretraining's (the weights are already trained), 500 steps at most, a validation every
/// 25 steps, and an early stop after 8 validations (200 steps) without a better Dice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// The loop's settings (steps, batch, Adam, schedule, checkpoints, validation interval).
    pub train: TrainConfig,
    pub weights: FinetuneWeights,
    pub augmentation: Augmentation,
    /// Patches centred on a tumour voxel (the rest anywhere): nnU-Net's 1/3 would do for many
    /// cases; with few, half keeps the small tumours in view.
    pub positive_fraction: f64,
    /// Seed of the patch positions and the augmentation.
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        let mut train = TrainConfig {
            steps: 500,
            period_steps: 25,
            checkpoint_every: 50,
            validate_every: 25,
            early_stop_validations: 8,
            ..TrainConfig::default()
        };
        train.adam.lr = 1e-3;
        // The validation Dice decides when to stop; the plateau only lowers the learning rate.
        train.plateau.early_stop_patience = 0;
        Self {
            train,
            weights: FinetuneWeights::default(),
            augmentation: Augmentation::default(),
            positive_fraction: 0.5,
            seed: 0,
        }
    }
}

impl FinetuneConfig {
    /// The defaults, with the profile's Adam betas, epsilon, weight decay and batch size.
    pub fn for_profile(profile: &Profile) -> FinetuneConfig {
        let mut config = FinetuneConfig::default();
        let t = &profile.training;
        config.train.batch_size = t.batch_size.max(1);
        config.train.adam.beta1 = t.betas[0];
        config.train.adam.beta2 = t.betas[1];
        config.train.adam.eps = t.eps;
        config.train.adam.weight_decay = t.weight_decay;
        config.train.record_profile(profile);
        config
    }
}

/// A validation case: preprocessed once, its truth on its own grid.
pub struct ValidationCase {
    pub name: String,
    image: Image,
    prepared: Prepared,
    truth: Array3<bool>,
}

impl ValidationCase {
    pub fn new(scan: &LabelledScan, profile: &Profile) -> Result<ValidationCase> {
        let prepared = preprocess(&scan.image, scan.organ.as_ref(), profile)
            .map_err(|e| invalid(Path::new(&scan.name), e))?;
        Ok(ValidationCase {
            name: scan.name.clone(),
            image: scan.image.clone(),
            prepared,
            truth: scan.label.data.mapv(|v| v > 0),
        })
    }

    /// The Dice of `model`'s segmentation of this case (1 when both are empty).
    pub fn dice(&self, model: &Model, profile: &Profile) -> Result<f64> {
        // The model's own mask, as `segment` gives it for a fine-tuned model (its card then says
        // so), for the starting weights too, so every validation compares like with like.
        let opts = SegmentOptions {
            raw_mask: true,
            ..SegmentOptions::default()
        };
        let seg = segment_prepared(
            &self.image,
            &self.prepared,
            profile,
            model,
            &opts,
            &NoProgress,
        )?;
        let (mut both, mut sum) = (0u64, 0u64);
        Zip::from(&seg.mask.data)
            .and(&self.truth)
            .for_each(|&p, &t| {
                let p = p > 0;
                both += u64::from(p && t);
                sum += u64::from(p) + u64::from(t);
            });
        Ok(if sum == 0 {
            1.0
        } else {
            2.0 * both as f64 / sum as f64
        })
    }
}

/// The fine-tuning objective; `history` keeps every validation's mean Dice.
struct Finetuning<'a> {
    weights: FinetuneWeights,
    validation: &'a [ValidationCase],
    profile: &'a Profile,
    init: &'a Path,
    record: serde_json::Value,
    history: Mutex<Vec<f64>>,
}

impl Objective for Finetuning<'_> {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn initial_weights(&self) -> Option<&Path> {
        Some(self.init)
    }

    fn losses(&self, pred: &Tensor, batch: &Batch) -> Result<Losses> {
        finetune_losses(pred, &batch.image, &batch.mask, &self.weights)
    }

    fn validate(&self, model: &Model, _device: Device, _batch: usize) -> Result<Validation> {
        if self.validation.is_empty() {
            return Ok(Validation::default());
        }
        let mut per_case = serde_json::Map::new();
        let mut total = 0.0;
        for case in self.validation {
            let dice = case.dice(model, self.profile)?;
            per_case.insert(case.name.clone(), dice.into());
            total += dice;
        }
        let mean = total / self.validation.len() as f64;
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.push(mean);
        Ok(Validation {
            scores: vec![("validation_dice", mean)],
            detail: Some(("validation_cases", per_case.into())),
            card_validation: None,
            selection: Some(mean),
        })
    }

    fn selects_by_validation(&self) -> bool {
        !self.validation.is_empty()
    }

    fn record(&self) -> serde_json::Value {
        self.record.clone()
    }
}

/// Fine-tunes the weights at `init` on `train` cases (already on the network grid), selecting
/// by the Dice of `validation`, into `run.run_dir`. Returns the loop's report and the mean Dice
/// of the starting weights (when validated in this session).
pub fn finetune_cases(
    train_cases: Vec<GridCase>,
    validation: &[ValidationCase],
    profile: &Profile,
    net: &BasicUNetConfig,
    init: &Path,
    config: &FinetuneConfig,
    run: &RunOptions,
) -> Result<(TrainReport, Option<f64>)> {
    let source = LabelledSource::new(
        train_cases,
        profile.inference.patch_size,
        config.augmentation,
        config.positive_fraction,
        config.seed,
    )?;
    let record = serde_json::json!({
        "task": "finetune",
        "init": init,
        "weights": config.weights,
        "augmentation": config.augmentation,
        "positive_fraction": config.positive_fraction,
        "seed": config.seed,
    });
    let objective = Finetuning {
        weights: config.weights,
        validation,
        profile,
        init,
        record,
        history: Mutex::new(Vec::new()),
    };
    let mut train_config = config.train.clone();
    if validation.is_empty() {
        train_config.validate_every = 0;
    }
    let report = train(Arc::new(source), net, &train_config, run, &objective)?;
    let history = objective.history.into_inner().unwrap_or_default();
    let at_start = (report.started_at == 0)
        .then(|| history.first().copied())
        .flatten();
    Ok((report, at_start))
}

/// One fine-tuning run of [`finetune`]: a fold, or the whole datalist.
#[derive(Clone, Debug, Serialize)]
pub struct FoldResult {
    /// The fold, in a cross-validation.
    pub fold: Option<usize>,
    pub run_dir: PathBuf,
    pub training_cases: Vec<String>,
    pub validation_cases: Vec<String>,
    /// True when there were no validation cases and the training cases were validated.
    pub validated_on_training: bool,
    /// Mean validation Dice of the starting weights (zero-shot), when measured in this session.
    pub start_dice: Option<f64>,
    /// The best mean validation Dice and its step: the run's model.
    pub best_dice: Option<f64>,
    pub best_step: Option<u64>,
    pub steps: u64,
    pub outcome: super::Outcome,
    pub model: PathBuf,
}

/// The result of [`finetune`], also written to `OUT/finetune.json`.
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneReport {
    pub folds: Vec<FoldResult>,
    /// The mean of the folds' best validation Dice.
    pub mean_dice: Option<f64>,
}

/// The summary file of [`finetune`] in the output folder.
pub const FINETUNE_REPORT: &str = "finetune.json";

/// What to fine-tune on: a datalist, how its labels read, and an optional cross-validation.
pub struct FinetuneData<'a> {
    pub datalist: &'a Datalist,
    pub labels: &'a LabelRule,
    /// `Some(n)`: `n`-fold cross-validation over the training cases, each fold in `OUT/fold-K`.
    pub folds: Option<usize>,
    /// With `folds`, run only this fold.
    pub fold: Option<usize>,
    /// Extracts the brain of each case without an organ mask, when the profile asks for it
    /// (`inference.brain_extraction`), so that training and validation crop and search the way
    /// `layerseg segment` does; an implausible brain is a warning and leaves the case without.
    pub brain_extractor: Option<&'a BrainExtractor>,
}

/// Fine-tunes `init` on `data` into `run.run_dir`, once or per fold (`fold-K` inside it); every
/// input is read and checked before any training starts (all missing files, grid mismatches and
/// bad label maps in one error). `run.progress` gets one phase per fold.
pub fn finetune(
    data: &FinetuneData,
    profile: &Profile,
    net: &BasicUNetConfig,
    init: &Path,
    config: &FinetuneConfig,
    run: &RunOptions,
) -> Result<FinetuneReport> {
    let (out, resume, progress) = (run.run_dir, run.resume, run.progress);
    let datalist = data.datalist;
    datalist.check_files()?;
    let plans: Vec<(Option<usize>, Vec<LabelledCase>, Vec<LabelledCase>)> = match data.folds {
        None => {
            if data.fold.is_some() {
                return Err(Error::Config(
                    "a fold needs the number of folds".to_string(),
                ));
            }
            vec![(None, datalist.training.clone(), datalist.validation.clone())]
        }
        Some(n) => {
            let folds: Vec<usize> = match data.fold {
                Some(k) => vec![k],
                None => (0..n).collect(),
            };
            folds
                .into_iter()
                .map(|k| {
                    let (t, v) = datalist.split(n, k)?;
                    Ok((Some(k), t, v))
                })
                .collect::<Result<_>>()?
        }
    };
    let run_dir = |fold: &Option<usize>| match fold {
        Some(k) => out.join(format!("fold-{k}")),
        None => out.to_path_buf(),
    };
    if !resume {
        for (fold, _, _) in &plans {
            if let Some(checkpoint) = latest_checkpoint(&run_dir(fold))? {
                return Err(Error::Checkpoint {
                    path: checkpoint.dir,
                    reason: "this run folder already has checkpoints: resume it, or choose \
                             another output folder"
                        .to_string(),
                });
            }
        }
    }
    // Every case once, checked before anything trains.
    let mut all: Vec<LabelledCase> = Vec::new();
    for (_, t, v) in &plans {
        for case in t.iter().chain(v) {
            if !all.contains(case) {
                all.push(case.clone());
            }
        }
    }
    progress.message(&format!("reading {} labelled case(s)", all.len()));
    let mut scans = read_cases(&datalist.origin, &all, data.labels)?;
    if let Some(extractor) = data
        .brain_extractor
        .filter(|_| profile.inference.brain_extraction)
    {
        for (case, scan) in all.iter().zip(scans.iter_mut()) {
            let organ = scan.organ.take();
            scan.organ = extractor.organ_or_brain(&scan.image, organ, &case.image, progress)?;
        }
    }
    let scan_of = |case: &LabelledCase| {
        let i = all.iter().position(|c| c == case).expect("read above");
        &scans[i]
    };

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut results = Vec::new();
    for (fold, train_cases, validation_cases) in &plans {
        if progress.cancelled() {
            break;
        }
        let run_dir = run_dir(fold);
        let validated_on_training = validation_cases.is_empty();
        let validate_on = if validated_on_training {
            progress.message(
                "no validation cases: validating on the training cases (this selects against \
                 getting worse, not for generalisation)",
            );
            train_cases
        } else {
            validation_cases
        };
        let grid = train_cases
            .iter()
            .map(|c| GridCase::from_scan(scan_of(c), profile))
            .collect::<Result<Vec<_>>>()?;
        let validation = validate_on
            .iter()
            .map(|c| ValidationCase::new(scan_of(c), profile))
            .collect::<Result<Vec<_>>>()?;
        let names = |cases: &[LabelledCase]| -> Vec<String> {
            cases.iter().map(|c| c.name.clone()).collect()
        };
        let fold_run = RunOptions {
            run_dir: &run_dir,
            data: serde_json::json!({
                "training": names(train_cases),
                "validation": names(validate_on),
            }),
            ..run.clone()
        };
        let (report, start_dice) =
            finetune_cases(grid, &validation, profile, net, init, config, &fold_run)?;
        results.push(FoldResult {
            fold: *fold,
            run_dir: run_dir.clone(),
            training_cases: names(train_cases),
            validation_cases: names(validate_on),
            validated_on_training,
            start_dice,
            best_dice: report.best_score,
            best_step: report.best_step,
            steps: report.step,
            outcome: report.outcome,
            model: report.model,
        });
        if report.outcome == super::Outcome::Cancelled {
            break;
        }
    }
    let dice: Vec<f64> = results.iter().filter_map(|r| r.best_dice).collect();
    let summary = FinetuneReport {
        mean_dice: (!dice.is_empty()).then(|| dice.iter().sum::<f64>() / dice.len() as f64),
        folds: results,
    };
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| Error::Config(format!("fine-tuning report: {e}")))?;
    let path = out.join(FINETUNE_REPORT);
    write_atomic(&path, |tmp| {
        std::fs::write(tmp, &json).map_err(|e| Error::io(tmp, e))
    })?;
    Ok(summary)
}
