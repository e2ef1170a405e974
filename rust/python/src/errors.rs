//! The one place where Rust errors become Python exceptions.

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyPermissionError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    _layerseg,
    LayerSegError,
    PyValueError,
    "Bad input or a failed LayerSeg operation; the message names the file and the problem."
);

pub trait IntoPyErr {
    fn into_py_err(self) -> PyErr;
}

impl IntoPyErr for layerseg_core::Error {
    fn into_py_err(self) -> PyErr {
        use layerseg_core::Error;
        match self {
            Error::NotFound { .. } => PyFileNotFoundError::new_err(self.to_string()),
            Error::PermissionDenied { .. } => PyPermissionError::new_err(self.to_string()),
            Error::Cancelled => PyKeyboardInterrupt::new_err("cancelled"),
            other => LayerSegError::new_err(other.to_string()),
        }
    }
}

impl IntoPyErr for layerseg_torch::Error {
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

/// Compatibility for callers that map a core error directly.
pub fn to_py(e: layerseg_core::Error) -> PyErr {
    e.into_py_err()
}

/// Errors of the CLI's shared commands (`layerseg_cli::commands::*::execute`): the message is
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
