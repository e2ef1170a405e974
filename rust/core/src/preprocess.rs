//! From a scan on its own grid to the network's input, and back: reorient to RAS, crop to the
//! region of interest, resample, normalise. [`GridMapping`] undoes the geometric steps exactly,
//! so every output lands on the input's grid.

use ndarray::{s, Array3, ArrayView3, Zip};

use crate::affine::{matmul, Affine};
use crate::bias;
use crate::error::{Error, Result};
use crate::orientation::Reorientation;
use crate::profile::{Normalisation, Profile, Resample, Roi};
use crate::resample::{resize_linear, resize_nearest};
use crate::volume::{bounds, Image, LabelMap, Volume};

/// The network's view of one scan.
#[derive(Debug)]
pub struct Prepared {
    /// Normalised intensities on the network grid.
    pub input: Array3<f32>,
    /// The organ mask (or foreground) on the network grid: outputs are kept inside it.
    pub region: Array3<bool>,
    /// The organ mask on the input grid, when one was given: outputs are kept inside it
    /// exactly, not inside its round trip through the network grid.
    pub input_region: Option<Array3<bool>>,
    pub mapping: GridMapping,
}

/// How the network grid sits in the input grid: RAS reorientation, then a crop, then a resize.
#[derive(Clone, Debug)]
pub struct GridMapping {
    reorientation: Reorientation,
    ras: Volume<()>,
    crop_start: [usize; 3],
    crop_shape: [usize; 3],
    pub net_shape: [usize; 3],
}

impl GridMapping {
    /// A network-grid volume (probabilities, layers) back on the input grid, linearly
    /// interpolated; voxels outside the crop get `fill`.
    pub fn to_input_grid(&self, net: ArrayView3<'_, f32>, fill: f32) -> Image {
        let crop = resize_linear(net, self.crop_shape);
        self.paste(crop, fill)
    }

    /// A network-grid label map back on the input grid, nearest neighbour.
    pub fn labels_to_input_grid(&self, net: ArrayView3<'_, u8>) -> LabelMap {
        let crop = resize_nearest(net, self.crop_shape);
        self.paste(crop, 0)
    }

    /// A label map on the input grid (e.g. a ground truth, on the scan's grid) moved onto the
    /// network grid with nearest neighbour: the training target of that scan.
    pub fn labels_to_network_grid(&self, labels: &LabelMap) -> Array3<u8> {
        let (ras, _) = Reorientation::to_ras(labels);
        let [x, y, z] = self.crop_start;
        let [dx, dy, dz] = self.crop_shape;
        resize_nearest(
            ras.data.slice(s![x..x + dx, y..y + dy, z..z + dz]),
            self.net_shape,
        )
    }

    fn paste<T: Clone + Default>(&self, crop: Array3<T>, fill: T) -> Volume<T> {
        let [a, b, c] = self.ras.shape();
        let mut full = Array3::from_elem((a, b, c), fill);
        let [x, y, z] = self.crop_start;
        let [dx, dy, dz] = self.crop_shape;
        full.slice_mut(s![x..x + dx, y..y + dy, z..z + dz])
            .assign(&crop);
        self.reorientation.from_ras(&self.ras.with_data(full))
    }
}

/// Prepare `image` for the network as `profile` says. `organ` (on the image's grid) narrows the
/// region of interest; profiles whose ROI is an organ mask require it.
pub fn preprocess(image: &Image, organ: Option<&LabelMap>, profile: &Profile) -> Result<Prepared> {
    let (grid, region, mapping) = network_grid(image, organ, profile)?;
    let region = region.data.mapv(|v| v > 0);
    Ok(Prepared {
        input: network_input(grid.data, &region, profile),
        region,
        input_region: organ.map(|m| m.data.mapv(|v| v > 0)),
        mapping,
    })
}

