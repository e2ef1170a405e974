//! Segmentation metrics in physical units, as MONAI computes them (`compute_dice`,
//! `compute_hausdorff_distance(percentile=95)`, `compute_average_surface_distance(symmetric=True)`):
//! Dice, Jaccard, HD95 and average symmetric surface distance in mm, sensitivity, specificity,
//! and lesion-wise detection.

use ndarray::{Array3, Zip};
use serde::Serialize;

use crate::distance::distance_to;
use crate::postprocess::components;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// 1.0 when both masks are empty.
    pub dice: f64,
    pub jaccard: f64,
    /// The larger of the two directed 95th-percentile surface distances (MONAI's HD95); `None`
    /// when either mask is empty.
    pub hd95_mm: Option<f64>,
    /// Mean of all surface distances, both directions pooled (MONAI's symmetric ASD); `None`
    /// when either mask is empty.
    pub assd_mm: Option<f64>,
    pub sensitivity: f64,
    pub specificity: f64,
    pub precision: f64,
    pub truth_ml: f64,
    pub pred_ml: f64,
    /// Connected truth lesions (26-connectivity) and how many any predicted voxel touches.
    pub lesions: usize,
    pub lesions_detected: usize,
    pub lesions_missed: usize,
    /// Predicted components that touch no truth lesion.
    pub false_positive_components: usize,
}

/// Compare a predicted mask with the truth on the same grid. With `region`, only voxels inside
/// it count (e.g. the organ), for the confusion counts and the lesion tallies alike.
pub fn evaluate(
    pred: &Array3<bool>,
    truth: &Array3<bool>,
    spacing: [f64; 3],
    region: Option<&Array3<bool>>,
) -> Metrics {
    let inside = |m: &Array3<bool>| match region {
        Some(r) => Zip::from(m).and(r).map_collect(|&a, &b| a && b),
        None => m.clone(),
    };
    let (pred, truth) = (inside(pred), inside(truth));
    let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
    Zip::from(&pred)
        .and(&truth)
        .for_each(|&p, &t| match (p, t) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => tn += 1,
        });
    if let Some(r) = region {
        tn -= r.iter().filter(|&&v| !v).count() as u64;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let (hd95_mm, assd_mm) = surface_distances(&pred, &truth, spacing);
    let (lesions, lesions_detected, false_positive_components) = lesion_counts(&pred, &truth);
    Metrics {
        dice: ratio(2 * tp, 2 * tp + fp + fn_),
        jaccard: ratio(tp, tp + fp + fn_),
        hd95_mm,
        assd_mm,
        sensitivity: ratio(tp, tp + fn_),
        specificity: ratio(tn, tn + fp),
        precision: ratio(tp, tp + fp),
        truth_ml: (tp + fn_) as f64 * voxel_ml,
        pred_ml: (tp + fp) as f64 * voxel_ml,
        lesions,
        lesions_detected,
        lesions_missed: lesions - lesions_detected,
        false_positive_components,
    }
}

/// Voxels of the mask with a face neighbour outside it (or on the array's edge), as MONAI's
/// `mask ^ binary_erosion(mask)` with face connectivity and a background border.
pub fn surface(mask: &Array3<bool>) -> Array3<bool> {
    let (nx, ny, nz) = mask.dim();
    Array3::from_shape_fn((nx, ny, nz), |(i, j, k)| {
        if !mask[[i, j, k]] {
            return false;
        }
        let edge = i == 0 || j == 0 || k == 0 || i + 1 == nx || j + 1 == ny || k + 1 == nz;
        edge || !mask[[i - 1, j, k]]
            || !mask[[i + 1, j, k]]
            || !mask[[i, j - 1, k]]
            || !mask[[i, j + 1, k]]
            || !mask[[i, j, k - 1]]
            || !mask[[i, j, k + 1]]
    })
}

fn surface_distances(
    pred: &Array3<bool>,
    truth: &Array3<bool>,
    spacing: [f64; 3],
) -> (Option<f64>, Option<f64>) {
    let (sp, st) = (surface(pred), surface(truth));
    if !sp.iter().any(|&v| v) || !st.iter().any(|&v| v) {
        return (None, None);
    }
    let directed = |from: &Array3<bool>, to: &Array3<bool>| -> Vec<f64> {
        let dist = distance_to(to, spacing);
        Zip::from(from)
            .and(&dist)
            .fold(Vec::new(), |mut acc, &f, &d| {
                if f {
                    acc.push(d);
                }
                acc
            })
    };
    let (mut d1, mut d2) = (directed(&sp, &st), directed(&st, &sp));
    let assd = (d1.iter().sum::<f64>() + d2.iter().sum::<f64>()) / (d1.len() + d2.len()) as f64;
    d1.sort_by(f64::total_cmp);
    d2.sort_by(f64::total_cmp);
    let hd95 = percentile(&d1, 95.0).max(percentile(&d2, 95.0));
    (Some(hd95), Some(assd))
}

