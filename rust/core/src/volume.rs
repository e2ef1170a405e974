//! Volumes: voxels plus the 4x4 matrix that maps voxel indices (i, j, k) to RAS millimetres.

use ndarray::{Array3, ArrayView3, ShapeBuilder};
use rayon::prelude::*;
use std::fmt;
use std::mem::MaybeUninit;

use crate::affine::{affines_close, spacing, Affine, Orientation};
use crate::error::{Error, Result};

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

    /// What differs between this grid and `other`'s, in words a user can act on: the shape,
    /// the voxel size, the axis directions or the origin (with the shift in mm). `None` when
    /// [`Volume::same_grid`] holds.
    pub fn grid_difference<U>(&self, other: &Volume<U>) -> Option<String> {
        const TOLERANCE_MM: f64 = 1e-4;
        let three = |v: [f64; 3]| format!("{:.4} x {:.4} x {:.4}", v[0], v[1], v[2]);
        if self.shape() != other.shape() {
            let [a, b, c] = self.shape();
            let [x, y, z] = other.shape();
            return Some(format!("shape {a}x{b}x{c} vs {x}x{y}x{z} voxels"));
        }
        if affines_close(&self.affine, &other.affine, TOLERANCE_MM) {
            return None;
        }
        let (ours, theirs) = (self.spacing(), other.spacing());
        if ours
            .iter()
            .zip(&theirs)
            .any(|(a, b)| (a - b).abs() > TOLERANCE_MM)
        {
            return Some(format!(
                "voxel size {} vs {} mm",
                three(ours),
                three(theirs)
            ));
        }
        let rotated = (0..3)
            .any(|r| (0..3).any(|c| (self.affine[r][c] - other.affine[r][c]).abs() > TOLERANCE_MM));
        if rotated {
            return Some(format!(
                "axis directions {} vs {} (same shape and voxel size)",
                self.orientation(),
                other.orientation()
            ));
        }
        // Rounded to the printed 0.001 mm, so that no "-0.000" appears.
        let shift = [0, 1, 2].map(|r| {
            let mm = other.affine[r][3] - self.affine[r][3];
            if mm.abs() < 5e-4 {
                0.0
            } else {
                mm
            }
        });
        Some(format!(
            "origin shifted by ({:.3}, {:.3}, {:.3}) mm in RAS (same shape, voxel size and axes)",
            shift[0], shift[1], shift[2]
        ))
    }

    /// `Err(Mismatch)` when `other` (called `what`) is not on this grid (called `this`): says
    /// what differs and how to fix it. The one grid check of the CLI and the Python API.
    pub fn ensure_same_grid<U>(&self, this: &str, other: &Volume<U>, what: &str) -> Result<()> {
        match self.grid_difference(other) {
            None => Ok(()),
            Some(difference) => Err(Error::Mismatch {
                what: what.into(),
                reason: format!(
                    "it is on another grid than the {this}: {difference}. {RESAMPLE_HINT}"
                ),
            }),
        }
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

/// What to do about a mask on another grid than the volume it belongs to.
pub const RESAMPLE_HINT: &str = "Resample it onto that grid first (3D Slicer: Resample Image \
    (BRAINS) with that volume as the reference and nearest-neighbour interpolation; Python: \
    nibabel.processing.resample_from_to(mask, reference, order=0))";

/// The box `[lo, hi)` of the voxels of `data` that are `inside`, `None` when there are none.
pub fn bounds<T>(
    data: &Array3<T>,
    inside: impl Fn(&T) -> bool,
) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0; 3];
    for ((i, j, k), v) in data.indexed_iter() {
        if inside(v) {
            for (a, p) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(p);
                hi[a] = hi[a].max(p + 1);
            }
        }
    }
    (lo[0] != usize::MAX).then_some((lo, hi))
}

