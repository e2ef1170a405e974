//! From the network's mask probability to a clean uint8 mask.

use ndarray::{Array3, Axis, Zip};
use ndarray_ndimage::{label, label_histogram, Kernel3d};

/// Connected components with 26-connectivity: (labels 1..=n, n).
///
/// ndarray-ndimage's `label` scans lines in iteration order and silently splits components of
/// a Fortran-ordered array (as NIfTI volumes are), so the input goes in C order.
pub fn components(mask: &Array3<bool>) -> (Array3<u32>, usize) {
    label::<u32>(&mask.as_standard_layout(), &Kernel3d::Full.generate())
}

/// The largest connected component (26-connectivity) of `mask`; an empty mask stays empty.
pub fn largest_component(mask: &Array3<bool>) -> Array3<bool> {
    let (labels, count) = components(mask);
    let sizes = label_histogram(&labels, count);
    match (1..sizes.len()).max_by_key(|&l| sizes[l]) {
        Some(largest) => labels.mapv(|l| l as usize == largest),
        None => mask.clone(),
    }
}

/// `mask` with every enclosed cavity filled: background regions (6-connectivity) that do not
/// reach the volume's border become foreground, as `scipy.ndimage.binary_fill_holes`.
pub fn fill_holes(mask: &Array3<bool>) -> Array3<bool> {
    fill_holes_within(mask, [true; 3])
}

/// [`fill_holes`] where only the faces of the axes marked in `border` count as the outside
/// (a volume one voxel thick along an unmarked axis is then a stack of 2D slices).
fn fill_holes_within(mask: &Array3<bool>, border: [bool; 3]) -> Array3<bool> {
    let background = mask.mapv(|v| !v);
    let (labels, count) =
        label::<u32>(&background.as_standard_layout(), &Kernel3d::Star.generate());
    let mut reaches_border = vec![false; count + 1];
    let dims = <[usize; 3]>::from(labels.dim());
    for ((i, j, k), &l) in labels.indexed_iter() {
        let on_face = |axis: usize, at: usize| border[axis] && (at == 0 || at + 1 == dims[axis]);
        if on_face(0, i) || on_face(1, j) || on_face(2, k) {
            reaches_border[l as usize] = true;
        }
    }
    Zip::from(mask)
        .and(&labels)
        .map_collect(|&inside, &l| inside || !reaches_border[l as usize])
}

/// `mask` with everything its lesions enclose: cavities in 3D ([`fill_holes`]) and holes within
/// single slices along any of the three axes. A tumour's extent includes its necrotic core,
/// which is darker than the enhancing rim that a "brighter" layer rule keeps; with thick slices
/// the rim is often closed in each slice but open in 3D.
pub fn fill_enclosed(mask: &Array3<bool>) -> Array3<bool> {
    let mut filled = fill_holes(mask);
    for axis in 0..3 {
        for (index, slice) in mask.axis_iter(Axis(axis)).enumerate() {
            if !slice.iter().any(|&v| v) {
                continue;
            }
            let mut border = [true; 3];
            border[axis] = false;
            let holes = fill_holes_within(&slice.insert_axis(Axis(axis)).to_owned(), border);
            let mut target = filled.index_axis_mut(Axis(axis), index);
            Zip::from(&mut target)
                .and(&holes.index_axis(Axis(axis), 0))
                .for_each(|t, &h| *t |= h);
        }
    }
    filled
}

/// `probability >= threshold`, kept only inside `region` when one is given.
pub fn threshold(
    probability: &Array3<f32>,
    threshold: f32,
    region: Option<&Array3<bool>>,
) -> Array3<bool> {
    match region {
        Some(r) => Zip::from(probability)
            .and(r)
            .map_collect(|&p, &inside| inside && p >= threshold),
        None => probability.mapv(|p| p >= threshold),
    }
}

