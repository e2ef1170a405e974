//! Shared by the integration tests of several crates (`#[path]`-included): where the real
//! sample scans are, and the `layerseg` binary run without LD_LIBRARY_PATH.

#![allow(dead_code)]

use std::path::PathBuf;

/// A sample scan fetched by `python -m layerseg.samples fetch` (`make samples`), in
/// `$LAYERSEG_DATA` or `~/.cache/layerseg/samples`.
pub fn sample(name: &str, file: &str) -> PathBuf {
    let root = std::env::var_os("LAYERSEG_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/layerseg/samples")
        });
    let path = root.join(name).join(file);
    assert!(
        path.exists(),
        "{} is missing: run `make samples` first",
        path.display()
    );
    path
}
