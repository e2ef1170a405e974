//! The 4x4 voxel-to-RAS affine: its arithmetic, what it says about the grid (voxel size, axis
//! codes) and the boxes it maps between voxel and world space. The one place for affine math.

use std::fmt;

use nalgebra::Matrix4;

use crate::error::{Error, Result};

/// Voxel index (i, j, k, 1) to RAS world coordinates (x, y, z, 1), row-major.
pub type Affine = [[f64; 4]; 4];

pub const IDENTITY: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Voxel size in mm along each voxel axis (the norms of the affine's columns).
pub fn spacing(affine: &Affine) -> [f64; 3] {
    let col = |c: usize| (0..3).map(|r| affine[r][c].powi(2)).sum::<f64>().sqrt();
    [col(0), col(1), col(2)]
}

pub fn affines_close(a: &Affine, b: &Affine, tol: f64) -> bool {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .all(|(x, y)| (x - y).abs() <= tol)
}

pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// Determinant of the 3x3 rotation-zoom part; zero means the affine is degenerate.
pub fn determinant3(a: &Affine) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

/// `affine * (p, 1)`.
pub fn apply(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
}

pub fn inverse(a: &Affine) -> Option<Affine> {
    let m = Matrix4::from_fn(|r, c| a[r][c]);
    let inv = m.try_inverse()?;
    let mut out = [[0.0; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = inv[(r, c)];
        }
    }
    Some(out)
}

/// An invertible affine with finite entries (returned: its inverse), or an error naming `what`.
pub fn check_affine(what: &str, a: &Affine) -> Result<Affine> {
    let invalid = |reason: &str| Error::InvalidInput {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return Err(invalid("the affine has non-finite entries"));
    }
    inverse(a).ok_or_else(|| invalid("the affine is not invertible"))
}

/// The axis-aligned box `(lo, hi)` around the eight corners of the box `[lo, hi]` mapped
/// through `a`.
pub fn bounding_box(a: &Affine, lo: [f64; 3], hi: [f64; 3]) -> ([f64; 3], [f64; 3]) {
    let mut out_lo = [f64::INFINITY; 3];
    let mut out_hi = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let p = [0, 1, 2].map(|ax| {
            if corner >> ax & 1 == 0 {
                lo[ax]
            } else {
                hi[ax]
            }
        });
        let w = apply(a, p);
        for ax in 0..3 {
            out_lo[ax] = out_lo[ax].min(w[ax]);
            out_hi[ax] = out_hi[ax].max(w[ax]);
        }
    }
    (out_lo, out_hi)
}

/// The voxel box `[lo, hi)` (signed, not clipped to any grid) that covers the world box
/// `[lo, hi]`, given the inverse affine `inv`.
pub fn voxel_box(inv: &Affine, lo: [f64; 3], hi: [f64; 3]) -> ([i64; 3], [i64; 3]) {
    let (vlo, vhi) = bounding_box(inv, lo, hi);
    let clamp = |v: f64| v.clamp(-1e9, 1e9) as i64;
    (
        vlo.map(|v| clamp(v.floor())),
        vhi.map(|v| clamp(v.ceil()) + 1),
    )
}

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn lps_like() -> Affine {
        // voxel i -> -x (L), j -> -y (P), k -> +z (S), with translation and 0.9/1.2 mm voxels.
        [
            [-0.9, 0.0, 0.0, 120.0],
            [0.0, -0.9, 0.0, 100.0],
            [0.0, 0.0, 1.2, -50.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    pub(crate) fn pir_like() -> Affine {
        // voxel i -> -y (P), j -> -z (I), k -> +x (R)
        [
            [0.0, 0.0, 1.3, -80.0],
            [-1.0, 0.0, 0.0, 90.0],
            [0.0, -1.0, 0.0, 70.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    #[test]
    fn spacing_is_column_norm() {
        let mut a = IDENTITY;
        a[0][0] = -0.5;
        a[1][2] = 2.0;
        a[2][2] = 0.0;
        a[2][1] = 3.0;
        a[1][1] = 0.0;
        assert_eq!(spacing(&a), [0.5, 3.0, 2.0]);
    }

    #[test]
    fn codes() {
        assert_eq!(Orientation::from_affine(&IDENTITY).code(), "RAS");
        assert_eq!(Orientation::from_affine(&lps_like()).code(), "LPS");
        assert_eq!(Orientation::from_affine(&pir_like()).code(), "PIR");
    }

    #[test]
    fn inverse_undoes_the_affine_and_degenerate_ones_are_refused() {
        for a in [IDENTITY, lps_like(), pir_like()] {
            let inv = check_affine("scan", &a).unwrap();
            let back = apply(&inv, apply(&a, [3.0, -2.0, 7.5]));
            assert!(back
                .iter()
                .zip([3.0, -2.0, 7.5])
                .all(|(x, y)| (x - y).abs() < 1e-12));
            assert!(affines_close(&matmul(&a, &inv), &IDENTITY, 1e-12));
        }
        let mut flat = IDENTITY;
        flat[2][2] = 0.0;
        assert_eq!(determinant3(&flat), 0.0);
        let err = check_affine("scan", &flat).unwrap_err().to_string();
        assert_eq!(err, "scan: the affine is not invertible");
        flat[2][2] = f64::NAN;
        let err = check_affine("scan", &flat).unwrap_err().to_string();
        assert_eq!(err, "scan: the affine has non-finite entries");
    }

    #[test]
    fn voxel_box_covers_the_world_box_it_came_from() {
        let a = pir_like();
        let (lo, hi) = bounding_box(&a, [0.0; 3], [3.0, 4.0, 5.0]);
        assert_eq!((lo, hi), ([-80.0, 87.0, 66.0], [-73.5, 90.0, 70.0]));
        let inv = inverse(&a).unwrap();
        let (vlo, vhi) = voxel_box(&inv, lo, hi);
        // Covers voxels 0..=3, 0..=4, 0..=5, rounding outwards by at most one voxel.
        for ax in 0..3 {
            assert!((-1..=0).contains(&vlo[ax]), "{vlo:?}");
            assert!(
                (4 + ax as i64..=5 + ax as i64).contains(&vhi[ax]),
                "{vhi:?}"
            );
        }
    }
}
