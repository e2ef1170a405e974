use anyhow::Result;
use layerseg_app::adapt::AdaptRequest;
use layerseg_torch::train::ADAPT_REPORT;
use std::path::PathBuf;

use super::pretrain::TrainProgress;
use crate::args::{DeviceArg, ModelArgs, TrainingArgs};

/// `layerseg adapt`: self-train a model on a site's unlabelled scans (the paper's Sim2Real step).
///
/// Each round the model segments every scan; a voxel is pseudo-tumour where the mask says
/// tumour and the residual between the scan and the predicted healthy layer agrees; scans whose
/// recomposition error is low are kept, and the model fine-tunes on them. The rule and its
/// thresholds are the profile's `adaptation` section. Label-free scores (recomposition L1,
/// mask/residual agreement, tumour fraction) are printed before and after each round.
///
/// Writes `OUT/round-R/` per round (checkpoints, `metrics.jsonl`, `curves.png`, the round's
/// model and its pseudo-labels in `pseudo/`), `OUT/model.safetensors` (the last round's model)
/// and `OUT/adapt.json` (every score). The result is a function of the scans, the profile, the
/// starting model and `--seed`. `--steps` defaults to the profile's adaptation.steps_per_round.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unlabelled scans: NIfTI files, folders of them, or .txt lists (one path a line).
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// Organ masks paired with the scans in order, or one folder with a mask of the same file
    /// name per scan (for profiles that crop to an organ).
    #[arg(long, num_args = 1..)]
    pub organ_masks: Vec<PathBuf>,
    /// The output folder (created if missing; its round folders must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Self-training rounds [default: the profile's adaptation.rounds].
    #[arg(long)]
    pub rounds: Option<usize>,
    #[command(flatten)]
    pub training: TrainingArgs,
    #[command(flatten)]
    pub device: DeviceArg,
}

impl From<Args> for AdaptRequest {
    fn from(args: Args) -> AdaptRequest {
        AdaptRequest {
            images: args.images,
            organ_masks: args.organ_masks,
            out: args.out,
            profile: args.model.profile,
            model: args.model.model,
            rounds: args.rounds,
            steps: args.training.steps,
            batch: args.training.batch,
            device: args.device.device,
            seed: args.training.seed.unwrap_or(0),
            workers: args.training.workers,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let progress = TrainProgress::new(args.out.join("curves.png"), u64::MAX);
    let request = AdaptRequest::from(args);
    let report = request.run(&progress)?;
    for round in &report.rounds {
        let (b, a) = (&round.before, &round.after);
        println!(
            "round {}: kept {} of {} scans; recomposition L1 {:.4} -> {:.4}, mask/residual agreement {:.3} -> {:.3}, tumour fraction {:.4} -> {:.4}",
            round.round,
            round.kept.len(),
            b.cases.len(),
            b.recomposition_l1,
            a.recomposition_l1,
            b.agreement,
            a.agreement,
            b.tumour_fraction,
            a.tumour_fraction
        );
    }
    println!(
        "model {}; report {}",
        report.model.display(),
        request.out.join(ADAPT_REPORT).display()
    );
    Ok(())
}
