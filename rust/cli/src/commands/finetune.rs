use anyhow::{Context, Result};
use layerseg_core::datalist::{Datalist, LabelRule};
use layerseg_core::Progress;
use layerseg_torch::train::{
    finetune, FinetuneConfig, FinetuneData, FinetuneReport, Outcome, RunOptions, FINETUNE_REPORT,
    METRICS_FILE,
};
use layerseg_torch::{select_device, DeviceChoice};
use std::path::{Path, PathBuf};

use super::pretrain::TrainProgress;
use crate::models;

/// `layerseg finetune`: train a pretrained model further on a few labelled real cases.
///
/// The cases come from a MONAI datalist (`{"training": [{"image": ..., "label": ...}],
/// "validation": [...]}`, paths relative to the file) or a folder (`imagesTr/` + `labelsTr/`,
/// or one folder per case with `image.nii.gz` and `label.nii.gz`). Every case is read and
/// checked first: one error lists every missing file, every label map on another grid than its
/// image and every label map with values other than 0 and 1 (name the tumour values with
/// `--label-value`). Loss: Dice plus cross-entropy on the mask, with the healthy and tumour
/// layers kept consistent with the image. Patches: half centred on tumour. Augmentation:
/// noise, blur, brightness, contrast, low resolution, gamma and mirroring.
///
/// The validation cases' Dice (the training cases' when there are none) is measured before the
/// first step and every `--validate-every` steps; the best weights become `OUT/model.safetensors`
/// and the run stops after `--patience` validations without improvement. With `--folds N` the
/// training cases are split into N folds, each trained in `OUT/fold-K` (`--fold K`: only that
/// one), and `OUT/finetune.json` has the per-fold Dice. Checkpoints, `metrics.jsonl`,
/// `curves.png`, Ctrl-C and `--resume` work as in `pretrain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A MONAI datalist JSON, or a folder of image/label pairs.
    #[arg(long)]
    pub datalist: PathBuf,
    /// The run folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Built-in profile name or a profile JSON; default: the model card's profile, else brain-mri.
    #[arg(long)]
    pub profile: Option<String>,
    /// The weights to start from; default: the model shipped for the profile.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Cross-validation: split the training cases into this many folds.
    #[arg(long)]
    pub folds: Option<usize>,
    /// With --folds, train only this fold (0-based).
    #[arg(long, requires = "folds")]
    pub fold: Option<usize>,
    /// Label values that mean tumour (e.g. --label-value 2,3); default: labels must be 0/1.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub label_value: Vec<u8>,
    /// Optimiser steps at most [default: 500].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Patches per step [default: the profile's batch_size].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate [default: 1e-3].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Steps between validations [default: 25].
    #[arg(long)]
    pub validate_every: Option<u64>,
    /// Stop after this many validations without a better Dice (0: never) [default: 8].
    #[arg(long)]
    pub patience: Option<u32>,
    /// Steps between checkpoints [default: 50].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Train without augmentation.
    #[arg(long)]
    pub no_augmentation: bool,
    /// All fine-tuning settings as JSON (`FinetuneConfig`: train, weights, augmentation,
    /// positive_fraction, seed); the options above override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the network runs: auto (CUDA when a GPU is visible, else CPU), cpu, or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Continue from the newest checkpoint of each run folder.
    #[arg(long)]
    pub resume: bool,
    /// Seed of the patch positions and the augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Patch worker threads (0: one less than the cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

