//! Sliding-window planning exactly as `monai.inferers.sliding_window_inference` does it: the same
//! padding, window starts and Gaussian importance map, so stitched outputs agree with MONAI's.

use ndarray::Array3;

/// Where the windows go over one (possibly padded) volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowPlan {
    /// The volume's shape before padding.
    pub image_shape: [usize; 3],
    /// Zeros added before each axis when the volume is smaller than the window (MONAI pads
    /// symmetrically, `diff / 2` before and the rest after).
    pub pad_before: [usize; 3],
    pub padded_shape: [usize; 3],
    pub roi: [usize; 3],
    /// Window start corners in the padded volume, last axis fastest (MONAI's order).
    pub starts: Vec<[usize; 3]>,
}

/// Plan windows of size `roi` with fractional `overlap` (MONAI's `_get_scan_interval` and
/// `dense_patch_slices`).
pub fn plan_windows(image_shape: [usize; 3], roi: [usize; 3], overlap: f64) -> WindowPlan {
    let mut pad_before = [0; 3];
    let mut padded_shape = [0; 3];
    for d in 0..3 {
        let diff = roi[d].saturating_sub(image_shape[d]);
        pad_before[d] = diff / 2;
        padded_shape[d] = image_shape[d].max(roi[d]);
    }
    let axis_starts = |d: usize| -> Vec<usize> {
        let (size, patch) = (padded_shape[d], roi[d]);
        let interval = if patch == size {
            patch
        } else {
            ((patch as f64 * (1.0 - overlap)) as usize).max(1)
        };
        let count = (0..size.div_ceil(interval))
            .find(|&i| i * interval + patch >= size)
            .map_or(1, |i| i + 1);
        (0..count)
            .map(|i| {
                let start = i * interval;
                start - (start + patch).saturating_sub(size)
            })
            .collect()
    };
    let (s0, s1, s2) = (axis_starts(0), axis_starts(1), axis_starts(2));
    let mut starts = Vec::with_capacity(s0.len() * s1.len() * s2.len());
    for &a in &s0 {
        for &b in &s1 {
            for &c in &s2 {
                starts.push([a, b, c]);
            }
        }
    }
    WindowPlan {
        image_shape,
        pad_before,
        padded_shape,
        roi,
        starts,
    }
}

/// MONAI's Gaussian importance map: separable `exp(-x^2 / (2 sigma^2))` with
/// `sigma = sigma_scale * roi` and x centred on the window, clamped below at max(min, 1e-3).
pub fn gaussian_importance(roi: [usize; 3], sigma_scale: f64) -> Array3<f32> {
    let axis = |d: usize| -> Vec<f32> {
        let sigma = (roi[d] as f64 * sigma_scale) as f32;
        let half = (roi[d] as f32 - 1.0) / 2.0;
        (0..roi[d])
            .map(|i| {
                let x = i as f32 - half;
                (x * x / (-2.0 * sigma * sigma)).exp()
            })
            .collect()
    };
    let (a, b, c) = (axis(0), axis(1), axis(2));
    let map = Array3::from_shape_fn((roi[0], roi[1], roi[2]), |(i, j, k)| a[i] * b[j] * c[k]);
    let floor = map.iter().copied().fold(f32::INFINITY, f32::min).max(1e-3);
    map.mapv(|v| v.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_volume_and_end_flush() {
        let plan = plan_windows([100, 64, 30], [64, 64, 32], 0.5);
        assert_eq!(plan.padded_shape, [100, 64, 32]);
        assert_eq!(plan.pad_before, [0, 0, 1]);
        // axis 0: interval 32, starts 0, 32, then clamped 36 (flush with the end)
        let axis0: Vec<usize> = plan.starts.iter().map(|s| s[0]).collect();
        assert_eq!(axis0, vec![0, 32, 36]);
        assert!(plan.starts.iter().all(|s| s[1] == 0 && s[2] == 0));
    }

    #[test]
    fn last_axis_varies_fastest() {
        let plan = plan_windows([10, 10, 10], [6, 6, 6], 0.5);
        assert_eq!(&plan.starts[..3], &[[0, 0, 0], [0, 0, 3], [0, 0, 4]]);
        assert_eq!(plan.starts.len(), 27);
    }

    #[test]
    fn gaussian_peaks_in_the_middle_and_is_clamped() {
        let w = gaussian_importance([5, 5, 5], 0.125);
        assert_eq!(w[[2, 2, 2]], 1.0);
        assert!(w[[0, 0, 0]] >= 1e-3 && w[[0, 0, 0]] < w[[1, 1, 1]]);
    }
}
