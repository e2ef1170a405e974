//! Axis orientation codes (RAS, LPS, ...) and exact, reversible reorientation to RAS.
//!
//! Reorientation only permutes and flips voxel axes, so it never interpolates: going to RAS and
//! back returns the same voxels and the same affine bit for bit.

use ndarray::{Array3, Axis};
use std::fmt;

use crate::volume::{matmul, Affine, Volume};

/// For each voxel axis: which world axis (0 = x, 1 = y, 2 = z) it runs along, and whether it runs
/// towards Left/Posterior/Inferior (`true`) instead of Right/Anterior/Superior.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orientation {
    pub axes: [(usize, bool); 3],
}

impl Orientation {
    pub const RAS: Orientation = Orientation {
        axes: [(0, false), (1, false), (2, false)],
    };

    /// The closest axis-aligned orientation, as nibabel's `aff2axcodes` finds it: the voxel axes
    /// are matched to world axes greedily, largest direction-cosine component first.
    pub fn from_affine(affine: &Affine) -> Orientation {
        let mut cosines = [[0.0f64; 3]; 3]; // [voxel axis][world axis]
        for (v, row) in cosines.iter_mut().enumerate() {
            let norm = (0..3).map(|w| affine[w][v].powi(2)).sum::<f64>().sqrt();
            for (w, c) in row.iter_mut().enumerate() {
                *c = if norm > 0.0 { affine[w][v] / norm } else { 0.0 };
            }
        }
        let mut pairs: Vec<(usize, usize)> =
            (0..3).flat_map(|v| (0..3).map(move |w| (v, w))).collect();
        pairs.sort_by(|&(v1, w1), &(v2, w2)| {
            cosines[v2][w2]
                .abs()
                .total_cmp(&cosines[v1][w1].abs())
                .then((v1, w1).cmp(&(v2, w2)))
        });
        let mut axes = [(usize::MAX, false); 3];
        let mut used_world = [false; 3];
        for (v, w) in pairs {
            if axes[v].0 == usize::MAX && !used_world[w] {
                axes[v] = (w, cosines[v][w] < 0.0);
                used_world[w] = true;
            }
        }
        Orientation { axes }
    }

    pub fn code(&self) -> String {
        const LETTERS: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['S', 'I']];
        self.axes
            .iter()
            .map(|&(w, flip)| LETTERS[w][flip as usize])
            .collect()
    }
}

impl fmt::Display for Orientation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

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
    use crate::volume::IDENTITY;

    fn lps_like() -> Affine {
        // voxel i -> -x (L), j -> -y (P), k -> +z (S), with translation and 0.9/1.2 mm voxels.
        [
            [-0.9, 0.0, 0.0, 120.0],
            [0.0, -0.9, 0.0, 100.0],
            [0.0, 0.0, 1.2, -50.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    fn pir_like() -> Affine {
        // voxel i -> -y (P), j -> -z (I), k -> +x (R)
        [
            [0.0, 0.0, 1.3, -80.0],
            [-1.0, 0.0, 0.0, 90.0],
            [0.0, -1.0, 0.0, 70.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    fn world(a: &Affine, ijk: [usize; 3]) -> [f64; 3] {
        let p = [ijk[0] as f64, ijk[1] as f64, ijk[2] as f64, 1.0];
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = (0..4).map(|c| a[r][c] * p[c]).sum();
        }
        out
    }

    #[test]
    fn codes() {
        assert_eq!(Orientation::from_affine(&IDENTITY).code(), "RAS");
        assert_eq!(Orientation::from_affine(&lps_like()).code(), "LPS");
        assert_eq!(Orientation::from_affine(&pir_like()).code(), "PIR");
    }

    #[test]
    fn to_ras_and_back_is_exact_and_keeps_world_positions() {
        for affine in [IDENTITY, lps_like(), pir_like()] {
            let data = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 100 + j * 10 + k) as i32);
            let vol = Volume::new(data, affine);
            let (ras, re) = Reorientation::to_ras(&vol);
            assert_eq!(ras.orientation(), Orientation::RAS);
            // Every voxel keeps its value at the same world position.
            for ((a, b, c), value) in ras.data.indexed_iter() {
                let p = world(&ras.affine, [a, b, c]);
                let (i, j, k) = (*value / 100, (*value / 10) % 10, *value % 10);
                let q = world(&vol.affine, [i as usize, j as usize, k as usize]);
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
