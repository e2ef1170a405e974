use anyhow::{bail, Result};
use layerseg_app::pretrain::PretrainRequest;
use layerseg_core::Progress;
use layerseg_torch::train::{Outcome, METRICS_FILE};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::args::{DeviceArg, ProfileArg, TrainingArgs};
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
///
/// `--steps` defaults to the profile's max_epochs epochs: 71 500 for the built-in profiles, the
/// paper's schedule, which takes hours on a GPU and weeks on a CPU; stop early with Ctrl-C,
/// which checkpoints and exports.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArg,
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
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Learning rate [default: the profile's lr].
    #[arg(long)]
    pub lr: Option<f64>,
    #[command(flatten)]
    pub device: DeviceArg,
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
    /// Network widths a,b,c,d,e,f [default: the profile's network.features].
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<i64>,
}

impl Args {
    /// The request this command line makes; the deadline counts from now.
    pub fn request(self) -> Result<PretrainRequest> {
        let features = match self.features[..] {
            [a, b, c, d, e, f] => Some([a, b, c, d, e, f]),
            [] => None,
            _ => bail!(
                "--features takes six widths a,b,c,d,e,f, got {:?}",
                self.features
            ),
        };
        Ok(PretrainRequest {
            profile: self.profile.profile,
            healthy: self.healthy,
            organ_masks: self.organ_masks,
            textures: self.textures,
            out: self.out,
            steps: self.training.steps,
            batch: self.training.batch,
            lr: self.lr,
            device: self.device.device,
            resume: self.resume,
            init_from: self.init_from,
            deadline: self.max_time.map(|t| Instant::now() + t),
            validate_on: self.validate_on,
            checkpoint_every: self.checkpoint_every,
            workers: self.training.workers,
            seed: self.training.seed.unwrap_or(0),
            features,
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    let pretraining = args.request()?.prepare()?;
    eprintln!(
        "layerseg: resampling {} healthy scan(s) and {} texture scan(s) onto the network grid",
        pretraining.healthy.len(),
        pretraining.textures.len()
    );
    let out = pretraining.request.out.clone();
    let progress = TrainProgress::new(out.join("curves.png"), pretraining.config.checkpoint_every);
    let batch = pretraining.config.batch_size;
    let report = pretraining.run(&progress)?;
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
        out.join("curves.png").display()
    );
    if let Some(summary) = report.throughput.summary(batch) {
        println!("throughput: {summary}");
    }
    Ok(())
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
            if let Err(e) = layerseg_app::curves::write_curves(&metrics, &self.curves) {
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