/// The linear-interpolation percentile of sorted values (numpy's and torch.quantile's default).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// (truth lesions, of which detected, predicted components touching no lesion).
fn lesion_counts(pred: &Array3<bool>, truth: &Array3<bool>) -> (usize, usize, usize) {
    let (truth_labels, n_truth) = components(truth);
    let (pred_labels, n_pred) = components(pred);
    let mut lesion_hit = vec![false; n_truth + 1];
    let mut component_hits = vec![false; n_pred + 1];
    Zip::from(&truth_labels)
        .and(&pred_labels)
        .for_each(|&t, &p| {
            if t > 0 && p > 0 {
                lesion_hit[t as usize] = true;
                component_hits[p as usize] = true;
            }
        });
    let detected = lesion_hit.iter().skip(1).filter(|&&h| h).count();
    let false_positives = component_hits.iter().skip(1).filter(|&&h| !h).count();
    (n_truth, detected, false_positives)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(shape: (usize, usize, usize), from: [usize; 3], to: [usize; 3]) -> Array3<bool> {
        Array3::from_shape_fn(shape, |(i, j, k)| {
            (from[0]..to[0]).contains(&i)
                && (from[1]..to[1]).contains(&j)
                && (from[2]..to[2]).contains(&k)
        })
    }

    #[test]
    fn identical_masks_are_perfect() {
        let m = cube((10, 10, 10), [2, 2, 2], [6, 6, 6]);
        let r = evaluate(&m, &m, [1.0, 1.0, 2.0], None);
        assert_eq!(
            (r.dice, r.jaccard, r.hd95_mm, r.assd_mm),
            (1.0, 1.0, Some(0.0), Some(0.0))
        );
        assert_eq!(
            (r.lesions, r.lesions_detected, r.false_positive_components),
            (1, 1, 0)
        );
        assert!((r.truth_ml - 64.0 * 2.0 / 1000.0).abs() < 1e-12);
    }

    #[test]
    fn shifted_cube_has_hand_computed_scores() {
        let truth = cube((12, 12, 12), [2, 2, 2], [6, 6, 6]);
        let pred = cube((12, 12, 12), [3, 2, 2], [7, 6, 6]);
        let r = evaluate(&pred, &truth, [2.0, 1.0, 1.0], None);
        assert!((r.dice - 0.75).abs() < 1e-12); // overlap 48 of 64 + 64
        assert!((r.jaccard - 48.0 / 80.0).abs() < 1e-12);
        assert!((r.sensitivity - 0.75).abs() < 1e-12);
        assert_eq!(r.hd95_mm, Some(2.0)); // one voxel along the 2 mm axis
    }

    #[test]
    fn lesion_detection_and_false_positives() {
        let mut truth = cube((20, 20, 20), [1, 1, 1], [4, 4, 4]);
        truth |= &cube((20, 20, 20), [10, 10, 10], [13, 13, 13]);
        let mut pred = cube((20, 20, 20), [2, 2, 2], [3, 3, 3]);
        pred |= &cube((20, 20, 20), [16, 16, 16], [18, 18, 18]);
        let r = evaluate(&pred, &truth, [1.0; 3], None);
        assert_eq!((r.lesions, r.lesions_detected, r.lesions_missed), (2, 1, 1));
        assert_eq!(r.false_positive_components, 1);
    }

    #[test]
    fn empty_masks() {
        let empty = Array3::from_elem((5, 5, 5), false);
        let r = evaluate(&empty, &empty, [1.0; 3], None);
        assert_eq!((r.dice, r.hd95_mm), (1.0, None));
        let some = cube((5, 5, 5), [1, 1, 1], [3, 3, 3]);
        let r = evaluate(&empty, &some, [1.0; 3], None);
        assert_eq!((r.dice, r.sensitivity, r.lesions_missed), (0.0, 0.0, 1));
    }

    #[test]
    fn region_limits_the_counts() {
        let truth = cube((10, 10, 10), [1, 1, 1], [3, 3, 3]);
        let pred = cube((10, 10, 10), [6, 6, 6], [8, 8, 8]);
        let region = cube((10, 10, 10), [0, 0, 0], [5, 5, 5]);
        let r = evaluate(&pred, &truth, [1.0; 3], Some(&region));
        assert_eq!(r.false_positive_components, 0);
        assert_eq!(r.specificity, 1.0);
    }
}