/// The settings: `--config` over the profile's defaults, then the options.
fn settings(args: &Args, profile: &layerseg_core::Profile) -> Result<FinetuneConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let mut base = serde_json::to_value(FinetuneConfig::for_profile(profile))?;
            merge(
                &mut base,
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a fine-tuning config", path.display()))?,
            );
            serde_json::from_value(base)
                .with_context(|| format!("{}: not a fine-tuning config", path.display()))?
        }
        None => FinetuneConfig::for_profile(profile),
    };
    let t = &mut config.train;
    t.steps = args.steps.unwrap_or(t.steps);
    t.batch_size = args.batch.unwrap_or(t.batch_size);
    t.adam.lr = args.lr.unwrap_or(t.adam.lr);
    t.validate_every = args.validate_every.unwrap_or(t.validate_every);
    t.early_stop_validations = args.patience.unwrap_or(t.early_stop_validations);
    t.checkpoint_every = args.checkpoint_every.unwrap_or(t.checkpoint_every);
    t.workers = args.workers;
    t.profile = Some(profile.name.clone());
    t.validate()?;
    config.seed = args.seed.unwrap_or(config.seed);
    if args.no_augmentation {
        config.augmentation = layerseg_core::augment::Augmentation::none();
    }
    Ok(config)
}

/// JSON merge: objects key by key, anything else replaced.
pub(crate) fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

pub fn run(args: Args) -> Result<()> {
    // One curve file per run folder: redrawn at checkpoints when there is a single run, at the
    // end of each fold otherwise.
    let every = match (args.folds, args.checkpoint_every) {
        (Some(_), _) => u64::MAX,
        (None, Some(n)) => n,
        (None, None) => FinetuneConfig::default().train.checkpoint_every,
    };
    let progress = TrainProgress::new(args.out.join("curves.png"), every);
    let report = execute(&args, &progress)?;
    print_report(&report, &args.out);
    Ok(())
}

/// Everything `layerseg finetune` does but printing: also the Python API's `finetune`.
pub fn execute(args: &Args, progress: &dyn Progress) -> Result<FinetuneReport> {
    let (model_file, profile) =
        models::resolve_with_profile(args.model.as_deref(), args.profile.as_deref())?;
    let net = model_file.config(&profile);
    net.validate()?;
    let config = settings(args, &profile)?;
    let device = select_device(args.device)?;
    let datalist = Datalist::load(&args.datalist)?;
    let labels = LabelRule {
        values: args.label_value.clone(),
    };
    let extractor = if profile.inference.brain_extraction {
        Some(models::brain_extractor(device)?)
    } else {
        None
    };
    let data = FinetuneData {
        datalist: &datalist,
        labels: &labels,
        folds: args.folds,
        fold: args.fold,
        brain_extractor: extractor.as_ref(),
    };
    let run = RunOptions {
        resume: args.resume,
        ..RunOptions::new(&args.out, device, progress)
    };
    let report = finetune(&data, &profile, &net, &model_file.weights, &config, &run)?;
    draw_curves(&report)?;
    Ok(report)
}

/// Draws `curves.png` in each run folder of the report.
pub fn draw_curves(report: &FinetuneReport) -> Result<()> {
    for fold in &report.folds {
        let metrics = fold.run_dir.join(METRICS_FILE);
        crate::curves::write_curves(&metrics, &fold.run_dir.join("curves.png"))?;
    }
    Ok(())
}

fn print_report(report: &FinetuneReport, out: &Path) {
    let dice = |d: Option<f64>| d.map_or("-".to_string(), |d| format!("{d:.4}"));
    for fold in &report.folds {
        let name = fold.fold.map_or("run".to_string(), |k| format!("fold {k}"));
        let on = if fold.validated_on_training {
            " (on the training cases)"
        } else {
            ""
        };
        let how = match fold.outcome {
            Outcome::Finished => "finished",
            Outcome::EarlyStopped => "stopped early",
            Outcome::Cancelled => "cancelled; continue with --resume",
            Outcome::TimeLimit => "stopped at the time limit; continue with --resume",
        };
        println!(
            "{name}: validation Dice {} at step {}{on}, from {} before fine-tuning; {how} at step {}; model {}",
            dice(fold.best_dice),
            fold.best_step.map_or("-".to_string(), |s| s.to_string()),
            dice(fold.start_dice),
            fold.steps,
            fold.model.display()
        );
    }
    if report.folds.len() > 1 {
        println!(
            "mean validation Dice over {} folds: {}",
            report.folds.len(),
            dice(report.mean_dice)
        );
    }
    println!("report {}", out.join(FINETUNE_REPORT).display());
}
