//! `prepare(...)` and `Prepared.finish(...)`: `layerseg segment` without its network, for a
//! network run elsewhere (MONAI's BasicUNet on the user's torch, `layerseg.monai.segment`). The
//! scan goes to the network grid exactly as `segment` takes it there, and the raw outputs come
//! back through the same code (`layerseg_core::segmentation::finish`).

use numpy::{IntoPyArray, PyArray3, PyReadonlyArray2, PyReadonlyArray3, PyReadonlyArray4};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

use layerseg_core::brain::RasScan;
use layerseg_core::preprocess::{self, preprocess};
use layerseg_core::segmentation::{check_settings, finish, MaskOptions};
use layerseg_core::{Image, Profile, Volume};
use layerseg_python_common::affine::{affine_from_py, scan_and_organ};
use layerseg_python_common::brain::{brain_mask_to_py, BrainMaskTuple};
use layerseg_python_common::errors::{IntoPyErr, LayerSegError};
use layerseg_python_common::gate::without_gil;

/// One scan on the network grid, and how to bring the network's outputs back to the scan.
#[pyclass(module = "layerseg._layerseg", frozen)]
pub struct Prepared {
    image: Image,
    prepared: preprocess::Prepared,
    profile: Profile,
    overlap: f64,
    mask: MaskOptions,
}

fn warn(py: Python<'_>, text: &str) -> PyResult<()> {
    let message =
        std::ffi::CString::new(text).map_err(|e| LayerSegError::new_err(e.to_string()))?;
    PyErr::warn(
        py,
        &py.get_type::<pyo3::exceptions::PyUserWarning>(),
        &message,
        1,
    )
}

/// Refuses `layerseg segment` settings that cannot mean anything, with its words: a threshold
/// outside [0, 1], an overlap outside [0, 1), a negative smallest component.
#[pyfunction]
#[pyo3(signature = (threshold=None, overlap=None, min_size_mm3=0.0))]
fn check_segment_settings(
    threshold: Option<f64>,
    overlap: Option<f64>,
    min_size_mm3: f64,
) -> PyResult<()> {
    check_settings(threshold, overlap, min_size_mm3)
        .map_err(|why| LayerSegError::new_err(format!("invalid configuration: {why}")))
}

/// The scan (`image` [i, j, k], 4x4 `affine`) reoriented, cropped to its region, resized and
/// normalised as the profile says, with `organ_mask` (on `organ_affine`, default `affine`) as
/// the region when given. The settings of `layerseg segment` (`threshold`, `overlap`,
/// `min_size_mm3`, `raw_mask`; `None`: the profile's) are checked here, before any work, with
/// its words. Warns (`UserWarning`) when the values do not fit the profile's modality.
#[pyfunction]
#[pyo3(signature = (image, affine, profile="brain-mri", organ_mask=None, organ_affine=None, threshold=None, overlap=None, min_size_mm3=0.0, raw_mask=false))]
#[allow(clippy::too_many_arguments)]
fn prepare<'py>(
    py: Python<'py>,
    image: PyReadonlyArray3<'py, f32>,
    affine: PyReadonlyArray2<'py, f64>,
    profile: &str,
    organ_mask: Option<PyReadonlyArray3<'py, u8>>,
    organ_affine: Option<PyReadonlyArray2<'py, f64>>,
    threshold: Option<f64>,
    overlap: Option<f64>,
    min_size_mm3: f64,
    raw_mask: bool,
) -> PyResult<Prepared> {
    check_segment_settings(threshold, overlap, min_size_mm3)?;
    let (image, organ) = scan_and_organ(image, affine, organ_mask, organ_affine)?;
    let profile = Profile::load(profile).map_err(IntoPyErr::into_py_err)?;
    if let Some(why) = profile.modality_mismatch(&image.data) {
        warn(py, &why)?;
    }
    let (image, prepared, profile) = without_gil(py, move || {
        preprocess(&image, organ.as_ref(), &profile).map(|p| (image, p, profile))
    })?;
    Ok(Prepared {
        image,
        prepared,
        overlap: overlap.unwrap_or(profile.inference.overlap),
        profile,
        mask: MaskOptions {
            threshold,
            min_component_mm3: min_size_mm3,
            layers: true,
            raw_mask,
        },
    })
}

#[pymethods]
impl Prepared {
    /// The network input (float32, the network grid), a copy.
    #[getter]
    fn input<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray3<f32>> {
        self.prepared.input.clone().into_pyarray(py)
    }

    /// The profile's sliding-window size.
    #[getter]
    fn roi(&self) -> [usize; 3] {
        self.profile.inference.patch_size
    }

    /// The sliding-window overlap: the one given, else the profile's.
    #[getter]
    fn overlap(&self) -> f64 {
        self.overlap
    }