/// The scan on the network grid (reoriented to RAS, cropped to the region of interest, resized),
/// not yet normalised, with that grid's affine; and the region (organ mask, else foreground) on
/// the same grid. Training resamples healthy scans with this once, then synthesises on it.
pub fn network_grid(
    image: &Image,
    organ: Option<&LabelMap>,
    profile: &Profile,
) -> Result<(Image, LabelMap, GridMapping)> {
    if let Some(mask) = organ {
        image.ensure_same_grid("scan", mask, "organ mask")?;
    }
    let (ras, reorientation) = Reorientation::to_ras(image);
    let ras_organ = organ.map(|m| Reorientation::to_ras(m).0);
    let (region_full, margin_mm) = match (&profile.roi, &ras_organ) {
        (Roi::OrganMask { margin_mm }, Some(m)) | (Roi::ForegroundCrop { margin_mm }, Some(m)) => {
            (m.data.mapv(|v| v > 0), *margin_mm)
        }
        (Roi::ForegroundCrop { margin_mm }, None) => (ras.data.mapv(|v| v != 0.0), *margin_mm),
        (Roi::OrganMask { .. }, None) => return Err(Error::Mismatch {
            what: format!("profile {}", profile.name),
            reason:
                "it segments inside an organ mask; pass one (CLI --organ-mask, Python organ_mask=)"
                    .into(),
        }),
    };
    let (crop_start, crop_shape) = bounding_box(&region_full, ras.spacing(), margin_mm)
        .ok_or_else(|| Error::Mismatch {
            what: "region of interest".into(),
            reason: if organ.is_some() {
                "the organ mask is empty".into()
            } else {
                "the scan is all zeros".into()
            },
        })?;
    let [x, y, z] = crop_start;
    let [dx, dy, dz] = crop_shape;
    let window = s![x..x + dx, y..y + dy, z..z + dz];
    let net_shape = network_shape(&profile.resample, crop_shape, ras.spacing());
    let affine = resized_affine(&ras.affine, crop_start, crop_shape, net_shape);
    let grid = Volume::new(resize_linear(ras.data.slice(window), net_shape), affine);
    let region = Volume::new(
        resize_nearest(region_full.slice(window).mapv(u8::from).view(), net_shape),
        affine,
    );
    let mapping = GridMapping {
        reorientation,
        ras: ras.with_data(Array3::from_elem(ras.data.raw_dim(), ())),
        crop_start,
        crop_shape,
        net_shape,
    };
    Ok((grid, region, mapping))
}

/// The network's input from the scan on the network grid: divided by its bias field (estimated
/// inside `region`) when the profile says, then normalised.
pub fn network_input(
    mut grid: Array3<f32>,
    region: &Array3<bool>,
    profile: &Profile,
) -> Array3<f32> {
    if let Some(settings) = &profile.inference.bias_correction {
        bias::correct(&mut grid, region.view(), settings);
    }
    normalise(grid, &profile.normalisation)
}

/// The affine of a crop resized with torch's half-pixel rule: network voxel o sits at crop
/// voxel (o + 0.5) * scale - 0.5.
fn resized_affine(ras: &Affine, start: [usize; 3], crop: [usize; 3], net: [usize; 3]) -> Affine {
    let mut m = [[0.0; 4]; 4];
    m[3][3] = 1.0;
    for d in 0..3 {
        let scale = crop[d] as f64 / net[d] as f64;
        m[d][d] = scale;
        m[d][3] = start[d] as f64 + 0.5 * scale - 0.5;
    }
    matmul(ras, &m)
}

/// Start and shape of the box around `mask`, grown by `margin_mm` and clipped to the volume.
fn bounding_box(
    mask: &Array3<bool>,
    spacing: [f64; 3],
    margin_mm: f64,
) -> Option<([usize; 3], [usize; 3])> {
    let (lo, hi) = bounds(mask, |&v| v)?;
    let shape = mask.shape();
    let mut start = [0; 3];
    let mut size = [0; 3];
    for d in 0..3 {
        let grow = (margin_mm / spacing[d]).ceil() as usize;
        start[d] = lo[d].saturating_sub(grow);
        size[d] = (hi[d] + grow).min(shape[d]) - start[d];
    }
    Some((start, size))
}

fn network_shape(resample: &Resample, crop_shape: [usize; 3], spacing: [f64; 3]) -> [usize; 3] {
    if let Some(size) = resample.target_size {
        return size;
    }
    match resample.target_spacing_mm {
        Some(target) => {
            let mut out = [0; 3];
            for d in 0..3 {
                out[d] = ((crop_shape[d] as f64 * spacing[d] / target[d]).round() as usize).max(1);
            }
            out
        }
        None => crop_shape,
    }
}

