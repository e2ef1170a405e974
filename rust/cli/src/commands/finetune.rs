use anyhow::Result;
use layerseg_app::finetune::FinetuneRequest;
use layerseg_torch::train::{FinetuneConfig, FinetuneReport, Outcome, FINETUNE_REPORT};
use std::path::{Path, PathBuf};

use super::pretrain::TrainProgress;
use crate::args::{DeviceArg, ModelArgs, TrainingArgs};

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
/// `curves.png`, Ctrl-C and `--resume` work as in `pretrain`. `--steps` defaults to 500.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A MONAI datalist JSON, or a folder of image/label pairs.
    #[arg(long)]
    pub datalist: PathBuf,
    /// The run folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cross-validation: split the training cases into this many folds.
    #[arg(long)]
    pub folds: Option<usize>,
    /// With --folds, train only this fold (0-based).
    #[arg(long, requires = "folds")]
    pub fold: Option<usize>,
    /// Label values that mean tumour (e.g. --label-value 2,3); default: labels must be 0/1.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub label_value: Vec<u8>,
    #[command(flatten)]
    pub training: TrainingArgs,
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
    #[command(flatten)]
    pub device: DeviceArg,
    /// Continue from the newest checkpoint of each run folder.
    #[arg(long)]
    pub resume: bool,
}

impl From<Args> for FinetuneRequest {
    fn from(args: Args) -> FinetuneRequest {
        FinetuneRequest {
            datalist: args.datalist,
            out: args.out,
            profile: args.model.profile,
            model: args.model.model,
            folds: args.folds,
            fold: args.fold,
            label_values: args.label_value,
            steps: args.training.steps,
            batch: args.training.batch,
            lr: args.lr,
            validate_every: args.validate_every,
            patience: args.patience,
            checkpoint_every: args.checkpoint_every,
            augmentation: !args.no_augmentation,
            config: args.config,
            device: args.device.device,
            resume: args.resume,
            seed: args.training.seed,
            workers: args.training.workers,
        }
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
    let request = FinetuneRequest::from(args);
    let report = request.run(&progress)?;
    print_report(&report, &request.out);
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
