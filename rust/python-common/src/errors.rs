//! Core errors as Python exceptions. `LayerSegError` is one Python class
//! (`layerseg._errors.LayerSegError`, a `ValueError`) that both extensions raise, so a caller
//! catches one type whichever extension failed.

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyPermissionError};
use pyo3::PyErr;

pyo3::import_exception!(layerseg._errors, LayerSegError);

/// How an error becomes a Python exception. `Via` names the crate that gives the mapping: it is
/// `()` for the ones here, and an extension maps other crates' errors (libtorch's) with a type of
/// its own, as the orphan rule asks (`impl IntoPyErr<Libtorch> for layerseg_torch::Error`).
/// Callers never name it: each error type has one mapping, so it is inferred.
pub trait IntoPyErr<Via = ()> {
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

pub fn to_py(e: layerseg_core::Error) -> PyErr {
    e.into_py_err()
}
