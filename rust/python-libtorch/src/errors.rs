//! libtorch and command errors as Python exceptions (core errors: `layerseg_python_common`).

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt};
use pyo3::prelude::*;

use layerseg_python_common::errors::{IntoPyErr as CoreIntoPyErr, LayerSegError};
use layerseg_python_common::gate::run_detached;

pub trait IntoPyErr {
    fn into_py_err(self) -> PyErr;
}

impl IntoPyErr for layerseg_core::Error {
    fn into_py_err(self) -> PyErr {
        CoreIntoPyErr::into_py_err(self)
    }
}

impl IntoPyErr for layerseg_torch::Error {
    fn into_py_err(self) -> PyErr {
        use layerseg_torch::Error;
        match self {
            Error::Core(core) => CoreIntoPyErr::into_py_err(core),
            Error::NotFound { .. } => PyFileNotFoundError::new_err(self.to_string()),
            Error::Cancelled => PyKeyboardInterrupt::new_err("cancelled"),
            other => LayerSegError::new_err(other.to_string()),
        }
    }
}

/// Errors of the application layer (`layerseg_app`, both faces' requests): the message is
/// the whole chain; missing files and cancellation keep their own exception classes.
impl IntoPyErr for anyhow::Error {
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

/// [`layerseg_python_common::gate::run_detached`] with this crate's error mapping.
pub fn without_gil<T, E, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    E: IntoPyErr + Send,
    F: Send + FnOnce() -> Result<T, E>,
{
    run_detached(py, work).map_err(IntoPyErr::into_py_err)
}
