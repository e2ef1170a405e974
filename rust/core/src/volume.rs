//! Volumes: voxels plus the 4x4 matrix that maps voxel indices (i, j, k) to RAS millimetres.

use ndarray::Array3;
use std::fmt;

use crate::orientation::Orientation;

/// Voxel index (i, j, k, 1) to RAS world coordinates (x, y, z, 1), row-major.
pub type Affine = [[f64; 4]; 4];

/// A 3D volume indexed `[i, j, k]` in the file's own voxel order.
#[derive(Clone, PartialEq)]
pub struct Volume<T> {
    pub data: Array3<T>,
    pub affine: Affine,
}

/// An intensity volume: resampled with linear interpolation.
pub type Image = Volume<f32>;
/// A label map (0 = background): resampled with nearest neighbour, stored as uint8.
pub type LabelMap = Volume<u8>;

pub const IDENTITY: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

impl<T> Volume<T> {
    pub fn new(data: Array3<T>, affine: Affine) -> Self {
        Volume { data, affine }
    }

    pub fn shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Voxel size in mm along each voxel axis (the norms of the affine's columns).
    pub fn spacing(&self) -> [f64; 3] {
        spacing(&self.affine)
    }

    pub fn orientation(&self) -> Orientation {
        Orientation::from_affine(&self.affine)
    }

    /// Same shape and the same affine to within 1e-4 mm: a mask for one overlays the other.
    pub fn same_grid<U>(&self, other: &Volume<U>) -> bool {
        self.shape() == other.shape() && affines_close(&self.affine, &other.affine, 1e-4)
    }

    /// A volume on this grid with other voxels.
    pub fn with_data<U>(&self, data: Array3<U>) -> Volume<U> {
        debug_assert_eq!(data.shape(), self.data.shape());
        Volume::new(data, self.affine)
    }
}

impl<T> fmt::Debug for Volume<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.shape();
        let [x, y, z] = self.spacing();
        write!(
            f,
            "Volume<{}>({a}x{b}x{c}, spacing {x:.4}x{y:.4}x{z:.4} mm, {})",
            std::any::type_name::<T>(),
            self.orientation()
        )
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn debug_shows_geometry() {
        let v = Volume::new(Array3::<u8>::zeros((2, 3, 4)), IDENTITY);
        assert_eq!(
            format!("{v:?}"),
            "Volume<u8>(2x3x4, spacing 1.0000x1.0000x1.0000 mm, RAS)"
        );
    }
}
