//! The network-free half of brain extraction (deepbet's recipe, `layerseg_torch::brain`): the
//! scan reoriented to RAS, the box the coarse network's mask gives, and the final mask (largest
//! component, cavities filled, back on the scan's grid) with its volume. The libtorch runtime
//! and a run on the user's torch (`layerseg.monai`) both use it around deepbet's two networks.

use ndarray::{s, Array3, ArrayView3, Axis};

use crate::orientation::Reorientation;
use crate::postprocess::{fill_holes, largest_component};
use crate::volume::{Image, LabelMap};

/// The coarse network's input size (the whole scan, resized).
pub const COARSE_SHAPE: [usize; 3] = [128, 128, 128];
/// The fine network's input size (the box, resized).
pub const FINE_SHAPE: [usize; 3] = [256, 256, 256];
const BBOX_MARGIN: f64 = 0.1;
/// The adult brain volumes (litres) a mask may have before it is taken as a failure. The lower
/// bound holds only for a brain the scan holds whole (see [`BrainMask::cut_by_scan`]).
pub const PLAUSIBLE_LITRES: (f64, f64) = (0.8, 2.2);

/// A brain mask and its volume.
pub struct BrainMask {
    pub mask: LabelMap,
    pub litres: f64,
    /// The mask reaches a face of the scan: the field of view cuts the brain (partial
    /// coverage, as clinical 2D acquisitions have), so it may hold any part of an adult brain.
    pub cut_by_scan: bool,
}

impl BrainMask {
    /// Why this mask is not a plausible adult brain, or `None` when it is: empty, over
    /// [`PLAUSIBLE_LITRES`], or under it while the scan holds the whole brain. A brain the scan
    /// cuts is not held to the lower bound: 20 slices of 1.2 mm hold about 0.3 L of one.
    pub fn implausible(&self) -> Option<String> {
        let (low, high) = PLAUSIBLE_LITRES;
        let too_small = self.litres < low && !self.cut_by_scan;
        if self.litres == 0.0 {
            Some("brain extraction found no brain".into())
        } else if too_small || self.litres > high {
            Some(format!(
                "brain extraction gave {:.2} L, outside the {low} to {high} L of an adult brain",
                self.litres
            ))
        } else {
            None
        }
    }
}

/// A scan on its RAS grid, as deepbet's networks see it, and the way back.
pub struct RasScan {
    pub ras: Image,
    reorientation: Reorientation,
}

impl RasScan {
    pub fn new(image: &Image) -> RasScan {
        let (ras, reorientation) = Reorientation::to_ras(image);
        RasScan { ras, reorientation }
    }

    /// The box of the brain on the RAS grid from the coarse network's mask (any shape; its
    /// largest component counts), `None` when it holds no brain.
    pub fn brain_box(&self, coarse: &Array3<bool>) -> Option<[(usize, usize); 3]> {
        bounding_box(&largest_component(coarse), self.ras.shape())
    }

    /// The brain of `image` (this scan) from the fine network's mask on `bbox`, on `image`'s
    /// grid: the largest component, cavities filled.
    pub fn brain_mask(
        &self,
        image: &Image,
        bbox: [(usize, usize); 3],
        fine: ArrayView3<'_, bool>,
    ) -> BrainMask {
        let mut mask = Array3::from_elem(self.ras.data.dim(), false);
        let [(x0, x1), (y0, y1), (z0, z1)] = bbox;
        mask.slice_mut(s![x0..x1, y0..y1, z0..z1]).assign(&fine);
        let mask = fill_holes(&largest_component(&mask));
        let voxels = mask.iter().filter(|&&v| v).count();
        let litres = voxels as f64 * image.spacing().iter().product::<f64>() / 1e6;
        let cut_by_scan = touches_a_face(&mask);
        let mask = self
            .reorientation
            .from_ras(&self.ras.with_data(mask.mapv(u8::from)));
        BrainMask {
            mask,
            litres,
            cut_by_scan,
        }
    }

    /// No brain: an empty mask on `image`'s grid.
    pub fn no_brain(image: &Image) -> BrainMask {
        BrainMask {
            mask: image.with_data(Array3::zeros(image.data.dim())),
            litres: 0.0,
            cut_by_scan: false,
        }
    }
}

