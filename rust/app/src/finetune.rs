//! A fine-tuning request: the model and profile resolved, the settings built (`config` file over
//! the profile's defaults, then the request's options), then the run.

use anyhow::{Context, Result};
use layerseg_core::datalist::{Datalist, LabelRule};
use layerseg_core::{Profile, Progress};
use layerseg_torch::train::{finetune, FinetuneConfig, FinetuneData, FinetuneReport, RunOptions};
use layerseg_torch::{select_device, DeviceChoice};
use std::path::PathBuf;

use crate::models;

/// Everything `layerseg finetune` and `layerseg.finetune` are asked; `None` means the default
/// (the config file's, else the profile's).
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneRequest {
    /// A MONAI datalist JSON, or a folder of image/label pairs.
    pub datalist: PathBuf,
    /// The run folder.
    pub out: PathBuf,
    /// Default: the model card's profile, else brain-mri.
    pub profile: Option<String>,
    /// Default: the model shipped for the profile.
    pub model: Option<PathBuf>,
    pub folds: Option<usize>,
    pub fold: Option<usize>,
    /// Label values that mean tumour; empty: labels must be 0/1.
    pub label_values: Vec<u8>,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub validate_every: Option<u64>,
    pub patience: Option<u32>,
    pub checkpoint_every: Option<u64>,
    pub augmentation: bool,
    /// All fine-tuning settings as JSON (`FinetuneConfig`); the options above override it.
    pub config: Option<PathBuf>,
    pub device: DeviceChoice,
    pub resume: bool,
    pub seed: Option<u64>,
    pub workers: usize,
}

impl FinetuneRequest {
    /// The settings: the `config` file over the profile's defaults, then the options.
    pub fn settings(&self, profile: &Profile) -> Result<FinetuneConfig> {
        let mut config = match &self.config {
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
        t.steps = self.steps.unwrap_or(t.steps);
        t.batch_size = self.batch.unwrap_or(t.batch_size);
        t.adam.lr = self.lr.unwrap_or(t.adam.lr);
        t.validate_every = self.validate_every.unwrap_or(t.validate_every);
        t.early_stop_validations = self.patience.unwrap_or(t.early_stop_validations);
        t.checkpoint_every = self.checkpoint_every.unwrap_or(t.checkpoint_every);
        t.workers = self.workers;
        t.record_profile(profile);
        t.validate()?;
        config.seed = self.seed.unwrap_or(config.seed);
        if !self.augmentation {
            config.augmentation = layerseg_core::augment::Augmentation::none();
        }
        Ok(config)
    }

    /// Resolves the model and profile, checks the settings, reads and checks every case, trains
    /// and draws `curves.png` in each run folder.
    pub fn run(&self, progress: &dyn Progress) -> Result<FinetuneReport> {
        if self.fold.is_some() && self.folds.is_none() {
            anyhow::bail!("a fold needs the number of folds (CLI --folds, Python folds=)");
        }
        let (model_file, profile) =
            models::resolve_with_profile(self.model.as_deref(), self.profile.as_deref())?;
        let net = model_file.config(&profile);
        net.validate()?;
        let config = self.settings(&profile)?;
        let device = select_device(self.device)?;
        let datalist = Datalist::load(&self.datalist)?;
        let labels = LabelRule {
            values: self.label_values.clone(),
        };
        let extractor = if profile.inference.brain_extraction {
            Some(models::brain_extractor(device)?)
        } else {
            None
        };
        let data = FinetuneData {
            datalist: &datalist,
            labels: &labels,
            folds: self.folds,
            fold: self.fold,
            brain_extractor: extractor.as_ref(),
        };
        let run = RunOptions {
            resume: self.resume,
            ..RunOptions::new(&self.out, device, progress)
        };
        let report = finetune(&data, &profile, &net, &model_file.weights, &config, &run)?;
        for fold in &report.folds {
            crate::curves::draw_run(&fold.run_dir)?;
        }
        Ok(report)
    }
}

/// JSON merge: objects key by key, anything else replaced.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}
