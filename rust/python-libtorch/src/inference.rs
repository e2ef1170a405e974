//! Segmentation and raw sliding-window inference on numpy arrays.

use numpy::{IntoPyArray, PyArray4, PyReadonlyArray2, PyReadonlyArray3};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

use layerseg_core::{NoProgress, Profile, Volume};
use layerseg_torch::inference::{
    segment as run_segment, sliding_window as run_windows, SegmentOptions, WindowOptions,
};
use layerseg_torch::network::Model;
use layerseg_torch::BasicUNetConfig;

use layerseg_python_common::affine::{affine_from_py, scan_and_organ};
use layerseg_python_common::brain::{brain_mask_to_py, BrainMaskTuple};
use layerseg_python_common::errors::LayerSegError;
use layerseg_python_common::progress::PyProgress;

use layerseg_python_common::errors::IntoPyErr;
use layerseg_python_common::gate::without_gil;

fn anyhow_to_py(e: anyhow::Error) -> PyErr {
    LayerSegError::new_err(format!("{e:#}"))
}

/// Run the network over `volume` ([D, H, W] float32) in Gaussian-weighted windows, exactly as
/// MONAI's `sliding_window_inference(mode="gaussian")`; returns the raw [C, D, H, W] outputs.
#[pyfunction]
#[pyo3(signature = (weights, volume, roi, overlap=0.25, batch_size=1, features=None, tta=false, device="cpu"))]
#[allow(clippy::too_many_arguments)]
fn sliding_window<'py>(
    py: Python<'py>,
    weights: PathBuf,
    volume: PyReadonlyArray3<'py, f32>,
    roi: [usize; 3],
    overlap: f64,
    batch_size: usize,
    features: Option<[i64; 6]>,
    tta: bool,
    device: &str,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let device = crate::device(device)?;
    let input = volume.as_array().to_owned();
    let mut config = BasicUNetConfig::default();
    if let Some(f) = features {
        config.features = f;
    }
    let opts = WindowOptions {
        roi,
        overlap,
        batch_size: batch_size.max(1),
        flip_tta: tta,
    };
    let out = without_gil(py, || {
        let model = Model::load(&config, device, &weights)?;
        run_windows(&model, input.view(), &opts, &NoProgress)
    })?;
    Ok(out.into_pyarray(py))
}

