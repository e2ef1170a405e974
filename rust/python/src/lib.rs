//! The `layerseg._layerseg` extension: the torch-free half of LayerSeg's bindings (volumes,
//! profiles, synthesis, preprocessing, metrics), built on layerseg-core alone. The libtorch half
//! is `layerseg_libtorch._native`, loaded only when a function needs it.

use pyo3::prelude::*;

use layerseg_python_common::{errors, gate};

mod metrics;
mod segmentation;
mod synthesis;
mod volumes;

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
