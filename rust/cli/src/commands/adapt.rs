use anyhow::{bail, Result};
use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::Progress;
use layerseg_torch::train::{
    adapt, list_scans, pair_masks, AdaptConfig, AdaptReport, RunOptions, ScanInput, ADAPT_REPORT,
    METRICS_FILE,
};
use layerseg_torch::{select_device, DeviceChoice};
use std::path::PathBuf;

use super::pretrain::TrainProgress;
use crate::models;

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
/// starting model and `--seed`.
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
    /// Built-in profile name or a profile JSON; default: the model card's profile, else brain-mri.
    #[arg(long)]
    pub profile: Option<String>,
    /// The weights to start from; default: the model shipped for the profile.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Self-training rounds [default: the profile's adaptation.rounds].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Optimiser steps per round [default: the profile's adaptation.steps_per_round].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Patches per step [default: the profile's batch_size].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Where the network runs: auto (CUDA when a GPU is visible, else CPU), cpu, or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Seed of the patch positions and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Patch worker threads (0: one less than the cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

/// Reads every scan (and organ mask); one error lists every scan that cannot be used.
pub fn read_scans(images: &[PathBuf], organ_masks: &[PathBuf]) -> Result<Vec<ScanInput>> {
    let paths = list_scans(images)?;
    if paths.is_empty() {
        bail!("no scans found in {}", join(images));
    }
    let masks = pair_masks(&paths, organ_masks)?;
    let opts = ReadOptions::default();
    let (mut scans, mut problems) = (Vec::new(), Vec::new());
    for (i, path) in paths.iter().enumerate() {
        let image = read_image(path, &opts);
        let organ = masks.get(i).map(|m| read_labels(m, &opts)).transpose();
        match (image, organ) {
            (Ok((image, _)), Ok(organ)) => {
                let organ = organ.map(|(m, _)| m);
                if let Some(difference) = organ.as_ref().and_then(|m| image.grid_difference(m)) {
                    problems.push(format!(
                        "{}: the organ mask is on another grid than its scan {}: {difference}",
                        masks[i].display(),
                        path.display()
                    ));
                    continue;
                }
                scans.push(ScanInput {
                    name: path.clone(),
                    image,
                    organ,
                });
            }
            (image, organ) => {
                problems.extend(image.err().map(|e| e.to_string()));
                problems.extend(organ.err().map(|e| e.to_string()));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} of {} scans cannot be used: {}",
            problems.len(),
            paths.len(),
            problems.join("; ")
        );
    }
    Ok(scans)
}

fn join(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

pub fn run(args: Args) -> Result<()> {
    let progress = TrainProgress::new(args.out.join("curves.png"), u64::MAX);
    let report = execute(&args, &progress)?;
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
        args.out.join(ADAPT_REPORT).display()
    );
    Ok(())
}

/// Everything `layerseg adapt` does but printing: also the Python API's `adapt`.
pub fn execute(args: &Args, progress: &dyn Progress) -> Result<AdaptReport> {
    let (model_file, profile) =
        models::resolve_with_profile(args.model.as_deref(), args.profile.as_deref())?;
    let net = model_file.config(&profile);
    net.validate()?;
    let mut config = AdaptConfig::for_profile(&profile);
    config.rounds = args.rounds.unwrap_or(config.rounds);
    let t = &mut config.finetune.train;
    t.steps = args.steps.unwrap_or(t.steps);
    t.checkpoint_every = t.steps.max(1);
    t.batch_size = args.batch.unwrap_or(t.batch_size);
    t.workers = args.workers;
    t.validate()?;
    config.finetune.seed = args.seed;
    let device = select_device(args.device)?;
    let mut scans = read_scans(&args.images, &args.organ_masks)?;
    if profile.inference.brain_extraction && scans.iter().any(|s| s.organ.is_none()) {
        let extractor = models::brain_extractor(device)?;
        for scan in &mut scans {
            let organ = scan.organ.take();
            scan.organ = extractor
                .organ_or_brain(&scan.image, organ, &scan.name, progress)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
    }
    let run = RunOptions::new(&args.out, device, progress);
    let report = adapt(scans, &profile, &net, &model_file.weights, &config, &run)?;
    draw_curves(&report)?;
    Ok(report)
}

/// Draws `curves.png` in each round's folder.
pub fn draw_curves(report: &AdaptReport) -> Result<()> {
    for round in &report.rounds {
        let metrics = round.run_dir.join(METRICS_FILE);
        crate::curves::write_curves(&metrics, &round.run_dir.join("curves.png"))?;
    }
    Ok(())
}
