//! The network-free half of brain extraction (deepbet's recipe, `layerseg_torch::brain`): the
//! scan reoriented to RAS (a thin slab mirrored out to head proportions), the box the coarse
//! network's mask gives, and the final mask (largest component, cavities filled, back on the
//! scan's grid) with its volume. The libtorch runtime and a run on the user's torch
//! (`layerseg.monai`) both use it around deepbet's two networks.

use ndarray::{s, Array3, ArrayView3, Axis};

use crate::affine::Affine;
use crate::orientation::Reorientation;
use crate::postprocess::{fill_holes, largest_component};
use crate::synth::grid::reflect;
use crate::volume::{Image, LabelMap};

/// The coarse network's input size (the whole scan, resized).
pub const COARSE_SHAPE: [usize; 3] = [128, 128, 128];
/// The fine network's input size (the box, resized).
pub const FINE_SHAPE: [usize; 3] = [256, 256, 256];
const BBOX_MARGIN: f64 = 0.1;
/// An axis whose field of view is under this share of the scan's longest one is a thin slab's
/// (partial coverage): it is mirrored out to the longest before the networks see it.
const THIN_SHARE: f64 = 0.5;
/// The most voxels a mirrored-out slab may have (256 MiB of float32): a slab of a finer grid
/// is mirrored out only part of the way.
const MAX_MIRRORED_VOXELS: usize = 1 << 26;
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
    /// The networks' input: the scan on its RAS grid, each thin axis (under [`THIN_SHARE`] of
    /// the longest field of view) mirrored out about the scan's faces to the longest. deepbet
    /// resizes the brain's box to a cube, so 20 slices of 1 to 3 mm would reach the fine network
    /// stretched 5 to 12 times; mirrored out, the slab keeps a head's proportions and its own
    /// intensities (zeros instead led the mask into the air round a T1c head).
    pub ras: Image,
    /// Where the scan itself lies in `ras`, and its RAS affine.
    scan: [(usize, usize); 3],
    scan_affine: Affine,
    reorientation: Reorientation,
}

