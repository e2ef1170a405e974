use anyhow::{bail, Result};
use layerseg_core::{Profile, Progress};
use layerseg_torch::checkpoint::{latest_checkpoint, Checkpoint};
use layerseg_torch::train::{
    list_scans, load_real_validation, pair_masks, pretrain_with_real, synthesis_record, Outcome,
    RunOptions, SynthesisSource, TrainConfig, METRICS_FILE,
};
use layerseg_torch::{select_device, BasicUNetConfig, DeviceChoice};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::progress::Bar;

/// `layerseg pretrain`: train the network to decompose synthetic images (healthy scans with
/// tumours blended in on the fly) into healthy layer, tumour layer and mask.
///
/// Writes `OUT/checkpoints/step-N/`, `OUT/metrics.jsonl` (one JSON object a line),
/// `OUT/model.safetensors` with its card `OUT/model.json`, and `OUT/curves.png` (loss and
/// validation over steps, also redrawn at every checkpoint). Settings come from the profile's
/// `training` section; the options below override them. Ctrl-C saves a checkpoint and exits;
/// `--resume` continues from it. `--init-from` continues another run's training (e.g. the
/// shipped model's) in a new run folder, and `--max-time` stops cleanly before a deadline: with
/// both, one command spends one window of GPU time. The model card's `history` lists every
/// session that built the model. Every input is checked before training starts; one
/// unreadable scan stops the command with an error naming it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in profile (brain-mri, liver-ct) or a profile JSON file.
    #[arg(long, default_value = "brain-mri")]
    pub profile: String,
    /// Healthy scans: NIfTI files, folders of them, or .txt lists (one path a line).
    #[arg(long, num_args = 1.., required = true)]
    pub healthy: Vec<PathBuf>,
    /// Organ (or brain) masks paired with the healthy scans in order, or one folder holding a
    /// mask of the same file name for each scan.
    #[arg(long, num_args = 1..)]
    pub organ_masks: Vec<PathBuf>,
    /// Scans to take tumour texture from (files, folders or lists); default: the healthy scans.
    #[arg(long, num_args = 1..)]
    pub textures: Vec<PathBuf>,
    /// The run folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps in total [default: the profile's max_epochs epochs: 71 500 for the
    /// built-in profiles, the paper's schedule, which takes hours on a GPU and weeks on a CPU;
    /// stop early with Ctrl-C, which checkpoints and exports].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Samples per step [default: the profile's batch_size].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate [default: the profile's lr].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Where the network runs: auto (CUDA when a GPU is visible, else CPU), cpu, or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Continue from the newest checkpoint in the run folder.
    #[arg(long)]
    pub resume: bool,
    /// Continue the training of a model in this new run folder: `shipped` (the profile's shipped
    /// model), a model file (.safetensors with its card .json), or a checkpoint folder (with
    /// its Adam moments). The step count, learning rate and schedule go on from there, so
    /// --steps counts its steps too.
    #[arg(long, value_name = "MODEL")]
    pub init_from: Option<PathBuf>,
    /// Stop cleanly before this much time has passed since the command started (e.g. 780,
    /// 13m, 1h30m; plain numbers are seconds), keeping time for the last checkpoint and the
    /// export.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_time: Option<Duration>,
    /// Unlabelled real scans scored by the recomposition L1 at every validation.
    #[arg(long, num_args = 1..)]
    pub validate_on: Vec<PathBuf>,
    /// Steps between checkpoints, validations and curve redraws.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Synthesis worker threads (0: one less than the cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Seed of the synthetic samples (sample i is a function of the seed and i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Network widths a,b,c,d,e,f [default: the profile's network.features].
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<i64>,
}

