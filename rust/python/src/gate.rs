//! The single gate from Python into long-running Rust work: the GIL is released while it runs,
//! and its error is mapped to a Python exception.

use pyo3::prelude::*;

use crate::errors::IntoPyErr;

pub fn without_gil<T, E, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    E: IntoPyErr + Send,
    F: Send + FnOnce() -> Result<T, E>,
{
    py.detach(work).map_err(IntoPyErr::into_py_err)
}
