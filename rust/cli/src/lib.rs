//! The `layerseg` command line. Each subcommand lives in its own file under `commands/`.
//!
//! Exit codes: 0 success, 1 an error (the message names the file and the problem), 2 bad usage.

use clap::{Parser, Subcommand};
use std::ffi::OsString;

pub mod args;
pub mod commands;
pub mod figures;
pub mod output;
pub mod progress;

#[derive(Debug, Parser)]
#[command(
    name = "layerseg",
    version,
    about = "Self-supervised tumour segmentation by layer decomposition"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segment a real tumour scan zero-shot with the shipped model, draw it and score it.
    Demo(commands::demo::Args),
    /// Print shape, spacing, orientation, datatype and intensity range of a NIfTI scan.
    Info(commands::info::Args),
    /// Compare predicted masks with ground truth: Dice, HD95, surface distance, detection.
    Evaluate(commands::evaluate::Args),
    /// Train the network on synthetic tumours blended into healthy scans.
    Pretrain(commands::pretrain::Args),
    /// Fine-tune a model on a few labelled cases (a MONAI datalist or a folder of pairs).
    Finetune(commands::finetune::Args),
    /// Self-train a model on unlabelled scans with pseudo-labels (the Sim2Real step).
    Adapt(commands::adapt::Args),
    /// Show what libtorch sees: CUDA backend, GPUs, CPU threads.
    Runtime(commands::runtime::Args),
    /// Segment tumours: scans in, masks out on each scan's own grid.
    Segment(commands::segment::Args),
    /// Blend synthetic tumours into a healthy scan: image, mask and layers per case.
    Synthesize(commands::synthesize::Args),
}

/// Parse `args` (program name first), run the command, print errors, return the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Evaluate(args) => commands::evaluate::run(args),
        Command::Pretrain(args) => commands::pretrain::run(args),
        Command::Finetune(args) => commands::finetune::run(args),
        Command::Adapt(args) => commands::adapt::run(args),
        Command::Runtime(args) => commands::runtime::run(args),
        Command::Segment(args) => commands::segment::run(args),
        Command::Synthesize(args) => commands::synthesize::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("layerseg: error: {}", error_chain(&e));
            1
        }
    }
}

/// The error and its causes on one line, without repeating a cause already in the message.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// Print reader warnings to stderr, each naming the file.
pub(crate) fn warn_all(meta: &layerseg_core::NiftiMeta) {
    for w in &meta.warnings {
        eprintln!("layerseg: warning: {}: {w}", meta.path.display());
    }
}