pub fn run(args: Args) -> Result<()> {
    let deadline = args.max_time.map(|t| Instant::now() + t);
    let profile = Profile::load(&args.profile)?;
    let device = select_device(args.device)?;
    let net = BasicUNetConfig {
        features: match args.features[..] {
            [a, b, c, d, e, f] => [a, b, c, d, e, f],
            [] => profile.network.features.map(|f| f as i64),
            _ => bail!(
                "--features takes six widths a,b,c,d,e,f, got {:?}",
                args.features
            ),
        },
        ..BasicUNetConfig::default()
    };
    net.validate()?;
    let mut config = TrainConfig::from_profile(&profile);
    config.steps = args.steps.unwrap_or(config.steps);
    config.batch_size = args.batch.unwrap_or(config.batch_size);
    config.adam.lr = args.lr.unwrap_or(config.adam.lr);
    config.checkpoint_every = args.checkpoint_every;
    config.validate_every = args.checkpoint_every;
    config.workers = args.workers;
    config.validate()?;
    check_run_folder(&args.out, &net, args.resume)?;
    let warm_start = match &args.init_from {
        Some(init_from) => Some(warm_start(init_from, &profile, &net)?),
        None => None,
    };

    let healthy = list_scans(&args.healthy)?;
    if healthy.is_empty() {
        bail!("no healthy scans found in {}", join(&args.healthy));
    }
    let masks = pair_masks(&healthy, &args.organ_masks)?;
    let textures = list_scans(&args.textures)?;
    let validate_on = list_scans(&args.validate_on)?;
    eprintln!(
        "layerseg: resampling {} healthy scan(s) and {} texture scan(s) onto the network grid",
        healthy.len(),
        textures.len()
    );
    let source = SynthesisSource::from_files(&profile, &healthy, &masks, &textures, args.seed)?;
    let real = load_real_validation(&profile, &validate_on)?;

    let progress = TrainProgress::new(args.out.join("curves.png"), config.checkpoint_every);
    let options = RunOptions {
        resume: args.resume,
        warm_start: warm_start.as_deref(),
        deadline,
        data: synthesis_record(&healthy, &textures, args.seed),
        ..RunOptions::new(&args.out, device, &progress)
    };
    let report = pretrain_with_real(Arc::new(source), &net, &config, &options, &real)?;
    let metrics = args.out.join(METRICS_FILE);
    crate::curves::write_curves(&metrics, &args.out.join("curves.png"))?;
    let loss = report
        .losses
        .map_or("-".to_string(), |l| format!("{:.4}", l.total));
    let how = match report.outcome {
        Outcome::Finished => "finished",
        Outcome::EarlyStopped => "stopped early (plateau)",
        Outcome::Cancelled => "cancelled; continue with --resume",
        Outcome::TimeLimit => "stopped before the time limit; continue with --resume",
    };
    println!(
        "{how} at step {} (from {}), loss {loss}; model {}, curves {}",
        report.step,
        report.started_at,
        report.model.display(),
        args.out.join("curves.png").display()
    );
    Ok(())
}

/// The weights `--init-from` names (`shipped`: the profile's shipped model; else a model file or
/// a checkpoint folder), checked against the run's network and profile before any scan is read.
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
    Ok(path)
}

/// The run folder's checkpoints must fit this run (before any scan is read).
fn check_run_folder(out: &Path, net: &BasicUNetConfig, resume: bool) -> Result<()> {
    match latest_checkpoint(out)? {
        Some(checkpoint) if resume => Ok(checkpoint.check_config(net)?),
        Some(checkpoint) => bail!(
            "{}: the run folder already has checkpoints: pass --resume, or choose another --out",
            checkpoint.dir.display()
        ),
        None => Ok(()),
    }
}

/// `--max-time`: seconds, or a duration with units (13m, 1h30m).
fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(Duration::from_secs_f64(seconds)),
        Ok(_) => Err("the time must be positive".to_string()),
        Err(_) => {
            humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 780, 13m, 1h30m)"))
        }
    }
}

fn join(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// The progress bar, with loss lines at most every few seconds (printed plainly when stderr
/// is not a terminal), curves redrawn at checkpoints, and Ctrl-C as cancel.
pub(crate) struct TrainProgress {
    bar: Bar,
    terminal: bool,
    last_line: Mutex<Option<Instant>>,
    curves: PathBuf,
    every: u64,
}

impl TrainProgress {
    /// Redraws `curves` from the metrics beside it at every `every`-th step.
    pub(crate) fn new(curves: PathBuf, every: u64) -> TrainProgress {
        TrainProgress {
            bar: Bar::new(),
            terminal: std::io::stderr().is_terminal(),
            last_line: Mutex::new(None),
            curves,
            every,
        }
    }
}

impl Progress for TrainProgress {
    fn start(&self, what: &str, total: u64) {
        self.bar.start(what, total);
    }

    fn advance(&self, n: u64) {
        self.bar.advance(n);
    }

    fn message(&self, text: &str) {
        let step = text
            .strip_prefix("step ")
            .and_then(|t| t.split(':').next())
            .and_then(|n| n.parse::<u64>().ok());
        let at_checkpoint = step.is_some_and(|s| s % self.every == 0);
        if at_checkpoint {
            let metrics = self.curves.with_file_name(METRICS_FILE);
            if let Err(e) = crate::curves::write_curves(&metrics, &self.curves) {
                self.bar.message(&format!("layerseg: warning: {e:#}"));
            }
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if step.is_none() || at_checkpoint || due {
            *last = Some(Instant::now());
            if self.terminal {
                self.bar.message(text);
            } else {
                eprintln!("layerseg: {text}");
            }
        }
    }

    fn finish(&self) {
        self.bar.finish();
    }

    /// Ctrl-C, through the bar's handler.
    fn cancelled(&self) -> bool {
        self.bar.cancelled()
    }
}
