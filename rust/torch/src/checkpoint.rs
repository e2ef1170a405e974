//! Checkpoints of a training run, and exported models.
//!
//! A checkpoint is a folder `RUN_DIR/checkpoints/step-NNNNNNNNN/` holding
//! - `weights.safetensors`: the network under MONAI's state-dict names (loads into MONAI as is);
//! - `optimizer.safetensors`: the optimiser's state tensors, when there is one;
//! - `card.json`: the [`ModelCard`].
//!
//! The folder is assembled under a hidden temporary name in the same parent and renamed into
//! place in one step, so a crash or SIGKILL at any moment leaves either the complete checkpoint or
//! none, and never touches the earlier ones. [`latest_checkpoint`] ignores the temporary
//! leftovers and [`save_checkpoint`] removes them. Single files (exported weights and cards) go
//! through the one atomic writer, [`layerseg_core::atomic`], as [`write_atomic`] does for the
//! trainers' other outputs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use layerseg_core::atomic::{self, sync_dir};
pub use layerseg_core::model_card::CARD_FORMAT;
use layerseg_core::model_card::{check_model_card, MASK_FITTING_RUNS};
use layerseg_core::profile::NetworkInput;

use crate::error::{Error, Result};
use crate::losses::LossValues;
use crate::network::weights::{read_state_dict, save_safetensors, write_tensors};
use crate::network::BasicUNetConfig;

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CARD_FILE: &str = "card.json";
const STEP_PREFIX: &str = "step-";
const TEMP_PREFIX: &str = ".tmp-";

/// What a set of weights is and how it was made. Saved next to every checkpoint and exported
/// model; `serde_json` round-trips it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: u32,
    /// Always "BasicUNet" for now.
    pub network: String,
    pub config: BasicUNetConfig,
    /// The synthesis/training profile the run used, by name.
    pub profile: Option<String>,
    /// How that profile made the network's input (normalisation, region, grid, window): the
    /// model runs only under a profile that makes it the same way. Absent from cards written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<NetworkInput>,
    /// Optimiser steps taken.
    pub step: u64,
    /// The latest training losses, when any.
    pub losses: Option<LossValues>,
    /// The latest label-free validation score (recomposition L1), when any.
    pub validation: Option<f64>,
    pub layerseg_version: String,
    /// Where the run trained, e.g. "cpu" or "cuda:0".
    pub device: String,
    /// Seconds of training so far, summed over resumed sessions.
    pub wall_time_s: f64,
    /// Whether `optimizer.safetensors` holds the full optimiser state (moments included).
    pub optimizer_state: bool,
    /// The trainer's own record (settings, learning rate, scheduler state), as it serialises it.
    pub training: serde_json::Value,
    /// Every training session that built these weights, oldest first: warm starts and
    /// fine-tuning carry the history of the model they start from.
    #[serde(default)]
    pub history: Vec<RunRecord>,
}

/// One training session in a model card's `history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// "pretrain", "finetune" or "adapt"; [`UNRECORDED`] for training done before model cards
    /// kept a history (its steps, time and device come from the card, its data is unknown).
    pub kind: String,
    /// The step count before and after the session.
    pub from_step: u64,
    pub to_step: u64,
    pub wall_time_s: f64,
    pub device: String,
    pub layerseg_version: String,
    /// What the session trained on (scan file names, seed, ...), as its command recorded it.
    pub data: serde_json::Value,
}

/// The `kind` of a history record made up from a card written before cards kept a history.
pub const UNRECORDED: &str = "unrecorded";

impl ModelCard {
    /// A card for `config` at step 0, stamped with this crate's version.
    pub fn new(config: &BasicUNetConfig, device: Device) -> ModelCard {
        ModelCard {
            format: CARD_FORMAT,
            network: "BasicUNet".to_string(),
            config: config.clone(),
            profile: None,
            input: None,
            step: 0,
            losses: None,
            validation: None,
            layerseg_version: env!("CARGO_PKG_VERSION").to_string(),
            device: device_name(device),
            wall_time_s: 0.0,
            optimizer_state: false,
            training: serde_json::Value::Null,
            history: Vec::new(),
        }
    }

