//! The arguments several subcommands share, as `#[command(flatten)]` groups, so each has one
//! name, one help text and one default everywhere it appears.

use layerseg_torch::DeviceChoice;
use std::path::PathBuf;

/// `--device`: every command that runs the network.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArg {
    /// Where the network runs: auto (CUDA when a GPU is visible, else CPU), cpu, cuda, or
    /// cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// `--profile` of the commands that start from a profile alone (`pretrain`, `synthesize`).
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArg {
    /// A built-in profile (brain-mri, liver-ct) or a profile JSON file.
    #[arg(long, default_value = "brain-mri")]
    pub profile: String,
}

/// `--model` and `--profile` of the commands that start from trained weights (`segment`,
/// `finetune`, `adapt`).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Weights (.safetensors with its card, or a PyTorch state dict); default: the model shipped
    /// for the profile.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A built-in profile (brain-mri, liver-ct) or a profile JSON file; default: the model
    /// card's profile, else brain-mri.
    #[arg(long)]
    pub profile: Option<String>,
}

/// `--steps`, `--batch`, `--seed` and `--workers` of the training commands (`pretrain`,
/// `finetune`, `adapt`); each command's description gives its default number of steps.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainingArgs {
    /// Optimiser steps: in total (pretrain), at most (finetune), per round (adapt).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Samples (pretrain) or patches (finetune, adapt) per step [default: the profile's
    /// batch_size].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of everything drawn at random: the synthetic samples (sample i is a function of the
    /// seed and i), the patch positions and the augmentation [default: 0, or the --config
    /// file's].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads making the samples or patches (0: one less than the cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}
