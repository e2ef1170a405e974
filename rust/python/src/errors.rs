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
