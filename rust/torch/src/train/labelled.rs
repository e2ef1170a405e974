//! Labelled real scans as a [`SampleSource`], for fine-tuning and self-training: each scan is
//! moved onto the network grid and normalised once; each sample is a patch with its label,
//! centred on a tumour voxel for a fixed fraction of the samples (the positive/negative balance,
//! nnU-Net's foreground oversampling) and anywhere otherwise, then augmented
//! ([`layerseg_core::augment`]). Sample `index` is a pure function of the cases, the settings,
//! the seed and `index`.

use layerseg_core::augment::Augmentation;
use layerseg_core::datalist::LabelledScan;
use layerseg_core::preprocess::{network_grid, network_input};
use layerseg_core::Profile;
use ndarray::{s, Array3};

use super::source::{Sample, SampleSource, SourceError};
use super::synthetic::{invalid, mix, pad_to};
use crate::error::{Error, Result};

/// One labelled case on the network grid: normalised intensities and the tumour mask (0/1).
#[derive(Clone, Debug)]
pub struct GridCase {
    pub name: String,
    pub input: Array3<f32>,
    pub label: Array3<u8>,
}

impl GridCase {
    /// The scan preprocessed as for inference, its label moved onto the same grid.
    pub fn from_scan(scan: &LabelledScan, profile: &Profile) -> Result<GridCase> {
        let (grid, region, mapping) = network_grid(&scan.image, scan.organ.as_ref(), profile)
            .map_err(|e| invalid(std::path::Path::new(&scan.name), e))?;
        Ok(GridCase {
            name: scan.name.clone(),
            input: network_input(grid.data, &region.data.mapv(|v| v > 0), profile),
            label: mapping.labels_to_network_grid(&scan.label),
        })
    }
}

/// A case padded to at least the patch, with its tumour voxels listed for positive patches.
struct Padded {
    input: Array3<f32>,
    label: Array3<u8>,
    tumour: Vec<[usize; 3]>,
}

/// Patches of labelled cases; see the module documentation.
pub struct LabelledSource {
    cases: Vec<Padded>,
    patch: [usize; 3],
    augmentation: Augmentation,
    positive_fraction: f64,
    seed: u64,
}

impl LabelledSource {
    /// `positive_fraction` of the patches are centred on a tumour voxel (when the case has one).
    pub fn new(
        cases: Vec<GridCase>,
        patch: [usize; 3],
        augmentation: Augmentation,
        positive_fraction: f64,
        seed: u64,
    ) -> Result<LabelledSource> {
        if cases.is_empty() {
            return Err(Error::Config("no labelled cases to train on".to_string()));
        }
        if !(0.0..=1.0).contains(&positive_fraction) {
            return Err(Error::Config(format!(
                "the positive patch fraction {positive_fraction} is not in [0, 1]"
            )));
        }
        augmentation.validate().map_err(Error::Config)?;
        let cases = cases
            .into_iter()
            .map(|case| {
                if case.input.dim() != case.label.dim() {
                    return Err(Error::Shape {
                        what: format!("label of {}", case.name),
                        expected: format!("{:?} like its image", case.input.dim()),
                        got: case.label.shape().iter().map(|&n| n as i64).collect(),
                    });
                }
                let fill = case.input.iter().copied().fold(f32::INFINITY, f32::min);
                let input = pad_to(case.input, patch, fill);
                let label = pad_to(case.label, patch, 0);
                let tumour = label
                    .indexed_iter()
                    .filter(|(_, &v)| v != 0)
                    .map(|((i, j, k), _)| [i, j, k])
                    .collect();
                Ok(Padded {
                    input,
                    label,
                    tumour,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LabelledSource {
            cases,
            patch,
            augmentation,
            positive_fraction,
            seed,
        })
    }

    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }
}

impl SampleSource for LabelledSource {
    /// The image patch as `image`, its label as `mask`; `healthy` is the image as well (the
    /// healthy layer's target outside the tumour) and `tumour` is zeros (fine-tuning has no
    /// tumour-layer target).
    fn sample(&self, index: u64) -> std::result::Result<Sample, SourceError> {
        let case = &self.cases[(index % self.cases.len() as u64) as usize];
        let grid = case.input.dim();
        let grid = [grid.0, grid.1, grid.2];
        let size = self.patch;
        let room = [0, 1, 2].map(|a| grid[a] - size[a]);
        let draw = |stream: u64, n: usize| (mix(self.seed, index, stream) % n as u64) as usize;
        let u = mix(self.seed, index, 20) as f64 / u64::MAX as f64;
        let start = if u < self.positive_fraction && !case.tumour.is_empty() {
            let centre = case.tumour[draw(21, case.tumour.len())];
            [0, 1, 2].map(|a| centre[a].saturating_sub(size[a] / 2).min(room[a]))
        } else {
            [0, 1, 2].map(|a| draw(22 + a as u64, room[a] + 1))
        };
        let window = s![
            start[0]..start[0] + size[0],
            start[1]..start[1] + size[1],
            start[2]..start[2] + size[2]
        ];
        let params = self.augmentation.sample(mix(self.seed, index, 25));
        let image = params.apply(case.input.slice(window).to_owned());
        let mask = params.mirrored(case.label.slice(window).mapv(|v| f32::from(v.min(1))));
        Ok(Sample {
            healthy: image.clone(),
            tumour: Array3::zeros(image.raw_dim()),
            image,
            mask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str) -> GridCase {
        let input = Array3::from_shape_fn((20, 20, 20), |(i, j, k)| (i + j + k) as f32 / 60.0);
        let label = Array3::from_shape_fn((20, 20, 20), |(i, j, k)| {
            u8::from(i > 15 && j > 15 && k > 15)
        });
        GridCase {
            name: name.to_string(),
            input,
            label,
        }
    }

    #[test]
    fn patches_balance_tumour_and_replay_by_index() {
        let source =
            LabelledSource::new(vec![case("a")], [8, 8, 8], Augmentation::none(), 0.5, 3).unwrap();
        let n = 400;
        let with_tumour = (0..n)
            .filter(|&i| source.sample(i).unwrap().mask.sum() > 0.0)
            .count() as f64;
        // Half the patches are centred on tumour; a random patch hits the 4^3 corner tumour
        // with probability (4/13)^3 ≈ 3%.
        let rate = with_tumour / n as f64;
        assert!((0.45..0.6).contains(&rate), "{rate}");
        let (a, b) = (source.sample(7).unwrap(), source.sample(7).unwrap());
        assert_eq!(a.image, b.image);
        assert_eq!(a.mask, b.mask);
        assert_eq!(a.image.dim(), (8, 8, 8));
    }

    #[test]
    fn small_cases_are_padded_and_augmented_in_step() {
        let mut small = case("s");
        small.input = small.input.slice(s![..6, .., ..]).to_owned();
        small.label = small.label.slice(s![..6, .., ..]).to_owned();
        small.label[[2, 3, 4]] = 1;
        let aug = Augmentation {
            mirror_p: 1.0,
            ..Augmentation::none()
        };
        let source = LabelledSource::new(vec![small], [8, 8, 8], aug, 1.0, 0).unwrap();
        let s = source.sample(0).unwrap();
        assert_eq!(s.image.dim(), (8, 8, 8));
        // The label moved with the image: the tumour voxel is still where the image says.
        let hits: Vec<_> = s.mask.indexed_iter().filter(|(_, &v)| v > 0.0).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(s.healthy, s.image);
    }
}