    /// The sessions that built these weights; for a card from before histories were kept, one
    /// [`UNRECORDED`] record of its steps, wall time and device.
    pub fn lineage(&self) -> Vec<RunRecord> {
        if !self.history.is_empty() || self.step == 0 {
            return self.history.clone();
        }
        vec![RunRecord {
            kind: UNRECORDED.to_string(),
            from_step: 0,
            to_step: self.step,
            wall_time_s: self.wall_time_s,
            device: self.device.clone(),
            layerseg_version: self.layerseg_version.clone(),
            data: serde_json::Value::Null,
        }]
    }

    /// Whether a fine-tuning or adaptation run fitted this model's mask to labels
    /// (`layerseg_core::model_card::mask_fitted_to_labels`): then its own mask is the
    /// segmentation, without the profile's layer rule.
    pub fn mask_fitted_to_labels(&self) -> bool {
        self.history
            .iter()
            .any(|run| MASK_FITTING_RUNS.contains(&run.kind.as_str()))
    }

    /// The card at `path`, after `layerseg_core::model_card::check_model_card`.
    pub fn read(path: &Path) -> Result<ModelCard> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let checked = check_model_card(path, &text)?;
        serde_json::from_value(checked).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("not a LayerSeg model card: {e}"),
        })
    }

    fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Config(format!("model card: {e}")))
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// [`layerseg_core::atomic::write_atomic`] for writers that take a path (libtorch's savers):
/// `write` fills a temporary file beside `path`, which replaces `path` only once `write`
/// succeeded and the data reached the disk. On failure nothing is left behind and an existing
/// `path` is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    atomic::write_atomic(path, |out| write(out.path()))
}

/// Weights plus card as a standalone model, e.g. `RUN_DIR/model.safetensors` and
/// `RUN_DIR/model.json`, each written atomically (weights first).
pub fn export_model(vs: &VarStore, card: &ModelCard, weights_path: &Path) -> Result<PathBuf> {
    write_atomic(weights_path, |tmp| save_safetensors(vs, tmp))?;
    let card_path = weights_path.with_extension("json");
    let json = ModelCard {
        optimizer_state: false,
        ..card.clone()
    }
    .to_json()?;
    write_atomic(&card_path, |tmp| {
        std::fs::write(tmp, &json).map_err(|e| Error::io(tmp, e))
    })?;
    Ok(card_path)
}

/// A checkpoint found on disk, or an exported model opened as one (see [`Checkpoint::open`]).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The checkpoint's folder; for an exported model, the weights file.
    pub dir: PathBuf,
    weights: PathBuf,
    pub card: ModelCard,
}

impl Checkpoint {
    /// Trained weights to continue from: a checkpoint folder (`RUN_DIR/checkpoints/step-N/`, with
    /// its Adam moments) or an exported model (`NAME.safetensors` with its card `NAME.json`,
    /// without moments). The card is required: it holds the step count and the schedule.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let fail = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if path.is_dir() {
            let card = ModelCard::read(&path.join(CARD_FILE))?;
            let weights = path.join(WEIGHTS_FILE);
            if !weights.is_file() {
                return Err(fail(format!("a checkpoint folder without {WEIGHTS_FILE}")));
            }
            return Ok(Checkpoint {
                dir: path.to_path_buf(),
                weights,
                card,
            });
        }
        if !path.is_file() {
            return Err(fail("no such model file or checkpoint folder".to_string()));
        }
        let card_path = path.with_extension("json");
        if !card_path.is_file() {
            return Err(fail(format!(
                "no model card {} beside the weights (it holds the step count and schedule \
                 that training continues)",
                card_path.display()
            )));
        }
        let mut card = ModelCard::read(&card_path)?;
        card.optimizer_state = false;
        Ok(Checkpoint {
            dir: path.to_path_buf(),
            weights: path.to_path_buf(),
            card,
        })
    }

    pub fn weights_path(&self) -> PathBuf {
        self.weights.clone()
    }

    /// Checks that the checkpoint was made by a network of shape `config`.
    pub fn check_config(&self, config: &BasicUNetConfig) -> Result<()> {
        if &self.card.config == config {
            return Ok(());
        }
        Err(Error::Checkpoint {
            path: self.dir.clone(),
            reason: format!(
                "made by a network with {:?}, not the requested {:?} (another network width?)",
                self.card.config, config
            ),
        })
    }

    /// The optimiser state tensors on `device`; empty when the checkpoint has none.
    pub fn optimizer_state(&self, device: Device) -> Result<Vec<(String, Tensor)>> {
        let path = self.dir.join(OPTIMIZER_FILE);
        if !self.card.optimizer_state {
            return Ok(Vec::new());
        }
        let tensors = read_state_dict(&path, device)?;
        tensors
            .into_iter()
            .map(|(name, t)| {
                t.f_to_device(device)
                    .map(|t| (name, t))
                    .map_err(|e| Error::Torch {
                        context: format!("moving optimiser state to {device:?}"),
                        source: e,
                    })
            })
            .collect()
    }
}

