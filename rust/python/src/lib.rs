//! The `layerseg._layerseg` extension: the torch-free half of LayerSeg's bindings (volumes,
//! profiles, synthesis, preprocessing, metrics), built on layerseg-core alone. The libtorch half
//! is `layerseg_libtorch._native`, loaded only when a function needs it.

use pyo3::prelude::*;

use layerseg_python_common::{errors, gate};

mod metrics;
mod segmentation;
mod synthesis;
mod volumes;

// Synthesis hands Python fresh 8 MB arrays on every call; with glibc's malloc each one is a new
// mmap whose pages fault in one by one (half of a 128^3 sample's time went to the kernel).
// mimalloc keeps freed pages for reuse, as polars does with its allocator. Measured in
// README "Measured"; not in the libtorch extension or the CLI, where it made segmentation no
// faster and raised its peak memory by 0.1-0.2 GB. Built with local-dynamic TLS: an extension
// module is dlopen'ed, often after torch has used up glibc's spare static TLS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _layerseg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gate::remember_importer();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LayerSegError", m.py().get_type::<errors::LayerSegError>())?;
    volumes::register(m)?;
    metrics::register(m)?;
    synthesis::register(m)?;
    segmentation::register(m)?;
    m.add_function(wrap_pyfunction!(sample_cache, m)?)?;
    Ok(())
}

/// Where the sample scans are cached (`$LAYERSEG_DATA`, else `~/.cache/layerseg/samples`): the
/// core's one definition, for `layerseg.samples`.
#[pyfunction]
fn sample_cache() -> std::path::PathBuf {
    layerseg_core::samples::sample_cache()
}
