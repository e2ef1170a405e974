//! libtorch and command errors as Python exceptions (core errors: `layerseg_python_common`, whose
//! gate, `without_gil`, both extensions call).

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt};
use pyo3::prelude::*;

use layerseg_python_common::errors::{IntoPyErr, LayerSegError};

/// The mappings this extension gives (see [`IntoPyErr`]'s `Via`).
pub enum Libtorch {}

impl IntoPyErr<Libtorch> for layerseg_torch::Error {
    fn into_py_err(self) -> PyErr {
        use layerseg_torch::Error;
        match self {
            Error::Core(core) => core.into_py_err(),
            Error::NotFound { .. } => PyFileNotFoundError::new_err(self.to_string()),
            Error::Cancelled => PyKeyboardInterrupt::new_err("cancelled"),
            other => LayerSegError::new_err(other.to_string()),
        }
    }
}

/// Errors of the application layer (`layerseg_app`, both faces' requests): the message is
/// the whole chain; missing files and cancellation keep their own exception classes.
impl IntoPyErr<Libtorch> for anyhow::Error {
    fn into_py_err(self) -> PyErr {
        let text = format!("{self:#}");
        let root = self.root_cause();
        let torch = root.downcast_ref::<layerseg_torch::Error>();
        let core = root.downcast_ref::<layerseg_core::Error>();
        match (torch, core) {
            (Some(layerseg_torch::Error::Cancelled), _)
            | (_, Some(layerseg_core::Error::Cancelled)) => {
                PyKeyboardInterrupt::new_err("cancelled")
            }
            (Some(layerseg_torch::Error::NotFound { .. }), _)
            | (_, Some(layerseg_core::Error::NotFound { .. })) => {
                PyFileNotFoundError::new_err(text)
            }
            _ => LayerSegError::new_err(text),
        }
    }
}