/// Saves a checkpoint for `card.step` under `run_dir/checkpoints/` and then deletes all but the
/// newest `keep_last` (at least one). Returns the new checkpoint's folder.
pub fn save_checkpoint(
    run_dir: &Path,
    card: &ModelCard,
    weights: &VarStore,
    optimizer: Option<&[(String, Tensor)]>,
    keep_last: usize,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    restore_replaced(&root);
    remove_leftovers(&root);
    let target = root.join(format!("{STEP_PREFIX}{:09}", card.step));
    let staging = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir_in(&root)
        .map_err(|e| Error::io(&root, e))?;
    let mut card = card.clone();
    card.optimizer_state = optimizer.is_some();
    save_safetensors(weights, &staging.path().join(WEIGHTS_FILE))?;
    if let Some(state) = optimizer {
        write_tensors(state, &staging.path().join(OPTIMIZER_FILE))?;
    }
    let card_path = staging.path().join(CARD_FILE);
    std::fs::write(&card_path, card.to_json()?).map_err(|e| Error::io(&card_path, e))?;
    for name in [WEIGHTS_FILE, OPTIMIZER_FILE, CARD_FILE] {
        if let Ok(f) = std::fs::File::open(staging.path().join(name)) {
            f.sync_all()
                .map_err(|e| Error::io(staging.path().join(name), e))?;
        }
    }
    sync_dir(staging.path());
    // A checkpoint of the same step (saved again after a resume) is moved aside, not deleted,
    // until the new one is in place.
    let replaced = root.join(format!("{TEMP_PREFIX}replaced-{:09}", card.step));
    if target.exists() {
        std::fs::rename(&target, &replaced).map_err(|e| Error::io(&target, e))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, &target).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        let _ = std::fs::rename(&replaced, &target);
        Error::io(&target, e)
    })?;
    sync_dir(&root);
    let _ = std::fs::remove_dir_all(&replaced);
    prune(run_dir, keep_last.max(1))?;
    Ok(target)
}

/// The checkpoint folders of a run, oldest step first; only complete ones (with a readable card).
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<Checkpoint>> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    restore_replaced(&root);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&root, e)),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name
            .strip_prefix(STEP_PREFIX)
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if let Ok(card) = ModelCard::read(&dir.join(CARD_FILE)) {
            let weights = dir.join(WEIGHTS_FILE);
            if weights.is_file() {
                found.push((step, Checkpoint { dir, weights, card }));
            }
        }
    }
    found.sort_by_key(|(step, _)| *step);
    Ok(found.into_iter().map(|(_, c)| c).collect())
}

/// The newest complete checkpoint of a run, for `--resume`.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<Checkpoint>> {
    Ok(list_checkpoints(run_dir)?.pop())
}

/// Saving a step that already has a checkpoint (again after a resume) moves the old folder aside
/// before renaming the new one into place. A kill between the two renames leaves only the old
/// folder, under its temporary name: it is complete, so it is put back.
fn restore_replaced(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!("{TEMP_PREFIX}replaced-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix(&prefix) {
            let target = root.join(format!("{STEP_PREFIX}{step}"));
            if !target.exists() {
                let _ = std::fs::rename(entry.path(), &target);
            }
        }
    }
}

fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn prune(run_dir: &Path, keep_last: usize) -> Result<()> {
    let all = list_checkpoints(run_dir)?;
    let excess = all.len().saturating_sub(keep_last);
    for old in &all[..excess] {
        // Renamed first so that an interrupted deletion never leaves a half checkpoint.
        let doomed = old
            .dir
            .with_file_name(format!("{TEMP_PREFIX}pruned-{:09}", old.card.step));
        std::fs::rename(&old.dir, &doomed).map_err(|e| Error::io(&old.dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
    }
    Ok(())
}