    /// The segmentation from the network's raw outputs `[3, D, H, W]` (healthy layer, tumour
    /// layer, mask logit) on the network grid: a dict with `mask` (uint8), `probability`,
    /// `healthy`, `tumour` and `residual` (float32), on the scan's grid, as `layerseg.segment`
    /// returns them.
    fn finish<'py>(
        &self,
        py: Python<'py>,
        outputs: PyReadonlyArray4<'py, f32>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let outputs = outputs.as_array().to_owned();
        let result = without_gil(py, || {
            finish(
                &self.image,
                &self.prepared,
                outputs.view(),
                &self.profile,
                &self.mask,
            )
        })?;
        let out = PyDict::new(py);
        out.set_item("mask", result.mask.data.into_pyarray(py))?;
        out.set_item("probability", result.probability.data.into_pyarray(py))?;
        let layers = [
            ("healthy", result.healthy),
            ("tumour", result.tumour),
            ("residual", result.residual),
        ];
        for (key, layer) in layers.into_iter() {
            if let Some(layer) = layer {
                out.set_item(key, layer.data.into_pyarray(py))?;
            }
        }
        Ok(out)
    }
}

/// A head scan on its RAS grid, for deepbet's networks run on the caller's torch: the network-
/// free steps of `layerseg.extract_brain` (`layerseg_core::brain`).
#[pyclass(module = "layerseg._layerseg", frozen)]
pub struct BrainScan {
    image: Image,
    scan: RasScan,
}

/// The scan (`image` [i, j, k], 4x4 `affine`) reoriented to RAS for brain extraction.
#[pyfunction]
fn brain_scan<'py>(
    py: Python<'py>,
    image: PyReadonlyArray3<'py, f32>,
    affine: PyReadonlyArray2<'py, f64>,
) -> PyResult<BrainScan> {
    let image = Volume::new(image.as_array().to_owned(), affine_from_py(affine)?);
    if image.data.iter().any(|v| !v.is_finite()) {
        return Err(LayerSegError::new_err("image holds NaN or infinite values"));
    }
    let scan = py.detach(|| RasScan::new(&image));
    Ok(BrainScan { image, scan })
}

#[pymethods]
impl BrainScan {
    /// The networks' input (float32, a copy): the scan on its RAS grid, a thin slab mirrored
    /// out to head proportions; `brain_box` and `brain_mask` work on this grid.
    #[getter]
    fn ras<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray3<f32>> {
        self.scan.ras.data.clone().into_pyarray(py)
    }

    /// The brain's box `[(start, end)] * 3` on the RAS grid from the coarse network's mask
    /// (its largest component), grown by a tenth each side; `None` when it holds no brain.
    fn brain_box(&self, coarse: PyReadonlyArray3<'_, bool>) -> Option<[(usize, usize); 3]> {
        self.scan.brain_box(&coarse.as_array().to_owned())
    }

    /// The brain on the scan's grid from the fine network's mask on `bbox` (shaped like the
    /// box), as [`BrainMaskTuple`].
    fn brain_mask<'py>(
        &self,
        py: Python<'py>,
        bbox: [(usize, usize); 3],
        fine: PyReadonlyArray3<'py, bool>,
    ) -> PyResult<BrainMaskTuple<'py>> {
        let shape = self.scan.ras.shape();
        let fits = (0..3).all(|a| bbox[a].0 < bbox[a].1 && bbox[a].1 <= shape[a]);
        let extent = bbox.map(|(start, end)| end.saturating_sub(start));
        let fine = fine.as_array().to_owned();
        if !fits || fine.shape() != extent {
            return Err(LayerSegError::new_err(format!(
                "brain mask: a box {bbox:?} inside the RAS grid {shape:?} and a mask of its \
                 extent {extent:?} are needed, got a mask of {:?}",
                fine.shape()
            )));
        }
        let brain = py.detach(|| self.scan.brain_mask(&self.image, bbox, fine.view()));
        Ok(brain_mask_to_py(py, brain))
    }
}

/// Registers the models folder of the installed package; returns the folders searched for
/// shipped models, in order (the same as the libtorch runtime's).
#[pyfunction]
#[pyo3(signature = (packaged=None))]
fn model_dirs(packaged: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(dir) = packaged {
        layerseg_core::models::register_packaged_models(dir);
    }
    layerseg_core::models::model_dirs()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Prepared>()?;
    m.add_class::<BrainScan>()?;
    m.add_function(wrap_pyfunction!(brain_scan, m)?)?;
    m.add_function(wrap_pyfunction!(check_segment_settings, m)?)?;
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add_function(wrap_pyfunction!(model_dirs, m)?)?;
    Ok(())
}
