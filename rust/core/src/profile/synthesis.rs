//! The `synthesis` section of a profile: every range a synthetic tumour is drawn from.

use serde::{Deserialize, Serialize};

use super::Range;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synthesis {
    /// Tumour sizes and counts, as weighted classes (one class is drawn per sample).
    pub size: Vec<SizeClass>,
    pub shape: Shape,
    pub aspect: Aspect,
    /// Rotation angles about x, y, z (RAS), each drawn independently, in degrees.
    pub rotation_deg: Range,
    pub placement: Placement,
    /// Cut the tumour to the organ mask (or, without one, to the non-zero voxels).
    pub clip_to_organ: bool,
    pub texture: Texture,
    pub intensity: Intensity,
    /// Global opacity alpha of the blend `X = N + alpha * w * (S - N)`.
    pub opacity: Range,
    /// Gaussian sigma (mm) of the blend weight w at the tumour edge; 0 keeps a hard edge.
    pub edge_blur_sigma_mm: Range,
    /// How the scan's acquisition is randomised after blending ([`super::Acquisition`]);
    /// absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition: Option<super::Acquisition>,
}

/// One size class, e.g. Hu et al.'s "small": its components are all placed in the same sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeClass {
    pub name: String,
    pub weight: f64,
    pub components: Vec<SizeComponent>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeComponent {
    /// How many tumours of this size.
    pub count: Range<u32>,
    pub size: Size,
    /// Standard deviation (mm) of the control-point displacements of an `elastic_ellipsoid`
    /// shape; required for that shape, refused for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape_elastic_sigma_mm: Option<Range>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Size {
    /// Nominal volume V (mm^3); the base radius is the radius of a sphere of volume V.
    VolumeMm3 { volume_mm3: Range },
    /// The base radius directly.
    RadiusMm { radius_mm: Range },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// A sphere whose radius along each direction u is `1 + amplitude * fbm(u + offset)` (a
    /// star-shaped, deformed icosphere as in the paper), then scaled and rotated.
    StarFbm {
        octaves: Range<u32>,
        amplitude: Range,
        offset: Range,
        persistence: f64,
        lacunarity: f64,
    },
    /// A scaled, rotated ellipsoid under a cubic B-spline deformation (Hu et al.).
    ElasticEllipsoid { control_points: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Aspect {
    /// The paper: radii `(r q, r / q, r)` with q drawn from `q`.
    Paper { q: Range },
    /// Each radius is `r * s`, with s drawn for each axis independently.
    PerAxis { scale: Range },
}

/// Where a tumour centre goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    /// A fraction of the organ's (or foreground's) RAS bounding box along each axis, measured from
    /// its minimum (right, posterior, inferior). Each axis lists intervals; one is picked with
    /// equal odds. The paper's hemisphere rule is `x: [[0.24, 0.44], [0.56, 0.76]]`.
    BboxFraction {
        x: Vec<Range>,
        y: Vec<Range>,
        z: Vec<Range>,
    },
    /// A voxel of the organ mask, uniformly; the profile then needs `--organ-mask`.
    InsideMask,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Texture {
    /// Anatomy of another scan (or of the healthy scan itself), elastically deformed and
    /// blurred: the paper's ED + GB.
    Scan {
        elastic: Elastic,
        /// Per-axis Gaussian sigma in mm, each drawn independently.
        blur_sigma_mm: Range,
    },
    /// Hu et al.'s smoothed noise: uniform noise blurred by `sigma_a`, rescaled to
    /// `[base, base + scale]`, thresholded against fresh noise, blurred by `sigma_b`, then
    /// scaled so that the mean above `threshold` is `mean_level` and clipped to [0, 1].
    Noise {
        sigma_a_mm: Range,
        sigma_b_mm: Range,
        scale: Range,
        base: Range,
        mean_level: Range,
        threshold: f64,
    },
}

/// A cubic B-spline deformation: `control_points` per axis spanning the volume (a SimpleITK /
/// TorchIO mesh of `control_points - 3` cells), the outer `locked_borders` layers fixed at zero,
/// free displacements uniform in `[-max, max]` mm with `max` drawn from `max_displacement_mm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Elastic {
    pub control_points: u32,
    pub locked_borders: u32,
    pub max_displacement_mm: Range,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Intensity {
    /// MRI: the tumour texture is scaled so that its mean is `ratio` times the mean of the
    /// healthy organ. One mode is drawn by weight per sample. A mode with a `core` makes a
    /// darker (or brighter) centre inside a rim: voxels whose normalised radius is below
    /// `core.fraction` get `core.ratio` instead (e.g. necrotic cores with enhancing rims in T1c).
    RatioToHealthyMean { modes: Vec<RatioMode> },
    /// CT: the image is lowered by `drop_hu * texture` inside the tumour (hypodense lesions).
    /// Hu's noise texture averages about one half inside the mask, so a lesion's mean contrast
    /// to the parenchyma is about half of `drop_hu` (0.45 to 0.53 of it over 8 seeds in the
    /// TotalSegmentator CT's liver): liver-ct's 60 to 145 HU give lesions about 29 to 70 HU darker.
    HuDrop { drop_hu: Range },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioMode {
    pub weight: f64,
    pub ratio: Range,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreSpec {
    /// Normalised radius (0 centre, 1 boundary) below which a voxel belongs to the core.
    pub fraction: Range,
    pub ratio: Range,
}
