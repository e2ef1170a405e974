//! `synthesize(...)`: one synthetic case from numpy arrays, the GIL released while it runs.

use numpy::{AllowTypeChange, IntoPyArray, PyArrayLike2, PyArrayLike3};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use layerseg_core::synth::{Inputs, Synthesizer};
use layerseg_core::volume::par_copy;
use layerseg_core::{Affine, Error, Profile, Volume};

use layerseg_python_common::errors::to_py;
use layerseg_python_common::gate::without_gil;

fn affine(what: &str, a: &PyArrayLike2<'_, f64, AllowTypeChange>) -> Result<Affine, Error> {
    let a = a.as_array();
    if a.shape() != [4, 4] {
        return Err(Error::InvalidInput {
            what: what.into(),
            reason: format!("must be a 4x4 array, got shape {:?}", a.shape()),
        });
    }
    Ok([0, 1, 2, 3].map(|r| [0, 1, 2, 3].map(|c| a[[r, c]])))
}

/// Blend a synthetic tumour into ``image`` (a 3D array indexed ``[i, j, k]`` with its 4x4
/// voxel-to-RAS ``affine``).
///
/// ``profile`` is a built-in name (``brain-mri``, ``liver-ct``) or a profile JSON path.
/// ``acquisition=False`` switches the profile's acquisition randomisation off (the tumour's own
/// parameters are the same either way). ``organ_mask`` (same shape) is where tumours go and what they are clipped to; ``texture`` is a
/// scan to take the tumour texture from (on ``texture_affine``, default ``affine``); without it
/// the image itself is used. Returns a dict of float32 arrays ``image``, ``healthy``,
/// ``tumour``, a uint8 ``mask`` (all shaped like ``image``) and ``params``, the JSON of the
/// parameters drawn for ``seed``. Without acquisition randomisation (``acquisition=False``, or a
/// profile without that section) ``healthy`` is the input as float32: the very same array
/// object when it already was float32 (not a copy); with it, the input degraded exactly as the
/// image was (thick slices, bias, noise, coverage), so that the layers stay consistent.
#[pyfunction]
#[pyo3(signature = (image, affine, profile="brain-mri", organ_mask=None, texture=None, seed=0, texture_affine=None, acquisition=true))]
#[allow(clippy::too_many_arguments)]
fn synthesize<'py>(
    py: Python<'py>,
    image: PyArrayLike3<'py, f32, AllowTypeChange>,
    affine: PyArrayLike2<'py, f64, AllowTypeChange>,
    profile: &str,
    organ_mask: Option<PyArrayLike3<'py, u8, AllowTypeChange>>,
    texture: Option<PyArrayLike3<'py, f32, AllowTypeChange>>,
    seed: u64,
    texture_affine: Option<PyArrayLike2<'py, f64, AllowTypeChange>>,
    acquisition: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let affine_h = self::affine("affine", &affine).map_err(to_py)?;
    let affine_t = match &texture_affine {
        Some(a) => self::affine("texture_affine", a).map_err(to_py)?,
        None => affine_h,
    };
    let (image_view, organ_view, texture_view) = (
        image.as_array(),
        organ_mask.as_ref().map(|m| m.as_array()),
        texture.as_ref().map(|t| t.as_array()),
    );
    let profile = profile.to_string();
    let (params, out) = without_gil(py, move || {
        // Copied on the gate's threads (the only pool a forked process may use): two scans
        // copied on one thread are several per cent of a case.
        let healthy = Volume::new(par_copy(image_view), affine_h);
        let organ = organ_view.map(|m| Volume::new(par_copy(m), affine_h));
        let textures: Vec<_> = texture_view
            .map(|t| Volume::new(par_copy(t), affine_t))
            .into_iter()
            .collect();
        let mut profile = Profile::load(&profile)?;
        if !acquisition {
            profile.synthesis.acquisition = None;
        }
        let inputs = Inputs {
            healthy: &healthy,
            organ_mask: organ.as_ref(),
            textures: &textures,
        };
        Synthesizer::new(inputs)?.generate(&profile, seed)
    })?;
    let dict = PyDict::new(py);
    dict.set_item("image", out.image.data.into_pyarray(py))?;
    match out.healthy {
        // The acquisition randomisation degraded the healthy layer with the image.
        Some(h) => dict.set_item("healthy", h.data.into_pyarray(py))?,
        None => dict.set_item("healthy", &**image)?,
    }
    dict.set_item("tumour", out.tumour.data.into_pyarray(py))?;
    dict.set_item("mask", out.mask.data.into_pyarray(py))?;
    dict.set_item("params", params.to_json())?;
    Ok(dict)
}

/// The JSON of a profile (built-in name or path), validated.
#[pyfunction]
fn profile_json(py: Python<'_>, name_or_path: String) -> PyResult<String> {
    without_gil(py, move || {
        Profile::load(&name_or_path).map(|p| p.to_json())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(synthesize, m)?)?;
    m.add_function(wrap_pyfunction!(profile_json, m)?)?;
    Ok(())
}
