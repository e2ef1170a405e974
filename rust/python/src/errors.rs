//! The one place where Rust errors become Python exceptions.

use pyo3::exceptions::{PyFileNotFoundError, PyPermissionError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    _layerseg,
    LayerSegError,
    PyValueError,
    "Bad input or a failed LayerSeg operation; the message names the file and the problem."
);

pub fn to_py(e: layerseg_core::Error) -> PyErr {
    use layerseg_core::Error;
    match e {
        Error::NotFound { .. } => PyFileNotFoundError::new_err(e.to_string()),
        Error::PermissionDenied { .. } => PyPermissionError::new_err(e.to_string()),
        other => LayerSegError::new_err(other.to_string()),
    }
}