impl RasScan {
    pub fn new(image: &Image) -> RasScan {
        let (ras, reorientation) = Reorientation::to_ras(image);
        let pads = thin_axis_padding(ras.shape(), ras.spacing());
        let scan = [0, 1, 2].map(|a| (pads[a].0, pads[a].0 + ras.shape()[a]));
        let scan_affine = ras.affine;
        RasScan {
            ras: mirror_out(ras, pads),
            scan,
            scan_affine,
            reorientation,
        }
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
        let [(a0, a1), (b0, b1), (c0, c1)] = self.scan;
        let on_scan = mask.slice(s![a0..a1, b0..b1, c0..c1]).to_owned();
        let mask = fill_holes(&largest_component(&on_scan));
        let voxels = mask.iter().filter(|&&v| v).count();
        let litres = voxels as f64 * image.spacing().iter().product::<f64>() / 1e6;
        let cut_by_scan = touches_a_face(&mask);
        let mask = self
            .reorientation
            .from_ras(&LabelMap::new(mask.mapv(u8::from), self.scan_affine));
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

/// `(before, after)` voxels that take each thin axis's field of view (under [`THIN_SHARE`] of
/// the longest) to the longest, evenly on both sides, within [`MAX_MIRRORED_VOXELS`]; none for
/// the other axes.
fn thin_axis_padding(shape: [usize; 3], spacing: [f64; 3]) -> [(usize, usize); 3] {
    let extent = [0, 1, 2].map(|a| shape[a] as f64 * spacing[a]);
    let longest = extent.iter().copied().fold(0.0, f64::max);
    let mut sizes = shape;
    for a in 0..3 {
        if extent[a] < THIN_SHARE * longest {
            let others: usize = (0..3).filter(|&b| b != a).map(|b| sizes[b]).product();
            let most = (MAX_MIRRORED_VOXELS / others.max(1)).max(shape[a]);
            sizes[a] = ((longest / spacing[a]).round() as usize).clamp(shape[a], most);
        }
    }
    [0, 1, 2].map(|a| {
        let total = sizes[a] - shape[a];
        (total / 2, total - total / 2)
    })
}

/// `image` grown by `(before, after)` voxels along each axis, the new voxels its mirror image
/// about its faces, repeated as often as the width needs (scipy's "reflect", NumPy's
/// `symmetric`: period 2n), and its affine moved to the new first voxel. Not ndarray-ndimage's
/// `pad`: it reads cells it has not filled yet once a side is wider than the axis, which a
/// 20-slice slab grown to 200 is.
fn mirror_out(image: Image, pads: [(usize, usize); 3]) -> Image {
    let Image {
        mut data,
        mut affine,
    } = image;
    for (axis, &(before, after)) in pads.iter().enumerate() {
        if before + after == 0 {
            continue;
        }
        let n = data.len_of(Axis(axis));
        let source: Vec<usize> = (-(before as isize)..(n + after) as isize)
            .map(|p| reflect(p, n))
            .collect();
        data = data.select(Axis(axis), &source);
        for row in affine.iter_mut().take(3) {
            row[3] -= row[axis] * before as f64;
        }
    }
    Image::new(data, affine)
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
    fn a_thin_slab_is_mirrored_out_to_the_longest_field_of_view() {
        // 100 x 100 x 10 mm: axis 2 (5 slices of 2 mm) grows to 50 slices, 22 before, 23 after.
        let pads = thin_axis_padding([100, 50, 5], [1.0, 2.0, 2.0]);
        assert_eq!(pads, [(0, 0), (0, 0), (22, 23)]);
        assert_eq!(
            thin_axis_padding([100, 50, 26], [1.0, 2.0, 2.0]),
            [(0, 0); 3]
        );
        // 20 slices of 0.25 mm x 0.25 mm x 1 mm: 256 would pass the voxel budget, 64 do not.
        let fine = thin_axis_padding([1024, 1024, 20], [0.25, 0.25, 1.0]);
        assert_eq!(fine[2], (22, 22));
        assert_eq!(
            thin_axis_padding([512, 512, 20], [0.5, 0.5, 1.0])[2],
            (118, 118)
        );

        let mut affine = [[0.0; 4]; 4];
        for (d, row) in affine.iter_mut().enumerate() {
            row[d] = 2.0;
            row[3] = 10.0 * d as f64;
        }
        affine[3] = [0.0, 0.0, 0.0, 1.0];
        let slab = Image::new(
            Array3::from_shape_fn((1, 1, 3), |(_, _, k)| k as f32),
            affine,
        );
        let grown = mirror_out(slab, [(0, 0), (0, 0), (7, 4)]);
        let values: Vec<f32> = grown.data.iter().copied().collect();
        assert_eq!(
            values,
            [0., 0., 1., 2., 2., 1., 0., 0., 1., 2., 2., 1., 0., 0.]
        );
        // The scan's first voxel keeps its place in the world.
        assert_eq!(grown.affine[2][3], 20.0 - 7.0 * 2.0);
    }

    #[test]
    fn the_mask_of_a_mirrored_slab_is_the_scans_own() {
        let mut affine = [[0.0; 4]; 4];
        for (d, row) in affine.iter_mut().enumerate() {
            row[d] = 1.0;
        }
        let image = Image::new(Array3::zeros((40, 40, 4)), affine);
        let scan = RasScan::new(&image);
        assert_eq!(scan.ras.shape(), [40, 40, 40]);
        // A brain over the whole padded box: on the scan, every voxel, cut by its faces.
        let fine = Array3::from_elem((40, 40, 40), true);
        let brain = scan.brain_mask(&image, [(0, 40); 3], fine.view());
        assert_eq!(brain.mask.data.dim(), (40, 40, 4));
        assert!(brain.mask.data.iter().all(|&v| v == 1));
        assert!(brain.cut_by_scan);
        assert_eq!(brain.mask.affine, image.affine);
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
