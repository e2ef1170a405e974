//! Writing output files atomically: into a temporary file beside the target, then a rename, so a
//! failure or a cancel never leaves a partial file.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::Path;

pub fn write_atomic(path: &Path, write: impl FnOnce(&File) -> Result<()>) -> Result<()> {
    let tmp = temporary_beside(path)?;
    write(tmp.as_file())?;
    // Temporary files are private (0600); the output is an ordinary file.
    set_readable(tmp.path())?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("{}: cannot write", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Fails now, before any long work, when `path` could not be written later: its folder takes
/// no new file, or it names something other than a regular file.
pub fn check_writable(path: &Path) -> Result<()> {
    temporary_beside(path).map(drop)
}

fn temporary_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    layerseg_core::io::check_replaceable(path)?;
    tempfile::Builder::new()
        .prefix(".layerseg-")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a file in this folder", dir.display()))
}

pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    write_atomic(path, |mut file| {
        file.write_all(text.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))
    })
}

#[cfg(unix)]
fn set_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("{}: cannot set permissions", path.display()))
}

#[cfg(not(unix))]
fn set_readable(_path: &Path) -> Result<()> {
    Ok(())
}
