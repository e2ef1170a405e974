//! Resizing volumes to a target shape with the conventions of `torch.nn.functional.interpolate`
//! (`mode="trilinear"` or `"nearest"`, `align_corners=False`), which MONAI's `Resized` uses, so
//! the bundle and the Rust pipeline see the same voxels.
//!
//! Written here rather than with ndarray-ndimage's `zoom` because that follows scipy's
//! corner-aligned convention, which differs from torch's by up to half a voxel.

use ndarray::{Array3, ArrayView3, Axis, Zip};
use rayon::prelude::*;

/// Source position and weights along one axis: for each output index, (i0, i1, weight of i1).
fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// torch's "nearest" (not "nearest-exact"): floor(o * in / out).
fn nearest_taps(input: usize, output: usize) -> Vec<usize> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| ((o as f32 * scale).floor() as usize).min(input - 1))
        .collect()
}

/// Trilinear resize as three separable linear passes.
pub fn resize_linear(data: ArrayView3<'_, f32>, shape: [usize; 3]) -> Array3<f32> {
    let mut current = data.to_owned();
    for (axis, &out_len) in shape.iter().enumerate() {
        let in_len = current.len_of(Axis(axis));
        if in_len == out_len {
            continue;
        }
        let taps = linear_taps(in_len, out_len);
        let mut dim = current.raw_dim();
        dim[axis] = out_len;
        let mut next = Array3::<f32>::zeros(dim);
        let src_lanes: Vec<_> = current.lanes(Axis(axis)).into_iter().collect();
        let dst_lanes: Vec<_> = next.lanes_mut(Axis(axis)).into_iter().collect();
        src_lanes
            .into_par_iter()
            .zip(dst_lanes)
            .for_each(|(src, mut dst)| {
                for (d, &(i0, i1, w)) in dst.iter_mut().zip(&taps) {
                    *d = src[i0] * (1.0 - w) + src[i1] * w;
                }
            });
        current = next;
    }
    current
}

/// Nearest-neighbour resize (for label maps).
pub fn resize_nearest<T: Copy + Send + Sync + Default>(
    data: ArrayView3<'_, T>,
    shape: [usize; 3],
) -> Array3<T> {
    let (a, b, c) = data.dim();
    let (ta, tb, tc) = (
        nearest_taps(a, shape[0]),
        nearest_taps(b, shape[1]),
        nearest_taps(c, shape[2]),
    );
    let mut out = Array3::<T>::default((shape[0], shape[1], shape[2]));
    Zip::indexed(&mut out).par_for_each(|(i, j, k), v| *v = data[[ta[i], tb[j], tc[k]]]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shape_is_identity() {
        let a = Array3::from_shape_fn((3, 4, 5), |(i, j, k)| (i + 2 * j + 3 * k) as f32);
        assert_eq!(resize_linear(a.view(), [3, 4, 5]), a);
        assert_eq!(resize_nearest(a.view(), [3, 4, 5]), a);
    }

    #[test]
    fn upsampling_matches_torch_half_pixel_rule() {
        // torch.nn.functional.interpolate(torch.tensor([0., 10.]).view(1,1,2,1,1), size=(4,1,1),
        // mode="trilinear", align_corners=False) -> [0, 2.5, 7.5, 10]
        let a = Array3::from_shape_vec((2, 1, 1), vec![0.0, 10.0]).unwrap();
        let up = resize_linear(a.view(), [4, 1, 1]);
        assert_eq!(
            up.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 2.5, 7.5, 10.0]
        );
        let near = resize_nearest(a.view(), [4, 1, 1]);
        assert_eq!(
            near.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 0.0, 10.0, 10.0]
        );
    }

    #[test]
    fn downsampling_averages_neighbours() {
        let a = Array3::from_shape_vec((4, 1, 1), vec![0.0, 2.0, 4.0, 6.0]).unwrap();
        let down = resize_linear(a.view(), [2, 1, 1]);
        assert_eq!(down.iter().copied().collect::<Vec<_>>(), vec![1.0, 5.0]);
    }
}
