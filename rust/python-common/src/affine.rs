//! 4x4 voxel-to-RAS affines between numpy and the core's `Affine`, and scans on them.

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyReadonlyArray3};
use pyo3::prelude::*;

use layerseg_core::{Affine, Volume};

use crate::errors::{IntoPyErr, LayerSegError};

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

/// A scan (`image` [i, j, k] on `affine`) and its optional organ mask (on `organ_affine`,
/// default `affine`) from numpy, checked as every face checks them: finite voxels, and the
/// mask on the scan's grid.
pub fn scan_and_organ(
    image: PyReadonlyArray3<'_, f32>,
    affine: PyReadonlyArray2<'_, f64>,
    organ_mask: Option<PyReadonlyArray3<'_, u8>>,
    organ_affine: Option<PyReadonlyArray2<'_, f64>>,
) -> PyResult<(Volume<f32>, Option<Volume<u8>>)> {
    let affine = affine_from_py(affine)?;
    let image = Volume::new(image.as_array().to_owned(), affine);
    if image.data.iter().any(|v| !v.is_finite()) {
        return Err(LayerSegError::new_err("image holds NaN or infinite values"));
    }
    let organ_affine = organ_affine
        .map(affine_from_py)
        .transpose()?
        .unwrap_or(affine);
    let organ = organ_mask.map(|m| Volume::new(m.as_array().to_owned(), organ_affine));
    if let Some(organ) = &organ {
        image
            .ensure_same_grid("scan", organ, "organ_mask")
            .map_err(IntoPyErr::into_py_err)?;
    }
    Ok((image, organ))
}
