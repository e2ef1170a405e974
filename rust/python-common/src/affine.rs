//! 4x4 voxel-to-RAS affines between numpy and the core's `Affine`.

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;

use layerseg_core::Affine;

use crate::errors::LayerSegError;

pub fn affine_to_py<'py>(py: Python<'py>, a: &Affine) -> Bound<'py, PyArray2<f64>> {
    Array2::from_shape_fn((4, 4), |(r, c)| a[r][c]).into_pyarray(py)
}

pub fn affine_from_py(a: PyReadonlyArray2<'_, f64>) -> PyResult<Affine> {
    let a = a.as_array();
    if a.shape() != [4, 4] || a.iter().any(|v| !v.is_finite()) {
        return Err(LayerSegError::new_err(format!(
            "affine must be a finite 4x4 float64 array, got shape {:?}",
            a.shape()
        )));
    }
    let mut out = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = a[[r, c]];
        }
    }
    Ok(out)
}
