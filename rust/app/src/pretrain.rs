//! A pretraining request: checked (profile, network, settings, run folder, warm start, scans)
//! before any scan is resampled, then run.

use anyhow::{bail, Result};
use layerseg_core::{Profile, Progress};
use layerseg_torch::checkpoint::{latest_checkpoint, Checkpoint};
use layerseg_torch::train::{
    list_scans, load_real_validation, pair_masks, pretrain_with_real, synthesis_record, RunOptions,
    SynthesisSource, TrainConfig, TrainReport,
};
use layerseg_torch::{select_device, BasicUNetConfig, Device, DeviceChoice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything `layerseg pretrain` and `layerseg.pretrain` are asked; `None` means the
/// profile's setting.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainRequest {
    /// A built-in profile name or a profile JSON file.
    pub profile: String,
    /// Healthy scans: files, folders or .txt lists.
    pub healthy: Vec<PathBuf>,
    /// Organ masks paired with the healthy scans, or one folder of them.
    pub organ_masks: Vec<PathBuf>,
    /// Scans to take tumour texture from; empty: the healthy scans.
    pub textures: Vec<PathBuf>,
    /// The run folder.
    pub out: PathBuf,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub device: DeviceChoice,
    /// Continue from the newest checkpoint in the run folder.
    pub resume: bool,
    /// `shipped`, a model file or a checkpoint folder to continue training from.
    pub init_from: Option<PathBuf>,
    /// Stop cleanly before this moment.
    pub deadline: Option<Instant>,
    /// Unlabelled real scans scored at every validation.
    pub validate_on: Vec<PathBuf>,
    /// Steps between checkpoints, validations and curve redraws.
    pub checkpoint_every: u64,
    /// Synthesis worker threads (0: one less than the cores).
    pub workers: usize,
    pub seed: u64,
    /// Network widths; `None`: the profile's.
    pub features: Option<[i64; 6]>,
}

/// A checked request, its scans listed: [`Pretraining::run`] resamples them and trains.
#[derive(Debug)]
pub struct Pretraining {
    pub request: PretrainRequest,
    pub profile: Profile,
    pub net: BasicUNetConfig,
    pub config: TrainConfig,
    pub device: Device,
    /// The weights the run starts from (`init_from` resolved).
    pub warm_start: Option<PathBuf>,
    pub healthy: Vec<PathBuf>,
    pub masks: Vec<PathBuf>,
    pub textures: Vec<PathBuf>,
    pub validate_on: Vec<PathBuf>,
}

impl PretrainRequest {
    /// Checks everything that can be checked without reading a scan, in this order: profile,
    /// device, network, settings, run folder, warm start, scan lists.
    pub fn prepare(self) -> Result<Pretraining> {
        let profile = Profile::load(&self.profile)?;
        let device = select_device(self.device)?;
        let net = BasicUNetConfig {
            features: self
                .features
                .unwrap_or(profile.network.features.map(|f| f as i64)),
            ..BasicUNetConfig::default()
        };
        net.validate()?;
        let config = self.config(&profile)?;
        check_run_folder(&self.out, &net, self.resume)?;
        let warm_start = match &self.init_from {
            Some(init_from) => Some(warm_start(init_from, &profile, &net)?),
            None => None,
        };
        let healthy = list_scans(&self.healthy)?;
        if healthy.is_empty() {
            bail!("no healthy scans found in {}", crate::join(&self.healthy));
        }
        let masks = pair_masks(&healthy, &self.organ_masks)?;
        let textures = list_scans(&self.textures)?;
        let validate_on = list_scans(&self.validate_on)?;
        Ok(Pretraining {
            request: self,
            profile,
            net,
            config,
            device,
            warm_start,
            healthy,
            masks,
            textures,
            validate_on,
        })
    }

    /// The training settings: the profile's, then the request's.
    pub fn config(&self, profile: &Profile) -> Result<TrainConfig> {
        let mut config = TrainConfig::from_profile(profile);
        config.steps = self.steps.unwrap_or(config.steps);
        config.batch_size = self.batch.unwrap_or(config.batch_size);
        config.adam.lr = self.lr.unwrap_or(config.adam.lr);
        config.checkpoint_every = self.checkpoint_every;
        config.validate_every = self.checkpoint_every;
        config.workers = self.workers;
        config.validate()?;
        Ok(config)
    }
}

impl Pretraining {
    /// Resamples the scans, trains, and draws `OUT/curves.png`.
    pub fn run(self, progress: &dyn Progress) -> Result<TrainReport> {
        let r = &self.request;
        let source = SynthesisSource::from_files(
            &self.profile,
            &self.healthy,
            &self.masks,
            &self.textures,
            r.seed,
        )?;
        let real = load_real_validation(&self.profile, &self.validate_on)?;
        let options = RunOptions {
            resume: r.resume,
            warm_start: self.warm_start.as_deref(),
            deadline: r.deadline,
            data: synthesis_record(&self.healthy, &self.textures, r.seed),
            ..RunOptions::new(&r.out, self.device, progress)
        };
        let report =
            pretrain_with_real(Arc::new(source), &self.net, &self.config, &options, &real)?;
        crate::curves::draw_run(&r.out)?;
        Ok(report)
    }
}

/// The weights `init_from` names (`shipped`: the profile's shipped model; else a model file or a
/// checkpoint folder), checked against the run's network and profile before any scan is read.
pub fn warm_start(init_from: &Path, profile: &Profile, net: &BasicUNetConfig) -> Result<PathBuf> {
    let path = if init_from.as_os_str() == "shipped" {
        crate::models::resolve(None, &profile.name)?.weights
    } else {
        init_from.to_path_buf()
    };
    let checkpoint = Checkpoint::open(&path)?;
    checkpoint.check_config(net)?;
    if let Some(trained) = checkpoint.card.profile.as_deref() {
        if trained != profile.name {
            bail!(
                "{}: this model was trained with profile {trained}, not {}",
                path.display(),
                profile.name
            );
        }
    }
    if let Some(trained) = &checkpoint.card.input {
        profile.check_trained_input(&path, trained)?;
    }
    Ok(path)
}

/// The run folder's checkpoints must fit this run (before any scan is read).
pub fn check_run_folder(out: &Path, net: &BasicUNetConfig, resume: bool) -> Result<()> {
    match latest_checkpoint(out)? {
        Some(checkpoint) if resume => Ok(checkpoint.check_config(net)?),
        Some(checkpoint) => bail!(
            "{}: the run folder already has checkpoints: resume it (CLI --resume, Python resume=True), or choose another run folder",
            checkpoint.dir.display()
        ),
        None => Ok(()),
    }
}
