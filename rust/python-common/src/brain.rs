//! A brain mask as both extensions hand it to Python.

use layerseg_core::brain::BrainMask;
use numpy::{IntoPyArray, PyArray3};
use pyo3::prelude::*;

/// `(mask uint8 on the scan's grid, litres, why it is implausible or None, whether the scan's
/// field of view cuts the brain)`; `layerseg.extract_brain` names them.
pub type BrainMaskTuple<'py> = (Bound<'py, PyArray3<u8>>, f64, Option<String>, bool);

pub fn brain_mask_to_py(py: Python<'_>, brain: BrainMask) -> BrainMaskTuple<'_> {
    let implausible = brain.implausible();
    (
        brain.mask.data.into_pyarray(py),
        brain.litres,
        implausible,
        brain.cut_by_scan,
    )
}
