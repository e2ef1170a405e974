//! Metrics (`evaluate`), and the pieces of the core that the MONAI transforms call instead of
//! repeating them: the profiles' z-score and bias correction, the listing of a folder's scans,
//! the model-card checks.

use numpy::{
    IntoPyArray, PyArray3, PyArrayDyn, PyReadonlyArray2, PyReadonlyArray3, PyReadonlyArrayDyn,
};
use pyo3::prelude::*;
use std::path::PathBuf;

use layerseg_core::affine::IDENTITY;
use layerseg_core::preprocess::normalise;
use layerseg_core::profile::Normalisation;
use layerseg_core::Volume;
use layerseg_python_common::affine::affine_from_py;
use layerseg_python_common::errors::{IntoPyErr, LayerSegError};
use layerseg_python_common::gate::{run_detached, without_gil};

/// Compare a predicted mask with the truth (both [i, j, k], non-zero = tumour) on a grid with
/// `spacing` in mm. Returns the metrics as a dict (see `layerseg evaluate`). With affines (from
/// the files), the grids are checked as the CLI checks them; an array without one is taken to
/// lie on the truth's grid.
#[pyfunction]
#[pyo3(signature = (pred, truth, spacing, region=None, pred_affine=None, truth_affine=None, region_affine=None))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    pred: PyReadonlyArray3<'py, u8>,
    truth: PyReadonlyArray3<'py, u8>,
    spacing: [f64; 3],
    region: Option<PyReadonlyArray3<'py, u8>>,
    pred_affine: Option<PyReadonlyArray2<'py, f64>>,
    truth_affine: Option<PyReadonlyArray2<'py, f64>>,
    region_affine: Option<PyReadonlyArray2<'py, f64>>,
) -> PyResult<Bound<'py, PyAny>> {
    let truth_affine = truth_affine
        .map(affine_from_py)
        .transpose()?
        .unwrap_or(IDENTITY);
    let on_grid = |data: PyReadonlyArray3<'py, u8>, affine: Option<PyReadonlyArray2<'py, f64>>| {
        let affine = affine
            .map(affine_from_py)
            .transpose()?
            .unwrap_or(truth_affine);
        PyResult::Ok(Volume::new(data.as_array().mapv(|v| v > 0), affine))
    };
    let truth = Volume::new(truth.as_array().mapv(|v| v > 0), truth_affine);
    let pred = on_grid(pred, pred_affine)?;
    let region = region.map(|r| on_grid(r, region_affine)).transpose()?;
    let check = |other: &Volume<bool>, what: &str| {
        truth
            .ensure_same_grid("truth", other, what)
            .map_err(IntoPyErr::into_py_err)
    };
    check(&pred, "pred")?;
    if let Some(region) = &region {
        check(region, "organ_mask")?;
    }
    let (pred, truth, region) = (pred.data, truth.data, region.map(|r| r.data));
    if spacing.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(LayerSegError::new_err(format!(
            "spacing must be positive, got {spacing:?}"
        )));
    }
    let metrics = run_detached(py, || {
        layerseg_core::metrics::evaluate(&pred, &truth, spacing, region.as_ref())
    });
    let json =
        serde_json::to_string(&metrics).map_err(|e| LayerSegError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (json,))
}

/// The profiles' `zscore_nonzero` rule on an array of any shape, its statistics over every
/// voxel: mean and population std of the non-zero voxels (float64), applied to every voxel;
/// min-max scaling to [0, 1] when the std is below `min_std`; an all-zero array unchanged.
#[pyfunction]
#[pyo3(signature = (array, min_std=0.01))]
fn zscore_nonzero<'py>(
    py: Python<'py>,
    array: PyReadonlyArrayDyn<'py, f32>,
    min_std: f64,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let view = array.as_array();
    let shape = view.shape().to_vec();
    let flat = view.iter().copied().collect::<ndarray::Array1<f32>>();
    let n = flat.len();
    let volume = flat
        .into_shape_with_order((1, 1, n))
        .map_err(|e| LayerSegError::new_err(e.to_string()))?;
    let out = run_detached(py, || {
        normalise(volume, &Normalisation::ZscoreNonzero { min_std })
    });
    let out = out
        .into_shape_with_order(ndarray::IxDyn(&shape))
        .map_err(|e| LayerSegError::new_err(e.to_string()))?;
    Ok(out.into_pyarray(py))
}