/// Drop connected components (26-connectivity) smaller than `min_mm3`.
pub fn remove_small_components(
    mask: &Array3<bool>,
    spacing: [f64; 3],
    min_mm3: f64,
) -> Array3<bool> {
    if min_mm3 <= 0.0 {
        return mask.clone();
    }
    let (labels, count) = components(mask);
    let sizes = label_histogram(&labels, count);
    let voxel_mm3 = spacing.iter().product::<f64>();
    let keep: Vec<bool> = sizes
        .iter()
        .map(|&n| n as f64 * voxel_mm3 >= min_mm3)
        .collect();
    labels.mapv(|l| l > 0 && keep[l as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

    #[test]
    fn fortran_ordered_masks_are_labelled_like_c_ordered_ones() {
        use ndarray::ShapeBuilder;
        let shape = (6, 5, 4);
        let pattern = |(i, j, k): (usize, usize, usize)| (i + j + k) % 3 == 0 || i == j;
        let c = Array3::from_shape_fn(shape, pattern);
        let f = Array3::from_shape_fn(shape.f(), pattern);
        assert_eq!(components(&c).1, components(&f).1);
    }

    #[test]
    fn small_blobs_go_big_ones_stay() {
        let mut mask = Array3::from_elem((10, 10, 10), false);
        mask[[1, 1, 1]] = true; // 1 voxel = 8 mm3 at 2 mm
        for i in 4..7 {
            for j in 4..7 {
                mask[[i, j, 5]] = true; // 9 voxels = 72 mm3
            }
        }
        let kept = remove_small_components(&mask, [2.0; 3], 50.0);
        assert!(!kept[[1, 1, 1]]);
        assert_eq!(kept.iter().filter(|&&v| v).count(), 9);
    }

    #[test]
    fn the_largest_component_stays_and_cavities_fill() {
        let mut mask = Array3::from_elem((9, 9, 9), false);
        mask[[0, 0, 0]] = true;
        for i in 2..7 {
            for j in 2..7 {
                for k in 2..7 {
                    mask[[i, j, k]] = !(i == 4 && j == 4 && k == 4);
                }
            }
        }
        let largest = largest_component(&mask);
        assert!(!largest[[0, 0, 0]]);
        assert_eq!(largest.iter().filter(|&&v| v).count(), 124);
        let filled = fill_holes(&largest);
        assert!(filled[[4, 4, 4]]);
        assert_eq!(filled.iter().filter(|&&v| v).count(), 125);
        // A dent open to the outside is not a cavity.
        let mut open = filled.clone();
        for i in 0..5 {
            open[[i, 4, 4]] = false;
        }
        assert_eq!(fill_holes(&open), open);
    }

    #[test]
    fn rings_closed_within_a_slice_are_filled_along_every_axis() {
        for axis in 0..3 {
            // A square ring in one slice across `axis`: open in 3D, closed in its slice.
            let mut mask = Array3::from_elem((7, 7, 7), false);
            let mut slice = mask.index_axis_mut(Axis(axis), 3);
            slice.slice_mut(s![1..6, 1..6]).fill(true);
            slice[[3, 3]] = false;
            assert!(!fill_holes(&mask)[[3, 3, 3]], "open in 3D");
            let filled = fill_enclosed(&mask);
            assert!(
                filled[[3, 3, 3]],
                "axis {axis}: the ring's centre is filled"
            );
            assert_eq!(filled.iter().filter(|&&v| v).count(), 25);
        }
        // A C shape, open to the slice's border side, stays as it is.
        let mut c = Array3::from_elem((5, 7, 7), false);
        c.slice_mut(s![2, 1..6, 1..6]).fill(true);
        c.slice_mut(s![2, 2..4, 2..7]).fill(false);
        assert_eq!(fill_enclosed(&c), c);
    }

    #[test]
    fn threshold_respects_region() {
        let p = Array3::from_shape_vec((1, 1, 3), vec![0.2, 0.6, 0.9]).unwrap();
        let region = Array3::from_shape_vec((1, 1, 3), vec![true, true, false]).unwrap();
        let m = threshold(&p, 0.5, Some(&region));
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![false, true, false]
        );
    }
}
