//! `RUN_DIR/metrics.jsonl`: one JSON object per step, validation and event of a run, kept
//! consistent with its checkpoints across resumes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

pub const METRICS_FILE: &str = "metrics.jsonl";

/// Appends one JSON object per line to `RUN_DIR/metrics.jsonl`.
pub(super) struct Metrics {
    file: File,
    path: PathBuf,
}

impl Metrics {
    /// Opens the metrics for appending after dropping the records of steps past `step`: those
    /// of an interrupted session that the resumed one is about to redo.
    pub(super) fn open(run_dir: &Path, step: u64) -> Result<Metrics> {
        let path = run_dir.join(METRICS_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|record| record["step"].as_u64())
                        .is_some_and(|s| s <= step)
                })
                .flat_map(|line| [line, "\n"])
                .collect();
            if kept.len() != text.len() {
                write_atomic(&path, |tmp| {
                    std::fs::write(tmp, &kept).map_err(|e| Error::io(tmp, e))
                })?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Metrics { file, path })
    }

    pub(super) fn write(&mut self, record: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| Error::io(&self.path, e))
    }
}
