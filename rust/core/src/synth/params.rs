//! The parameters of one synthetic case, as sampled: saved as JSON beside the case, so that
//! [`super::synthesize`] can regenerate it byte for byte from the same inputs.

use serde::{Deserialize, Serialize};

use crate::affine::Affine;

/// Bumped when the meaning of a field changes.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthParams {
    pub format: u32,
    pub profile: String,
    pub seed: u64,
    /// The healthy scan's grid: synthesis refuses inputs on another one.
    pub grid: Grid,
    pub size_class: String,
    pub tumours: Vec<TumourParams>,
    pub clip_to_organ: bool,
    pub texture: TextureParams,
    pub intensity: IntensityParams,
    pub opacity: f64,
    pub edge_blur_sigma_mm: f64,
    /// The acquisition randomisation applied after blending (see [`super::acquisition`]);
    /// absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition: Option<AcquisitionParams>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub shape: [usize; 3],
    pub affine: Affine,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TumourParams {
    /// Centre in RAS millimetres.
    pub centre_mm: [f64; 3],
    /// Radius before aspect (for `volume_mm3` sizes, that of a sphere of the nominal volume).
    pub base_radius_mm: f64,
    /// Semi-axes along the tumour's own x, y, z before rotation.
    pub radii_mm: [f64; 3],
    /// Rotations about x, then y, then z (RAS), in degrees: world = centre + Rz Ry Rx (local).
    pub rotation_deg: [f64; 3],
    pub shape: ShapeParams,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShapeParams {
    StarFbm {
        octaves: u32,
        amplitude: f64,
        offset: f64,
        persistence: f64,
        lacunarity: f64,
    },
    /// Control-point displacements in mm along the healthy scan's voxel axes, `n^3` of them,
    /// flattened `(a * n + b) * n + c`; the grid spans the tumour's bounding box.
    ElasticEllipsoid {
        control_points: u32,
        displacements_mm: Vec<[f64; 3]>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextureParams {
    /// `source`: index into the texture scans, or `None` for the healthy scan itself. The
    /// elastic grid spans the healthy scan, displacements in mm along its voxel axes.
    Scan {
        source: Option<usize>,
        control_points: u32,
        displacements_mm: Vec<[f64; 3]>,
        blur_sigma_mm: [f64; 3],
    },
    Noise {
        seed: u64,
        sigma_a_mm: f64,
        sigma_b_mm: f64,
        scale: f64,
        base: f64,
        mean_level: f64,
        threshold: f64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IntensityParams {
    RatioToHealthyMean {
        ratio: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        core: Option<CoreParams>,
    },
    HuDrop {
        drop_hu: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreParams {
    pub fraction: f64,
    pub ratio: f64,
}

/// The drawn acquisition of one case; a step that was not drawn is `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquisitionParams {
    /// The voxel axis (0, 1, 2) slices are stacked along, for thickness and coverage.
    pub slice_axis: usize,
    /// The value outside the covered band.
    pub background: f64,
    /// Voxels exactly 0 stay 0 through the intensity steps and the noise.
    pub keep_zero_background: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrast: Option<ContrastParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<GammaParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_field: Option<BiasFieldParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_thickness: Option<ThicknessParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<CoverageParams>,
}

/// `x -> pivot + factor * (x - pivot)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastParams {
    pub factor: f64,
    pub pivot: f64,
}

/// `x -> reference * (x / reference)^gamma` (sign kept).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GammaParams {
    pub gamma: f64,
    pub reference: f64,
}

/// `x -> x * exp(f)`, f the sum over `(l, m, n) != 0`, each up to `order`, of
/// `coefficients[k] * c_l(i) c_m(j) c_n(k)` with `c_l(i) = cos(pi l (i + 0.5) / n_axis)`,
/// flattened `(l * (order + 1) + m) * (order + 1) + n - 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiasFieldParams {
    pub order: u32,
    pub coefficients: Vec<f64>,
}

/// Slabs `thickness_mm` thick along the slice axis, the first starting `phase` slabs before
/// the grid's first voxel edge (phase in [0, 1)).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThicknessParams {
    pub thickness_mm: f64,
    pub phase: f64,
}

/// Noise of standard deviation `sigma` (image units); the field is a pure function of `seed`
/// and the voxel index.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseParams {
    pub kind: crate::profile::NoiseKind,
    pub sigma: f64,
    pub seed: u64,
}

/// Slices `first..end` along the slice axis are acquired.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageParams {
    pub first: usize,
    pub end: usize,
}

impl SynthParams {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("parameters always serialise")
    }

    pub fn from_json(text: &str) -> crate::Result<SynthParams> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| crate::Error::InvalidInput {
            what: format!("synthesis parameters at {}", e.path()),
            reason: e.into_inner().to_string(),
        })
    }
}
