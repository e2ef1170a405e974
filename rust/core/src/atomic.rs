//! The one atomic file writer, for scans, model weights and cards, checkpoints' exports and the
//! CLI's reports and figures.
//!
//! The content goes to a hidden temporary file in the target's folder (same file system, so the
//! rename is atomic). Once it is written, the file is flushed to disk (fsync), made an ordinary
//! readable file (0644), renamed over the target, and the folder is flushed so the rename itself
//! survives a crash. Until the rename, an existing target is untouched; a failure at any step
//! before it removes the temporary file, so a failure, a cancel or a full disk leaves either the
//! complete new file, the old one, or nothing, and never a partial file or a leftover temporary.
//! (A SIGKILL cannot run clean-up: it may leave a hidden `.layerseg-*` temporary, never a partial
//! target.)

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written in place of `target`; see the module documentation. Dropped without
/// [`AtomicFile::commit`], it removes its temporary file and the target stays as it was.
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing `target`. Fails now, before any work, when `target` could not be written
    /// later: it is something other than a regular file (see [`check_replaceable`]), or its
    /// folder takes no new file.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        AtomicFile::with_suffix(target, "")
    }

    /// [`AtomicFile::create`] with a temporary file name ending in `suffix`, for writers that
    /// choose the format by the name's ending (the NIfTI writer compresses `.nii.gz`). The name
    /// holds no other dots.
    pub fn with_suffix(target: &Path, suffix: &str) -> Result<AtomicFile> {
        check_replaceable(target)?;
        let name = target.file_name().ok_or_else(|| Error::Invalid {
            path: target.to_path_buf(),
            reason: "output path has no file name".into(),
        })?;
        let dir = parent_of(target);
        let temp = tempfile::Builder::new()
            .prefix(&format!(
                ".layerseg-{}-",
                name.to_string_lossy().replace('.', "-")
            ))
            .suffix(suffix)
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(AtomicFile {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The temporary file's path, for writers that open the file themselves.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// The temporary file, open for writing.
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// Flushes the written content to disk and renames it over the target.
    pub fn commit(self) -> Result<()> {
        let target = &self.target;
        // Reopened by name: a writer that opened the path itself has written through its own
        // handle, and this syncs whatever file the name now holds.
        File::open(self.temp.path())
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(target, e))?;
        set_readable(self.temp.path()).map_err(|e| Error::io(target, e))?;
        self.temp
            .persist(target)
            .map_err(|e| Error::io(target, e.error))?;
        sync_dir(&parent_of(target));
        Ok(())
    }
}

/// Writes `target` through `write`, atomically (see the module documentation): `write` gets the
/// temporary file, by path and open; the target is replaced only once `write` succeeded.
pub fn write_atomic<E: From<Error>>(
    target: &Path,
    write: impl FnOnce(&AtomicFile) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let file = AtomicFile::create(target)?;
    write(&file)?;
    Ok(file.commit()?)
}

/// An output may replace a regular file or nothing. Renaming a new file over a device such as
/// `/dev/full` or `/dev/null`, a pipe or a folder would destroy it, so those are refused.
pub fn check_replaceable(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "exists and is not a regular file; refusing to replace it with the output"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// Flushes a folder's entries (a rename or a new file in it) to disk. Failure only weakens crash
/// safety (some file systems refuse to sync a folder), so it is not an error.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The folder a file named `path` lives in (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Temporary files are private (0600); the output is an ordinary file.
#[cfg(unix)]
fn set_readable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_readable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hidden(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    fn write_text(target: &Path, text: &str) -> Result<()> {
        write_atomic(target, |out| {
            out.file()
                .write_all(text.as_bytes())
                .map_err(|e| Error::io(out.path(), e))
        })
    }

    #[test]
    fn a_failure_mid_write_leaves_no_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mask.nii.gz");
        let mut seen = None;
        let failed = write_atomic(&target, |out| {
            out.file().write_all(b"half a fi").unwrap();
            seen = Some(out.path().to_path_buf());
            assert!(out.path().exists());
            Err(Error::Cancelled)
        });
        assert!(matches!(failed, Err(Error::Cancelled)));
        assert!(!seen.unwrap().exists());
        assert!(!target.exists());
        assert_eq!(hidden(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_failure_keeps_the_old_file_and_a_success_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        write_text(&target, "old").unwrap();
        let failed = write_atomic(&target, |out| {
            std::fs::write(out.path(), "new but half").unwrap();
            Err(Error::Cancelled)
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        write_text(&target, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(hidden(dir.path()), Vec::<String>::new());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn the_temporary_sits_beside_the_target_with_the_asked_ending() {
        let dir = tempfile::tempdir().unwrap();
        let file = AtomicFile::with_suffix(&dir.path().join("a.b.nii.gz"), ".nii.gz").unwrap();
        let name = file
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(file.path().parent(), Some(dir.path()));
        assert!(name.starts_with(".layerseg-a-b-nii-gz-"), "{name}");
        assert!(
            name.ends_with(".nii.gz") && name.matches('.').count() == 3,
            "{name}"
        );
        drop(file);
        assert_eq!(hidden(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_folder_or_a_device_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_text(dir.path(), "x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        #[cfg(unix)]
        {
            let err = write_text(Path::new("/dev/null"), "x").unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let missing = dir.path().join("no-such-folder").join("out.json");
        assert!(matches!(
            AtomicFile::create(&missing),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(hidden(dir.path()), Vec::<String>::new());
    }
}
