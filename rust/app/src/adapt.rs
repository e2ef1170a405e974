//! A self-training request: the model and profile resolved, every scan read and checked, brains
//! extracted where the profile asks for them, then the rounds.

use anyhow::{bail, Result};
use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::Progress;
use layerseg_torch::train::{
    adapt, list_scans, pair_masks, AdaptConfig, AdaptReport, RunOptions, ScanInput,
};
use layerseg_torch::{select_device, DeviceChoice};
use std::path::PathBuf;

use crate::models;

/// Everything `layerseg adapt` and `layerseg.adapt` are asked; `None` means the profile's
/// setting.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptRequest {
    /// Unlabelled scans: files, folders or .txt lists.
    pub images: Vec<PathBuf>,
    /// Organ masks paired with the scans, or one folder of them.
    pub organ_masks: Vec<PathBuf>,
    /// The output folder.
    pub out: PathBuf,
    /// Default: the model card's profile, else brain-mri.
    pub profile: Option<String>,
    /// Default: the model shipped for the profile.
    pub model: Option<PathBuf>,
    pub rounds: Option<usize>,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub device: DeviceChoice,
    pub seed: u64,
    pub workers: usize,
}

impl AdaptRequest {
    /// Resolves the model and profile, reads every scan, runs the rounds and draws `curves.png`
    /// in each round's folder.
    pub fn run(&self, progress: &dyn Progress) -> Result<AdaptReport> {
        let (model_file, profile) =
            models::resolve_with_profile(self.model.as_deref(), self.profile.as_deref())?;
        let net = model_file.config(&profile);
        net.validate()?;
        let mut config = AdaptConfig::for_profile(&profile);
        config.rounds = self.rounds.unwrap_or(config.rounds);
        let t = &mut config.finetune.train;
        t.steps = self.steps.unwrap_or(t.steps);
        t.checkpoint_every = t.steps.max(1);
        t.batch_size = self.batch.unwrap_or(t.batch_size);
        t.workers = self.workers;
        t.validate()?;
        config.finetune.seed = self.seed;
        let device = select_device(self.device)?;
        let mut scans = read_scans(&self.images, &self.organ_masks)?;
        if profile.inference.brain_extraction && scans.iter().any(|s| s.organ.is_none()) {
            let extractor = models::brain_extractor(device)?;
            for scan in &mut scans {
                let organ = scan.organ.take();
                scan.organ = extractor
                    .organ_or_brain(&scan.image, organ, &scan.name, progress)
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
        }
        let run = RunOptions::new(&self.out, device, progress);
        let report = adapt(scans, &profile, &net, &model_file.weights, &config, &run)?;
        for round in &report.rounds {
            crate::curves::draw_run(&round.run_dir)?;
        }
        Ok(report)
    }
}

/// Reads every scan (and organ mask); one error lists every scan that cannot be used.
fn read_scans(images: &[PathBuf], organ_masks: &[PathBuf]) -> Result<Vec<ScanInput>> {
    let paths = list_scans(images)?;
    if paths.is_empty() {
        bail!("no scans found in {}", crate::join(images));
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
