//! The `layerseg_libtorch._native` extension: the libtorch half of LayerSeg's bindings
//! (segmentation, brain extraction, training, the command line). `layerseg` loads it only when
//! one of these is called, after `layerseg_libtorch/__init__.py` has checked the torch version.

use pyo3::prelude::*;

use layerseg_python_common::{errors::LayerSegError, gate};

mod errors;
mod inference;
mod training;

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
        layerseg_app::models::register_packaged_models(dir);
    }
    layerseg_app::models::model_dirs()
}

/// A device name (`auto`, `cpu`, `cuda`, `cuda:N`) as the choice it names.
fn device_choice(name: &str) -> PyResult<layerseg_torch::DeviceChoice> {
    name.parse()
        .map_err(|e: layerseg_torch::device::DeviceError| LayerSegError::new_err(e.to_string()))
}

/// A device name as the device to run on, checked against what libtorch sees.
fn device(name: &str) -> PyResult<tch::Device> {
    layerseg_torch::select_device(device_choice(name)?)
        .map_err(|e| LayerSegError::new_err(e.to_string()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gate::remember_importer();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LayerSegError", m.py().get_type::<LayerSegError>())?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(runtime, m)?)?;
    m.add_function(wrap_pyfunction!(model_dirs, m)?)?;
    inference::register(m)?;
    training::register(m)?;
    Ok(())
}