/// Intensity normalisation as the profile says (the paper's rules, method.md section 2).
pub fn normalise(mut data: Array3<f32>, rule: &Normalisation) -> Array3<f32> {
    match *rule {
        Normalisation::ZscoreNonzero { min_std } => {
            let (mut n, mut sum, mut sum_sq) = (0u64, 0f64, 0f64);
            for &v in data.iter().filter(|&&v| v != 0.0) {
                n += 1;
                sum += v as f64;
                sum_sq += (v as f64) * (v as f64);
            }
            if n == 0 {
                return data;
            }
            let mean = sum / n as f64;
            let std = (sum_sq / n as f64 - mean * mean).max(0.0).sqrt();
            if std >= min_std {
                data.mapv_inplace(|v| ((v as f64 - mean) / std) as f32);
            } else {
                let (lo, hi) = data
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                if hi > lo {
                    data.mapv_inplace(|v| (v - lo) / (hi - lo));
                }
            }
            data
        }
        Normalisation::HuWindow {
            min,
            max,
            out_min,
            out_max,
        } => {
            let scale = (out_max - out_min) / (max - min);
            Zip::from(&mut data).par_for_each(|v| {
                *v = (((*v as f64).clamp(min, max) - min) * scale + out_min) as f32;
            });
            data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::IDENTITY;

    fn lps_scan() -> Image {
        let affine = [
            [-1.0, 0.0, 0.0, 10.0],
            [0.0, -2.0, 0.0, 20.0],
            [0.0, 0.0, 1.5, -5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let data = Array3::from_shape_fn((20, 16, 12), |(i, j, k)| {
            if (4..15).contains(&i) && (3..12).contains(&j) && (2..10).contains(&k) {
                (i + j + k) as f32
            } else {
                0.0
            }
        });
        Volume::new(data, affine)
    }

    #[test]
    fn brain_profile_squashes_the_foreground_box_and_maps_back_exactly() {
        let profile = Profile::builtin("brain-mri").unwrap();
        let scan = lps_scan();
        let prepared = preprocess(&scan, None, &profile).unwrap();
        assert_eq!(prepared.mapping.net_shape, [128, 128, 128]);
        // z-scored over the non-zero voxels
        let nonzero: Vec<f32> = prepared
            .input
            .iter()
            .copied()
            .filter(|&v| v.abs() > 1e-6)
            .collect();
        assert!(nonzero.len() > 1000);
        // The network grid's affine puts its voxels where they came from.
        let (grid, _, _) = network_grid(&scan, None, &profile).unwrap();
        assert_eq!(grid.orientation().code(), "RAS");
        // A label map goes there and back without moving: the foreground box is recovered.
        let fg = prepared.region.mapv(u8::from);
        let back = prepared.mapping.labels_to_input_grid(fg.view());
        assert_eq!(back.affine, scan.affine);
        assert_eq!(back.data, scan.data.mapv(|v| u8::from(v != 0.0)));
    }

    #[test]
    fn a_blob_keeps_its_world_position_through_the_network_grid() {
        let profile = Profile::builtin("brain-mri").unwrap();
        let scan = lps_scan();
        let mut organ = Array3::<u8>::zeros((20, 16, 12));
        organ.slice_mut(s![6..9, 5..8, 4..6]).fill(1);
        let organ = scan.with_data(organ);
        let (_, region, mapping) = network_grid(&scan, Some(&organ), &profile).unwrap();
        let centroid = |v: &LabelMap| -> [f64; 3] {
            let mut sum = [0.0; 3];
            let mut n = 0.0;
            for ((i, j, k), &l) in v.data.indexed_iter() {
                if l > 0 {
                    let p = [i as f64, j as f64, k as f64, 1.0];
                    for (r, s) in sum.iter_mut().enumerate() {
                        *s += (0..4).map(|c| v.affine[r][c] * p[c]).sum::<f64>();
                    }
                    n += 1.0;
                }
            }
            sum.map(|s| s / n)
        };
        let (world_in, world_net) = (centroid(&organ), centroid(&region));
        for d in 0..3 {
            assert!(
                (world_in[d] - world_net[d]).abs() < 0.05,
                "{world_in:?} vs {world_net:?}"
            );
        }
        let back = mapping.labels_to_input_grid(region.data.view());
        assert_eq!(back.data, organ.data);
    }

    #[test]
    fn organ_profiles_need_a_mask_on_the_same_grid() {
        let profile = Profile::builtin("liver-ct").unwrap();
        let scan = Volume::new(Array3::from_elem((8, 8, 8), -1000.0f32), IDENTITY);
        assert!(preprocess(&scan, None, &profile)
            .unwrap_err()
            .to_string()
            .contains("organ mask"));
        let other = Volume::new(Array3::<u8>::ones((8, 8, 7)), IDENTITY);
        assert!(preprocess(&scan, Some(&other), &profile)
            .unwrap_err()
            .to_string()
            .contains("another grid"));
        let empty = Volume::new(Array3::<u8>::zeros((8, 8, 8)), IDENTITY);
        assert!(preprocess(&scan, Some(&empty), &profile)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn hu_window_maps_linearly_and_clips() {
        let data = Array3::from_shape_vec((1, 1, 4), vec![-1000.0, -100.0, 100.0, 1000.0]).unwrap();
        let rule = Normalisation::HuWindow {
            min: -100.0,
            max: 200.0,
            out_min: 0.0,
            out_max: 1.0,
        };
        let out = normalise(data, &rule);
        let expected = [0.0, 0.0, 200.0 / 300.0, 1.0];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