/// Whether any voxel of `mask` lies on the first or last plane along some axis.
fn touches_a_face(mask: &Array3<bool>) -> bool {
    (0..3).any(|axis| {
        let last = mask.len_of(Axis(axis)).saturating_sub(1);
        [0, last]
            .iter()
            .any(|&p| mask.index_axis(Axis(axis), p).iter().any(|&v| v))
    })
}

/// deepbet's box: the planes where the coarse mask covers more than 2 % of the plane, scaled to
/// the scan's shape, grown by 10 % each side and clipped to the scan; `None` for no brain.
fn bounding_box(coarse: &Array3<bool>, shape: [usize; 3]) -> Option<[(usize, usize); 3]> {
    let mut bbox = [(0usize, 0usize); 3];
    for (axis, span) in bbox.iter_mut().enumerate() {
        let planes = coarse.len_of(ndarray::Axis(axis));
        let plane_size = (coarse.len() / planes) as f64;
        let covered: Vec<usize> = (0..planes)
            .filter(|&p| {
                let count = coarse
                    .index_axis(ndarray::Axis(axis), p)
                    .iter()
                    .filter(|&&v| v)
                    .count();
                count as f64 / plane_size > 0.02
            })
            .collect();
        let (first, last) = (*covered.first()?, *covered.last()?);
        let scale = shape[axis] as f64 / planes as f64;
        let centre = ((last + 1 + first) as f64 / 2.0 * scale).round();
        let size = ((last + 1 - first) as f64 * scale * (1.0 + 2.0 * BBOX_MARGIN))
            .round()
            .max(1.0);
        let start = (centre - size / 2.0).trunc().max(0.0) as usize;
        let end = ((centre + size / 2.0).trunc() as usize).min(shape[axis]);
        *span = (start, end);
    }
    Some(bbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_grows_by_a_tenth_each_side_and_stays_in_the_scan() {
        let mut coarse = Array3::from_elem((10, 10, 10), false);
        coarse.slice_mut(s![2..8, 0..10, 5..10]).fill(true);
        let bbox = bounding_box(&coarse, [20, 40, 10]).unwrap();
        // Axis 0: planes 2..8 of 10 -> 4..16 of 20, 12 long, 2.4 more -> 14 -> 3..17.
        assert_eq!(bbox[0], (3, 17));
        assert_eq!(bbox[1], (0, 40));
        assert_eq!(bbox[2], (5, 10));
        assert!(bounding_box(&Array3::from_elem((4, 4, 4), false), [8; 3]).is_none());
    }

    #[test]
    fn implausible_volumes_are_named() {
        let mut affine = [[0.0; 4]; 4];
        for (d, row) in affine.iter_mut().enumerate() {
            row[d] = 1.0;
        }
        let named = |litres, cut_by_scan| {
            BrainMask {
                mask: LabelMap::new(Array3::zeros((2, 2, 2)), affine),
                litres,
                cut_by_scan,
            }
            .implausible()
        };
        assert!(named(0.0, false).unwrap().contains("no brain"));
        assert!(named(0.0, true).unwrap().contains("no brain"));
        assert!(named(3.1, false).unwrap().contains("3.10 L"));
        assert!(named(3.1, true).unwrap().contains("3.10 L"));
        assert!(named(0.3, false).unwrap().contains("0.30 L"));
        assert!(named(1.4, false).is_none());
        // Part of a brain, cut by the scan's field of view.
        assert!(named(0.3, true).is_none());
    }

    #[test]
    fn a_brain_reaching_a_face_of_the_scan_is_cut_by_it() {
        let image = Image::new(
            Array3::zeros((6, 7, 8)),
            [
                [-1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        );
        let scan = RasScan::new(&image);
        let brain = |lo: usize, hi: usize| {
            let fine = Array3::from_elem((hi - lo, 3, 3), true);
            scan.brain_mask(&image, [(lo, hi), (2, 5), (2, 5)], fine.view())
        };
        let inside = brain(1, 5);
        assert!(!inside.cut_by_scan);
        assert_eq!(inside.mask.data.iter().filter(|&&v| v != 0).count(), 36);
        assert!(brain(0, 3).cut_by_scan);
        assert!(brain(3, 6).cut_by_scan);
        assert!(!RasScan::no_brain(&image).cut_by_scan);
    }
}
