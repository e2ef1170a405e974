//! NIfTI volumes as (numpy array indexed [i, j, k], 4x4 voxel-to-RAS affine) pairs.

use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray2, PyReadonlyArray3};
use pyo3::prelude::*;
use std::path::PathBuf;

use layerseg_core::io::{self, ReadOptions};
use layerseg_core::Volume;

use layerseg_python_common::affine::{affine_from_py, affine_to_py};
use layerseg_python_common::gate::without_gil;

type ArrayAndAffine<'py, T> = (Bound<'py, PyArray3<T>>, Bound<'py, PyArray2<f64>>);

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

/// Write `data` to `path` through the core's one atomic writer (temp file, fsync, rename, folder
/// sync): a failure leaves no file and an existing one untouched.
#[pyfunction]
fn write_bytes_atomic(py: Python<'_>, path: PathBuf, data: Vec<u8>) -> PyResult<()> {
    without_gil(py, || {
        layerseg_core::atomic::write_atomic(&path, |file| {
            use std::io::Write;
            file.file()
                .write_all(&data)
                .map_err(|e| layerseg_core::Error::io(&path, e))
        })
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write_bytes_atomic, m)?)?;
    m.add_function(wrap_pyfunction!(read_image, m)?)?;
    m.add_function(wrap_pyfunction!(read_labels, m)?)?;
    m.add_function(wrap_pyfunction!(write_image, m)?)?;
    m.add_function(wrap_pyfunction!(write_labels, m)?)?;
    Ok(())
}