/// An array with the shape and memory order of `like` (C or Fortran order), its memory-order
/// elements written by several threads: `fill(offset, chunk)` writes every element of `chunk`,
/// which starts at `offset`. Filling or copying a whole scan on one thread (or the allocator
/// zeroing reused memory) is several per cent of a synthesis case. `None` for other layouts.
pub(crate) fn par_like<T: Send, U>(
    like: ArrayView3<'_, U>,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Option<Array3<T>> {
    const CHUNK: usize = 1 << 16;
    let fortran = !like.is_standard_layout() && like.reversed_axes().is_standard_layout();
    if !(like.is_standard_layout() || fortran) {
        return None;
    }
    let len = like.len();
    let mut data = Vec::<T>::with_capacity(len);
    data.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, dst)| fill(i * CHUNK, dst));
    // SAFETY: `fill` wrote every one of the `len` elements just above.
    unsafe { data.set_len(len) };
    let shape = like.raw_dim();
    let out = if fortran {
        Array3::from_shape_vec(shape.f(), data)
    } else {
        Array3::from_shape_vec(shape, data)
    };
    Some(out.expect("the shape matches the data"))
}

/// A copy of `a` in its memory order (C or Fortran), made by several threads; other layouts
/// are copied as ndarray copies them.
pub fn par_copy<T: Copy + Send + Sync>(a: ArrayView3<'_, T>) -> Array3<T> {
    let Some(src) = a.as_slice_memory_order() else {
        return a.to_owned();
    };
    par_like(a, |at, dst| {
        for (d, &v) in dst.iter_mut().zip(&src[at..]) {
            d.write(v);
        }
    })
    .unwrap_or_else(|| a.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::IDENTITY;

    #[test]
    fn par_copy_keeps_values_and_memory_order() {
        // Larger than one chunk, so that several threads write.
        let c = Array3::from_shape_fn((70, 40, 30), |(i, j, k)| (i * 1200 + j * 30 + k) as f32);
        let f = Array3::from_shape_vec(c.raw_dim().f(), c.iter().copied().collect()).unwrap();
        for a in [&c, &f] {
            let copy = par_copy(a.view());
            assert_eq!(&copy, a);
            assert_eq!(copy.strides(), a.strides());
        }
        // A permuted or strided view is copied as ndarray copies it.
        let permuted = c.view().permuted_axes([1, 0, 2]);
        assert_eq!(par_copy(permuted), permuted);
        let strided = c.slice(ndarray::s![..;2, .., 1..]);
        assert_eq!(par_copy(strided), strided);
    }

    #[test]
    fn debug_shows_geometry() {
        let v = Volume::new(Array3::<u8>::zeros((2, 3, 4)), IDENTITY);
        assert_eq!(
            format!("{v:?}"),
            "Volume<u8>(2x3x4, spacing 1.0000x1.0000x1.0000 mm, RAS)"
        );
    }

    #[test]
    fn grid_difference_names_the_field_that_differs() {
        let scan = Volume::new(Array3::<u8>::zeros((4, 5, 6)), IDENTITY);
        let other = |shape: (usize, usize, usize), edit: &dyn Fn(&mut Affine)| {
            let mut affine = IDENTITY;
            edit(&mut affine);
            Volume::new(Array3::<u8>::zeros(shape), affine)
        };
        let same = other((4, 5, 6), &|a| a[0][3] += 5e-5);
        assert_eq!(scan.grid_difference(&same), None);
        assert!(scan.ensure_same_grid("scan", &same, "mask").is_ok());
        let cases: [(Volume<u8>, &str); 4] = [
            (other((4, 5, 7), &|_| {}), "shape 4x5x6 vs 4x5x7 voxels"),
            (
                other((4, 5, 6), &|a| a[2][2] = 3.0),
                "voxel size 1.0000 x 1.0000 x 1.0000 vs 1.0000 x 1.0000 x 3.0000 mm",
            ),
            (
                other((4, 5, 6), &|a| a[0][0] = -1.0),
                "axis directions RAS vs LAS",
            ),
            (
                other((4, 5, 6), &|a| a[1][3] = -30.0),
                "origin shifted by (0.000, -30.000, 0.000) mm",
            ),
        ];
        for (mask, expected) in cases {
            let difference = scan.grid_difference(&mask).unwrap();
            assert!(difference.starts_with(expected), "{difference}");
            let err = scan.ensure_same_grid("scan", &mask, "mask").unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("mask: it is on another grid than the scan: "));
            assert!(message.contains(expected) && message.contains("Resample"));
        }
    }
}