/// N4 bias correction (`layerseg_core::bias`) of `image` [i, j, k], the field estimated inside
/// `mask`, with `settings` (JSON of a profile's `inference.bias_correction`; missing keys take
/// ITK's defaults) or, when `settings` is `None`, the section of `profile`: `(corrected, field)`,
/// both float32. `field` is `None`, and `corrected` a copy, when the profile has no section or
/// the mask holds too few positive voxels.
#[pyfunction]
#[pyo3(signature = (image, mask, profile="brain-mri", settings=None))]
#[allow(clippy::type_complexity)]
fn correct_bias<'py>(
    py: Python<'py>,
    image: PyReadonlyArray3<'py, f32>,
    mask: PyReadonlyArray3<'py, bool>,
    profile: &str,
    settings: Option<&str>,
) -> PyResult<(Bound<'py, PyArray3<f32>>, Option<Bound<'py, PyArray3<f32>>>)> {
    let (mut image, mask) = (image.as_array().to_owned(), mask.as_array().to_owned());
    if image.dim() != mask.dim() {
        return Err(LayerSegError::new_err(format!(
            "the mask's shape {:?} is not the image's {:?}",
            mask.dim(),
            image.dim()
        )));
    }
    let settings = match settings {
        Some(json) => Some(
            layerseg_core::profile::BiasCorrection::from_json(json, "bias correction settings")
                .map_err(IntoPyErr::into_py_err)?,
        ),
        None => {
            let profile = layerseg_core::Profile::load(profile).map_err(IntoPyErr::into_py_err)?;
            profile.inference.bias_correction
        }
    };
    let field = run_detached(py, || {
        layerseg_core::bias::correct(&mut image, mask.view(), settings.as_ref()?)
    });
    Ok((image.into_pyarray(py), field.map(|f| f.into_pyarray(py))))
}

/// The scans (NIfTI, NRRD, MetaImage, by extension) directly inside `folder`, sorted by path.
#[pyfunction]
fn scan_files(py: Python<'_>, folder: PathBuf) -> PyResult<Vec<PathBuf>> {
    without_gil(py, || layerseg_core::io::scan_files(&folder))
}

/// A LayerSeg model card, checked as the libtorch runtime checks it
/// (`layerseg_core::model_card`), as JSON text.
#[pyfunction]
fn read_model_card(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    without_gil(py, || {
        let text =
            std::fs::read_to_string(&path).map_err(|e| layerseg_core::Error::io(&path, e))?;
        layerseg_core::model_card::check_model_card(&path, &text).map(|card| card.to_string())
    })
}

/// Whether a checked model card (JSON text) records a fine-tuning or adaptation run, so that
/// the model's own mask is its segmentation (`layerseg_core::model_card::mask_fitted_to_labels`).
#[pyfunction]
fn mask_fitted_to_labels(card: &str) -> PyResult<bool> {
    let card: serde_json::Value = serde_json::from_str(card)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("model card: {e}")))?;
    Ok(layerseg_core::model_card::mask_fitted_to_labels(&card))
}

/// Refuses to run the model at `weights`, whose checked card is `card` (JSON text), under
/// `profile` unless the profile makes the network's input as in training
/// (`layerseg_core::Profile::check_trained_input`).
#[pyfunction]
fn check_model_input(card: &str, profile: &str, weights: PathBuf) -> PyResult<()> {
    let card: serde_json::Value = serde_json::from_str(card)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("model card: {e}")))?;
    let trained = layerseg_core::model_card::trained_input(&card)
        .map_err(pyo3::exceptions::PyValueError::new_err)?;
    if let Some(trained) = trained {
        layerseg_core::Profile::load(profile)
            .and_then(|p| p.check_trained_input(&weights, &trained))
            .map_err(IntoPyErr::into_py_err)?;
    }
    Ok(())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_model_card, m)?)?;
    m.add_function(wrap_pyfunction!(check_model_input, m)?)?;
    m.add_function(wrap_pyfunction!(mask_fitted_to_labels, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(zscore_nonzero, m)?)?;
    m.add_function(wrap_pyfunction!(correct_bias, m)?)?;
    m.add_function(wrap_pyfunction!(scan_files, m)?)?;
    Ok(())
}
