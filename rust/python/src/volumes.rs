//! NIfTI volumes as (numpy array indexed [i, j, k], 4x4 voxel-to-RAS affine) pairs.

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray2, PyReadonlyArray3};
use pyo3::prelude::*;
use std::path::PathBuf;

use layerseg_core::io::{self, ReadOptions};
use layerseg_core::{Affine, Volume};

use crate::errors::LayerSegError;
use crate::gate::without_gil;

type ArrayAndAffine<'py, T> = (Bound<'py, PyArray3<T>>, Bound<'py, PyArray2<f64>>);

fn affine_to_py<'py>(py: Python<'py>, a: &Affine) -> Bound<'py, PyArray2<f64>> {
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

/// Read a NIfTI image as float32 (scl_slope/scl_inter applied) with its voxel-to-RAS affine.
#[pyfunction]
fn read_image(py: Python<'_>, path: PathBuf) -> PyResult<ArrayAndAffine<'_, f32>> {
    let (vol, _) = without_gil(py, || io::read_image(&path, &ReadOptions::default()))?;
    Ok((vol.data.into_pyarray(py), affine_to_py(py, &vol.affine)))
}

/// Read a label map (integers 0..=255) as uint8 with its voxel-to-RAS affine.
#[pyfunction]
fn read_labels(py: Python<'_>, path: PathBuf) -> PyResult<ArrayAndAffine<'_, u8>> {
    let (vol, _) = without_gil(py, || io::read_labels(&path, &ReadOptions::default()))?;
    Ok((vol.data.into_pyarray(py), affine_to_py(py, &vol.affine)))
}

fn reference_meta(py: Python<'_>, reference: Option<PathBuf>) -> PyResult<Option<io::NiftiMeta>> {
    reference
        .map(|r| {
            without_gil(py, || {
                io::read_image(&r, &ReadOptions::default()).map(|(_, m)| m)
            })
        })
        .transpose()
}

/// Write float32 voxels. With `reference` (a NIfTI path) the header geometry is copied from it.
#[pyfunction]
#[pyo3(signature = (path, array, affine, reference=None))]
fn write_image(
    py: Python<'_>,
    path: PathBuf,
    array: PyReadonlyArray3<'_, f32>,
    affine: PyReadonlyArray2<'_, f64>,
    reference: Option<PathBuf>,
) -> PyResult<()> {
    let vol = Volume::new(array.as_array().to_owned(), affine_from_py(affine)?);
    let meta = reference_meta(py, reference)?;
    without_gil(py, || io::write_image(&path, &vol, meta.as_ref()))
}

/// Write a uint8 label map. With `reference` the header geometry is copied from it.
#[pyfunction]
#[pyo3(signature = (path, array, affine, reference=None))]
fn write_labels(
    py: Python<'_>,
    path: PathBuf,
    array: PyReadonlyArray3<'_, u8>,
    affine: PyReadonlyArray2<'_, f64>,
    reference: Option<PathBuf>,
) -> PyResult<()> {
    let vol = Volume::new(array.as_array().to_owned(), affine_from_py(affine)?);
    let meta = reference_meta(py, reference)?;
    without_gil(py, || io::write_labels(&path, &vol, meta.as_ref()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_image, m)?)?;
    m.add_function(wrap_pyfunction!(read_labels, m)?)?;
    m.add_function(wrap_pyfunction!(write_image, m)?)?;
    m.add_function(wrap_pyfunction!(write_labels, m)?)?;
    Ok(())
}
