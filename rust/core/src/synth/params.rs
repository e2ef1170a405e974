//! The parameters of one synthetic case, as sampled: saved as JSON beside the case, so that
//! [`super::synthesize`] can regenerate it byte for byte from the same inputs.

use serde::{Deserialize, Serialize};

use crate::volume::Affine;

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
