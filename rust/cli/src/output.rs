//! Writing output files atomically, through [`layerseg_core::atomic`]: into a temporary file
//! beside the target, synced and renamed into place, so a failure or a cancel never leaves a
//! partial file.

use anyhow::{Context, Result};
use layerseg_core::atomic::{self, AtomicFile};
use std::fs::File;
use std::path::Path;

pub fn write_atomic(path: &Path, write: impl FnOnce(&File) -> Result<()>) -> Result<()> {
    atomic::write_atomic(path, |out| write(out.file()))
}

/// Fails now, before any long work, when `path` could not be written later: its folder takes
/// no new file, or it names something other than a regular file.
pub fn check_writable(path: &Path) -> Result<()> {
    atomic::check_replaceable(path)?;
    AtomicFile::create(path).map(drop).with_context(|| {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        format!("{}: cannot create a file in this folder", dir.display())
    })
}

pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    write_atomic(path, |mut file| {
        file.write_all(text.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))
    })
}
