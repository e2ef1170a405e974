//! Exact, reversible reorientation to RAS (the orientation codes themselves are in
//! [`crate::affine`]).
//!
//! Reorientation only permutes and flips voxel axes, so it never interpolates: going to RAS and
//! back returns the same voxels and the same affine bit for bit.

use ndarray::{Array3, Axis};

use crate::affine::{matmul, Orientation};
use crate::volume::Volume;

/// How a volume was reoriented to RAS, so that results can be put back on the original grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Reorientation {
    original: Orientation,
    original_shape: [usize; 3],
}

impl Reorientation {
    pub fn original_orientation(&self) -> Orientation {
        self.original
    }

    /// Reorient `vol` so that its voxel axes run along +x, +y, +z (RAS).
    pub fn to_ras<T: Clone>(vol: &Volume<T>) -> (Volume<T>, Reorientation) {
        let original = vol.orientation();
        let shape = vol.shape();
        // RAS axis w is original voxel axis perm[w].
        let mut perm = [0usize; 3];
        for (v, &(w, _)) in original.axes.iter().enumerate() {
            perm[w] = v;
        }
        let mut view = vol.data.view().permuted_axes(perm);
        // old_index = M * new_index, so that new_affine = old_affine * M.
        let mut m = [[0.0f64; 4]; 4];
        m[3][3] = 1.0;
        for (w, &v) in perm.iter().enumerate() {
            let flip = original.axes[v].1;
            if flip {
                view.invert_axis(Axis(w));
            }
            m[v][w] = if flip { -1.0 } else { 1.0 };
            m[v][3] = if flip { (shape[v] - 1) as f64 } else { 0.0 };
        }
        let data: Array3<T> = view.as_standard_layout().into_owned();
        let ras = Volume::new(data, matmul(&vol.affine, &m));
        (
            ras,
            Reorientation {
                original,
                original_shape: shape,
            },
        )
    }

    /// Map a volume on the RAS grid produced by [`Reorientation::to_ras`] back to the original grid.
    pub fn from_ras<T: Clone>(&self, ras: &Volume<T>) -> Volume<T> {
        let mut view = ras.data.view();
        // new (original-grid) index -> RAS index: inverse of the signed permutation above.
        let mut m = [[0.0f64; 4]; 4];
        m[3][3] = 1.0;
        for (v, &(w, flip)) in self.original.axes.iter().enumerate() {
            if flip {
                view.invert_axis(Axis(w));
            }
            m[w][v] = if flip { -1.0 } else { 1.0 };
            m[w][3] = if flip {
                (self.original_shape[v] - 1) as f64
            } else {
                0.0
            };
        }
        let order = [
            self.original.axes[0].0,
            self.original.axes[1].0,
            self.original.axes[2].0,
        ];
        let data: Array3<T> = view.permuted_axes(order).as_standard_layout().into_owned();
        Volume::new(data, matmul(&ras.affine, &m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::tests::{lps_like, pir_like};
    use crate::affine::{apply, IDENTITY};

    #[test]
    fn to_ras_and_back_is_exact_and_keeps_world_positions() {
        for affine in [IDENTITY, lps_like(), pir_like()] {
            let data = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 100 + j * 10 + k) as i32);
            let vol = Volume::new(data, affine);
            let (ras, re) = Reorientation::to_ras(&vol);
            assert_eq!(ras.orientation(), Orientation::RAS);
            // Every voxel keeps its value at the same world position.
            for ((a, b, c), value) in ras.data.indexed_iter() {
                let p = apply(&ras.affine, [a as f64, b as f64, c as f64]);
                let (i, j, k) = (*value / 100, (*value / 10) % 10, *value % 10);
                let q = apply(&vol.affine, [i as f64, j as f64, k as f64]);
                for d in 0..3 {
                    assert!((p[d] - q[d]).abs() < 1e-9);
                }
            }
            let back = re.from_ras(&ras);
            assert_eq!(back.data, vol.data);
            assert_eq!(back.affine, vol.affine);
        }
    }
}
