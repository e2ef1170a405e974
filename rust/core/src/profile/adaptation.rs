//! The profile's `adaptation` section: self-training on a site's unlabelled scans
//! (`layerseg adapt`, the JBHI paper's Stage II "Learning to Adapt", method.md section 8).
//!
//! Each round the model segments every scan. A voxel becomes pseudo-tumour when the mask
//! channel says tumour (probability ≥ `mask_threshold`) and the residual between the input and
//! the predicted healthy layer agrees (`residual_sign` · (x − n̂) ≥ `residual_threshold`, in the
//! profile's normalised intensity units), inside the region of interest. A scan is kept for
//! training when its recomposition L1 (the paper's label-free score, method.md section 6) is at
//! most `max_recomposition_l1`, its pseudo-label has at least `min_label_voxels` voxels on the
//! network grid, and it is among the `keep_fraction` of all scans with the lowest error. The
//! paper's figure keeps cases with reconstruction error below about 0.3 on z-scored brain MRI;
//! the combination rule and the other thresholds are ours (the paper does not give them).

use serde::{Deserialize, Serialize};

use super::Modality;

/// Which sign of residual (input minus healthy layer) marks tumour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualSign {
    /// Tumour is brighter than the healthy tissue would be (FLAIR, T1c enhancement).
    Brighter,
    /// Tumour is darker (hypodense liver tumours in CT).
    Darker,
    /// Either way: the absolute residual.
    Either,
}

impl ResidualSign {
    /// The residual that counts, from input minus healthy layer.
    pub fn apply(self, residual: f32) -> f32 {
        match self {
            ResidualSign::Brighter => residual,
            ResidualSign::Darker => -residual,
            ResidualSign::Either => residual.abs(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adaptation {
    /// Rounds of pseudo-labelling and training when `--rounds` is not given.
    pub rounds: usize,
    /// Optimiser steps of each round's training.
    pub steps_per_round: u64,
    /// Learning rate of the self-training (the model is already trained: lower than pretraining).
    pub lr: f64,
    /// Mask probability at or above which a voxel may be pseudo-tumour.
    pub mask_threshold: f64,
    /// Signed residual at or above which a voxel may be pseudo-tumour (normalised units).
    pub residual_threshold: f64,
    pub residual_sign: ResidualSign,
    /// Scans whose recomposition L1 exceeds this are never kept.
    pub max_recomposition_l1: f64,
    /// At most this fraction of all scans is kept (those with the lowest error; at least one).
    pub keep_fraction: f64,
    /// A pseudo-label smaller than this (voxels on the network grid) drops its scan.
    pub min_label_voxels: usize,
}

impl Adaptation {
    /// The defaults for profiles without an `adaptation` section: z-scored MRI with bright
    /// tumours, or HU-windowed CT (window mapped to [0, 1]) with dark tumours.
    pub fn for_modality(modality: Modality) -> Adaptation {
        match modality {
            Modality::Mri => Adaptation {
                rounds: 2,
                steps_per_round: 200,
                lr: 1e-3,
                mask_threshold: 0.5,
                residual_threshold: 0.5,
                residual_sign: ResidualSign::Brighter,
                max_recomposition_l1: 0.3,
                keep_fraction: 0.5,
                min_label_voxels: 20,
            },
            Modality::Ct => Adaptation {
                rounds: 2,
                steps_per_round: 200,
                lr: 1e-3,
                mask_threshold: 0.5,
                residual_threshold: 0.05,
                residual_sign: ResidualSign::Darker,
                max_recomposition_l1: 0.05,
                keep_fraction: 0.5,
                min_label_voxels: 20,
            },
        }
    }

    pub(super) fn validate(&self) -> std::result::Result<(), (String, String)> {
        let fail = |key: &str, reason: String| Err((format!("adaptation.{key}"), reason));
        if !(1..=100).contains(&self.rounds) {
            return fail("rounds", format!("{} is not in 1..=100", self.rounds));
        }
        if self.steps_per_round == 0 {
            return fail("steps_per_round", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail("lr", format!("must be a positive number, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.mask_threshold) {
            return fail(
                "mask_threshold",
                format!("{} is not in [0, 1]", self.mask_threshold),
            );
        }
        if !self.residual_threshold.is_finite() {
            return fail("residual_threshold", "must be a finite number".into());
        }
        if !(self.max_recomposition_l1.is_finite() && self.max_recomposition_l1 > 0.0) {
            return fail(
                "max_recomposition_l1",
                format!("must be positive, got {}", self.max_recomposition_l1),
            );
        }
        if !(self.keep_fraction > 0.0 && self.keep_fraction <= 1.0) {
            return fail(
                "keep_fraction",
                format!("{} is not in (0, 1]", self.keep_fraction),
            );
        }
        Ok(())
    }
}
