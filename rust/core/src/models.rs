//! Where shipped models are found: one search order for every face (the CLI, both Python
//! extensions, the MONAI path), so each finds the same `PROFILE.safetensors` and `deepbet/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `models/` folder inside an installed Python package, registered when it is imported.
static PACKAGED_MODELS: OnceLock<PathBuf> = OnceLock::new();

/// Registers the models a Python wheel carries (the first registration wins).
pub fn register_packaged_models(dir: PathBuf) {
    let _ = PACKAGED_MODELS.set(dir);
}

/// Folders searched for shipped models, in order: `$LAYERSEG_MODELS`, the Python package's
/// `models/` (when imported from a wheel), `models/` beside the repository that holds this
/// binary, and the repository this binary was built from.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("LAYERSEG_MODELS") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(dir) = PACKAGED_MODELS.get() {
        dirs.push(dir.clone());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(repo) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            dirs.push(repo.join("models"));
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    dirs
}