/// Segment one scan given as (`image` [i, j, k], 4x4 `affine`). Returns a dict with `mask`
/// (uint8), `probability`, `healthy`, `tumour` and `residual` (float32), all on the input grid,
/// and `organ_mask` (uint8) when one was used. The organ mask lies on `organ_affine` when given
/// (read from its file), else on `affine`. Without one, `auto_brain` extracts the brain for
/// profiles that ask for it. `raw_mask` skips the profile's layer rule, as a model fine-tuned or
/// adapted on labels always does.
#[pyfunction]
#[pyo3(signature = (image, affine, model=None, profile="brain-mri", organ_mask=None, threshold=None, overlap=None, tta=false, min_size_mm3=0.0, device="auto", progress=None, organ_affine=None, auto_brain=true, raw_mask=false, scan_name=None))]
#[allow(clippy::too_many_arguments)]
fn segment<'py>(
    py: Python<'py>,
    image: PyReadonlyArray3<'py, f32>,
    affine: PyReadonlyArray2<'py, f64>,
    model: Option<PathBuf>,
    profile: &str,
    organ_mask: Option<PyReadonlyArray3<'py, u8>>,
    threshold: Option<f64>,
    overlap: Option<f64>,
    tta: bool,
    min_size_mm3: f64,
    device: &str,
    progress: Option<Py<PyAny>>,
    organ_affine: Option<PyReadonlyArray2<'py, f64>>,
    auto_brain: bool,
    raw_mask: bool,
    scan_name: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let (image, organ) = scan_and_organ(image, affine, organ_mask, organ_affine)?;
    let profile_name = profile;
    let profile = Profile::load(profile).map_err(IntoPyErr::into_py_err)?;
    if let Some(why) = profile.modality_mismatch(&image.data) {
        // The CLI's warning, as a Python warning (filterable, and an error under -W error).
        let message =
            std::ffi::CString::new(why).map_err(|e| LayerSegError::new_err(e.to_string()))?;
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyUserWarning>(),
            &message,
            1,
        )?;
    }
    let file =
        layerseg_app::models::resolve(model.as_deref(), profile_name).map_err(anyhow_to_py)?;
    file.check_input(&profile).map_err(anyhow_to_py)?;
    let config = file.config(&profile);
    let device = crate::device(device)?;
    let opts = SegmentOptions {
        threshold,
        overlap,
        batch_size: Some(1),
        flip_tta: tta,
        min_component_mm3: min_size_mm3,
        layers: true,
        raw_mask: raw_mask || file.mask_fitted_to_labels(),
    };
    opts.validate().map_err(IntoPyErr::into_py_err)?;
    let reporter = PyProgress::new(progress);
    let extractor = (organ.is_none() && auto_brain && profile.inference.brain_extraction)
        .then(|| layerseg_app::models::brain_extractor(device))
        .transpose()
        .map_err(anyhow_to_py)?;
    let automatic = extractor
        .map(|extractor| {
            without_gil(py, || {
                let name = scan_name
                    .as_deref()
                    .unwrap_or(std::path::Path::new("image"));
                extractor.automatic_mask(&image, name)
            })
        })
        .transpose()?;
    if let Some(warning) = automatic.as_ref().and_then(|a| a.warning.as_ref()) {
        let message = std::ffi::CString::new(warning.as_str())
            .map_err(|e| LayerSegError::new_err(e.to_string()))?;
        PyErr::warn(
            py,
            &py.get_type::<pyo3::exceptions::PyUserWarning>(),
            &message,
            1,
        )?;
    }
    let organ = organ.or_else(|| automatic.as_ref().and_then(|a| a.organ().cloned()));
    let result = without_gil(py, || {
        let model = Model::load(&config, device, &file.weights)?;
        run_segment(&image, organ.as_ref(), &profile, &model, &opts, &reporter)
    })
    .map_err(|e| reporter.take_error().unwrap_or(e))?;
    let out = PyDict::new(py);
    if let Some(organ) = organ {
        out.set_item("organ_mask", organ.data.into_pyarray(py))?;
    }
    out.set_item("mask", result.mask.data.into_pyarray(py))?;
    out.set_item("probability", result.probability.data.into_pyarray(py))?;
    let layers = [
        ("healthy", result.healthy),
        ("tumour", result.tumour),
        ("residual", result.residual),
    ];
    for (key, layer) in layers {
        if let Some(layer) = layer {
            out.set_item(key, layer.data.into_pyarray(py))?;
        }
    }
    Ok(out)
}

/// The brain mask of one scan (`image` [i, j, k], 4x4 `affine`) by the shipped brain
/// extractor, as [`BrainMaskTuple`].
#[pyfunction]
#[pyo3(signature = (image, affine, device="auto"))]
fn extract_brain<'py>(
    py: Python<'py>,
    image: PyReadonlyArray3<'py, f32>,
    affine: PyReadonlyArray2<'py, f64>,
    device: &str,
) -> PyResult<BrainMaskTuple<'py>> {
    let image = Volume::new(image.as_array().to_owned(), affine_from_py(affine)?);
    if image.data.iter().any(|v| !v.is_finite()) {
        return Err(LayerSegError::new_err("image holds NaN or infinite values"));
    }
    let extractor =
        layerseg_app::models::brain_extractor(crate::device(device)?).map_err(anyhow_to_py)?;
    let brain = without_gil(py, || extractor.extract(&image))?;
    Ok(brain_mask_to_py(py, brain))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(extract_brain, m)?)?;
    m.add_function(wrap_pyfunction!(sliding_window, m)?)?;
    m.add_function(wrap_pyfunction!(segment, m)?)?;
    Ok(())
}
