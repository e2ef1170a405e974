//! The profile's `synthesis.acquisition` section: how the synthetic case's *acquisition* is
//! randomised, so that pretraining on nearly isotropic research scans generalises to clinical
//! ones (issue 17): thick slices with partial-volume averaging, smooth intensity bias, other
//! contrasts, noise, and partial coverage along the slice axis.
//!
//! Where in the pipeline: every step acts on the *blended* image, after the tumour is in, and
//! the very same step (same drawn values, same noise field) acts on the healthy layer. They
//! model the scanner, and the scanner sees the tumour like any other tissue: a thick slice
//! averages the lesion with its neighbours, the coil's bias field multiplies it, and the noise
//! sits on top of it. Applying them to the healthy scan before blending would leave a crisp,
//! unbiased, noise-free lesion in a degraded scan, a cue that real clinical scans never give.
//! Degrading the healthy layer the same way keeps the targets consistent with the image: where
//! the image equals the healthy layer before, it equals it after. The mask goes through the
//! same partial-volume averaging (thresholded at one half) and coverage, so it marks what is
//! visible as tumour in the degraded image; the tumour layer stays "the image inside the mask".
//!
//! Order (the physical order of an acquisition): contrast and gamma (tissue contrast of the
//! sequence or enhancement phase), bias field (receive-coil sensitivity), slice thickness
//! (each slice integrates its slab; back to the grid by linear interpolation, as a resampled
//! clinical scan is), noise (on the grid), coverage (slices never acquired hold `background`).
//!
//! Every step is optional (absent: never applied) and has a `probability`. One slice axis is
//! drawn per case, uniformly among the three voxel axes, for both thickness and coverage.
//!
//! The built-in settings come from acquisition physics and clinical norms, not from any
//! labelled case:
//! - `brain-mri`: slices of 1 to 7 mm half the time (clinical 2D brain MRI is 3 to 7 mm thick,
//!   research 3D 1 mm); a cosine bias field of order 3 reaching e^0.05 to e^0.3 (5 to 35 %
//!   inhomogeneity, the range of receive-coil shading at 1.5 and 3 T) half the time; gamma 0.7
//!   to 1.5 (nnU-Net's range) for other tissue contrasts; Rician noise up to 5 % of the brain's
//!   mean (an SNR of 20 and more) half the time; a band of 50 to 100 % of the slices a quarter
//!   of the time. No contrast step: the profile's z-score on the non-zero voxels undoes any
//!   linear map of them, so it would change nothing. The background stays 0 (skull-stripped
//!   scans, and the z-score's foreground, are the non-zero voxels).
//! - `liver-ct`: slices of 1 to 5 mm half the time (abdominal CT is read at 0.6 to 5 mm);
//!   contrast 0.8 to 1.2 about the liver's mean a third of the time (tube voltage and
//!   enhancement phase scale the iodine enhancement, so lesion-to-liver differences vary);
//!   Gaussian noise of up to 20 HU on top of the scan's own half the time (standard to low-dose
//!   abdominal CT has 10 to 30 HU); a band of 60 to 100 % of the slices a fifth of the time
//!   (liver-only arterial phases), air (-1024 HU) outside it. No bias field and no gamma: CT
//!   has no receive-coil shading, and Hounsfield units are a calibrated linear scale that the
//!   profile's HU window and the lesions' HU drop rely on.

use serde::{Deserialize, Serialize};

use super::Range;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acquisition {
    /// The value of voxels outside the covered band (MRI: 0, the background; CT: air, -1024).
    pub background: f64,
    /// Voxels that are exactly 0 are background (nothing measured there, as in a
    /// skull-stripped MRI) and stay 0 through the intensity steps and the noise.
    pub keep_zero_background: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_thickness: Option<SliceThickness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrast: Option<Contrast>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<Gamma>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_field: Option<BiasField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<Noise>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
}

/// Slices `thickness_mm` thick along the slice axis, each the mean of its slab (a box slice
/// profile), at a random phase; then linearly interpolated back onto the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceThickness {
    pub probability: f64,
    pub thickness_mm: Range,
}

/// `x -> pivot + factor * (x - pivot)`, the pivot being the mean of the foreground (the organ
/// for CT): lesion-to-parenchyma differences scale by `factor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contrast {
    pub probability: f64,
    pub factor: Range,
}

/// `x -> m * (x / m)^gamma` with m the foreground mean (sign kept for negative values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gamma {
    pub probability: f64,
    pub gamma: Range,
}

/// A smooth multiplicative field `exp(f)`, f a sum of products of cosines of degree up to
/// `order` along each voxel axis (`cos(pi * l * (i + 0.5) / n)`), random coefficients scaled so
/// that the largest |f| on the grid is the drawn `strength` (factors from e^-s to e^s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiasField {
    pub probability: f64,
    pub order: u32,
    pub strength: Range,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// Additive Gaussian noise (CT).
    Gaussian,
    /// The magnitude of complex Gaussian noise, `sqrt((x + n1)^2 + n2^2)` (MRI).
    Rician,
}

/// Noise of standard deviation `sigma` (per real channel for Rician): in image units (HU for
/// CT), or as a fraction of the foreground mean when `relative_to_foreground_mean`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    pub probability: f64,
    pub kind: NoiseKind,
    pub sigma: Range,
    pub relative_to_foreground_mean: bool,
}

/// A contiguous band of `fraction` of the slices along the slice axis is acquired, the rest
/// holds `background`. The band always contains every tumour (it grows when they need more).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coverage {
    pub probability: f64,
    pub fraction: Range,
}
