//! Shared by the integration tests of several crates (`#[path]`-included): where the real
//! sample scans are, and the `layerseg` binary run without LD_LIBRARY_PATH.

#![allow(dead_code)]

use std::path::PathBuf;

/// A sample scan fetched by `python -m layerseg.samples fetch` (`make samples`), in
/// `layerseg_core::samples::sample_cache()` (`$LAYERSEG_DATA` or `~/.cache/layerseg/samples`).
pub fn sample(name: &str, file: &str) -> PathBuf {
    let path = layerseg_core::samples::sample_cache().join(name).join(file);
    assert!(
        path.exists(),
        "{} is missing: run `make samples` first",
        path.display()
    );
    path
}
