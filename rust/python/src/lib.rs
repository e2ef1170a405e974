//! The `layerseg._layerseg` extension: a thin layer over the Rust crates. Every call into Rust
//! work goes through [`gate`] (no GIL, a fork-safe thread pool), and every error through
//! [`errors::IntoPyErr`].

use pyo3::prelude::*;

mod errors;
mod gate;
mod inference;
mod progress;
mod synthesis;
mod training;
mod volumes;

/// Run the `layerseg` command line in this process; returns its exit code.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    gate::run_detached(py, || layerseg_cli::run(argv))
}

/// What libtorch sees: CUDA backend loaded, number of GPUs, CPU threads.
#[pyfunction]
fn runtime() -> String {
    layerseg_torch::Runtime::detect().to_string()
}

/// Registers the models folder of the installed package; returns the folders searched for
/// shipped models, in order.
#[pyfunction]
#[pyo3(signature = (packaged=None))]
fn model_dirs(packaged: Option<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
    if let Some(dir) = packaged {
        layerseg_cli::models::register_packaged_models(dir);
    }
    layerseg_cli::models::model_dirs()
}

#[pymodule]
fn _layerseg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gate::remember_importer();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LayerSegError", m.py().get_type::<errors::LayerSegError>())?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(runtime, m)?)?;
    m.add_function(wrap_pyfunction!(model_dirs, m)?)?;
    volumes::register(m)?;
    inference::register(m)?;
    synthesis::register(m)?;
    training::register(m)?;
    Ok(())
}
