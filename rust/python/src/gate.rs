//! The single gate from Python into long-running Rust work: the GIL is released while it runs,
//! and its error is mapped to a Python exception.

use pyo3::prelude::*;

pub fn without_gil<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: Send + FnOnce() -> Result<T, layerseg_core::Error>,
{
    py.detach(work).map_err(crate::errors::to_py)
}
