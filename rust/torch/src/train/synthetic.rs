//! On-the-fly synthesis as a [`SampleSource`]: healthy scans resampled once onto the network
//! grid, a synthetic tumour blended in per sample index, each layer normalised as the profile
//! says, and a training patch cut out when the grid is larger than the profile's patch.
//!
//! An unreadable or unusable scan stops construction with an error naming the file: a training
//! set silently smaller than asked for is worse than a clear error before training.

use std::path::{Path, PathBuf};

use layerseg_core::io::{read_image, read_labels, ReadOptions};
use layerseg_core::preprocess::{network_grid, normalise};
use layerseg_core::profile::{Roi, Scheduler};
use layerseg_core::synth::{Inputs, Synthesizer};
use layerseg_core::{Image, LabelMap, Profile};
use ndarray::{s, Array3};

use super::source::{Sample, SampleSource, SourceError};
use super::{AdamConfig, PlateauConfig, TrainConfig};
use crate::error::{Error, Result};

/// One scan before resampling, named for error messages (its path, or any label).
pub struct ScanInput {
    pub name: PathBuf,
    pub image: Image,
    /// The organ (or brain) mask on the scan's grid.
    pub organ: Option<LabelMap>,
}

/// A healthy scan on the network grid, padded (at the high ends, so the affine holds) to at
/// least the patch size.
struct Case {
    image: Image,
    organ: Option<LabelMap>,
}

/// Synthetic training samples from healthy scans. Sample `index` is a pure function of the
/// scans, the profile, `seed` and `index`.
pub struct SynthesisSource {
    profile: Profile,
    cases: Vec<Case>,
    /// Texture scans on their own network grids; empty: textures come from the healthy scans.
    textures: Vec<Image>,
    patch: [usize; 3],
    seed: u64,
}

pub(super) fn invalid(name: &Path, e: impl std::fmt::Display) -> Error {
    Error::Core(layerseg_core::Error::Invalid {
        path: name.to_path_buf(),
        reason: e.to_string(),
    })
}

/// SplitMix64 of `seed`, `index` and a stream number: independent draws per purpose.
pub(super) fn mix(seed: u64, index: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pads `data` at the high end of each axis to at least `shape`, with `fill`.
pub(super) fn pad_to<T: Clone>(data: Array3<T>, shape: [usize; 3], fill: T) -> Array3<T> {
    let (a, b, c) = data.dim();
    let target = (a.max(shape[0]), b.max(shape[1]), c.max(shape[2]));
    if target == (a, b, c) {
        return data;
    }
    let mut out = Array3::from_elem(target, fill);
    out.slice_mut(s![..a, ..b, ..c]).assign(&data);
    out
}

fn minimum(data: &Array3<f32>) -> f32 {
    data.iter().copied().fold(f32::INFINITY, f32::min)
}

impl SynthesisSource {
    /// Resamples every scan onto the network grid once and checks that synthesis can use it.
    /// Texture scans are cropped to their own non-zero voxels. Without textures, each sample
    /// takes its texture from one of the healthy scans (the paper draws from both pools).
    pub fn new(
        profile: &Profile,
        healthy: Vec<ScanInput>,
        textures: Vec<ScanInput>,
        seed: u64,
    ) -> Result<SynthesisSource> {
        if healthy.is_empty() {
            return Err(Error::Config(
                "no healthy scans to synthesise training samples from".to_string(),
            ));
        }
        let patch = profile.inference.patch_size;
        let cases = healthy
            .into_iter()
            .map(|scan| {
                let (grid, region, _) = network_grid(&scan.image, scan.organ.as_ref(), profile)
                    .map_err(|e| invalid(&scan.name, e))?;
                let fill = minimum(&grid.data);
                let image = grid.with_data(pad_to(grid.data.clone(), patch, fill));
                let organ = scan
                    .organ
                    .map(|_| image.with_data(pad_to(region.data, patch, 0)));
                let inputs = Inputs {
                    healthy: &image,
                    organ_mask: organ.as_ref(),
                    textures: &[],
                };
                Synthesizer::new(inputs).map_err(|e| invalid(&scan.name, e))?;
                Ok(Case { image, organ })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut own_foreground = profile.clone();
        if let Roi::OrganMask { margin_mm } = own_foreground.roi {
            own_foreground.roi = Roi::ForegroundCrop { margin_mm };
        }
        let textures = textures
            .into_iter()
            .map(|scan| {
                let (grid, _, _) = network_grid(&scan.image, scan.organ.as_ref(), &own_foreground)
                    .map_err(|e| invalid(&scan.name, e))?;
                if !grid.data.iter().any(|&v| v != 0.0) {
                    return Err(invalid(&scan.name, "all voxels are zero: no texture in it"));
                }
                Ok(grid)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SynthesisSource {
            profile: profile.clone(),
            cases,
            textures,
            patch,
            seed,
        })
    }

    /// Reads the healthy scans, their organ masks (paired in order; none, or one per scan) and
    /// the texture scans, then as [`SynthesisSource::new`].
    pub fn from_files(
        profile: &Profile,
        healthy: &[PathBuf],
        organ_masks: &[PathBuf],
        textures: &[PathBuf],
        seed: u64,
    ) -> Result<SynthesisSource> {
        if !organ_masks.is_empty() && organ_masks.len() != healthy.len() {
            return Err(Error::Config(format!(
                "{} organ masks for {} healthy scans: give one per scan, in the same order",
                organ_masks.len(),
                healthy.len()
            )));
        }
        let opts = ReadOptions::default();
        let mut scans = Vec::with_capacity(healthy.len());
        for (i, path) in healthy.iter().enumerate() {
            let (image, _) = read_image(path, &opts)?;
            let organ = match organ_masks.get(i) {
                Some(m) => {
                    let (mask, _) = read_labels(m, &opts)?;
                    if let Some(difference) = image.grid_difference(&mask) {
                        return Err(invalid(
                            m,
                            format!(
                                "the organ mask is on another grid than its scan {}: {difference}",
                                path.display(),
                            ),
                        ));
                    }
                    Some(mask)
                }
                None => None,
            };
            scans.push(ScanInput {
                name: path.clone(),
                image,
                organ,
            });
        }
        let textures = textures
            .iter()
            .map(|path| {
                let (image, _) = read_image(path, &opts)?;
                Ok(ScanInput {
                    name: path.clone(),
                    image,
                    organ: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        SynthesisSource::new(profile, scans, textures, seed)
    }

    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// The shape of every sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        let grid = self.cases[0].image.shape();
        [0, 1, 2].map(|a| self.patch[a].min(grid[a]))
    }

    /// Where the patch starts: 2/3 of the time around the tumour (jittered by up to a quarter
    /// patch), otherwise anywhere.
    fn patch_start(&self, index: u64, grid: [usize; 3], mask: &Array3<u8>) -> [usize; 3] {
        let size = [0, 1, 2].map(|a| self.patch[a].min(grid[a]));
        let room = [0, 1, 2].map(|a| grid[a] - size[a]);
        if room == [0; 3] {
            return [0; 3];
        }
        let draw = |stream: u64, n: usize| (mix(self.seed, index, stream) % n as u64) as usize;
        let (mut sum, mut count) = ([0usize; 3], 0usize);
        for ((i, j, k), &m) in mask.indexed_iter() {
            if m != 0 {
                for (acc, v) in sum.iter_mut().zip([i, j, k]) {
                    *acc += v;
                }
                count += 1;
            }
        }
        let near_tumour = count > 0 && draw(10, 3) < 2;
        [0, 1, 2].map(|a| {
            if !near_tumour {
                return draw(11 + a as u64, room[a] + 1);
            }
            let jitter = size[a] / 4;
            let centre =
                (sum[a] / count + draw(14 + a as u64, 2 * jitter + 1)).saturating_sub(jitter);
            centre.saturating_sub(size[a] / 2).min(room[a])
        })
    }
}

impl SampleSource for SynthesisSource {
    fn sample(&self, index: u64) -> std::result::Result<Sample, SourceError> {
        let n = self.cases.len() as u64;
        let case = &self.cases[(mix(self.seed, index, 0) % n) as usize];
        let texture = if self.textures.is_empty() {
            &self.cases[(mix(self.seed, index, 1) % n) as usize].image
        } else {
            &self.textures[(mix(self.seed, index, 1) % self.textures.len() as u64) as usize]
        };
        let inputs = Inputs {
            healthy: &case.image,
            organ_mask: case.organ.as_ref(),
            textures: std::slice::from_ref(texture),
        };
        let synth = Synthesizer::new(inputs)?;
        let (_, out) = synth.generate(&self.profile, mix(self.seed, index, 2))?;
        let grid = case.image.shape();
        let start = self.patch_start(index, grid, &out.mask.data);
        let size = [0, 1, 2].map(|a| self.patch[a].min(grid[a]));
        let window = s![
            start[0]..start[0] + size[0],
            start[1]..start[1] + size[1],
            start[2]..start[2] + size[2]
        ];
        let rule = &self.profile.normalisation;
        let mask = out
            .mask
            .data
            .slice(window)
            .mapv(|m| f32::from(u8::from(m != 0)));
        let mut tumour = normalise(out.tumour.data.slice(window).to_owned(), rule);
        tumour.zip_mut_with(&mask, |t, &m| *t *= m);
        Ok(Sample {
            image: normalise(out.image.data.slice(window).to_owned(), rule),
            // The healthy layer as acquired with the image (the acquisition randomisation
            // degrades both alike), else the scan itself.
            healthy: normalise(
                out.healthy_or(&case.image).data.slice(window).to_owned(),
                rule,
            ),
            tumour,
            mask,
        })
    }
}

/// Scans named by `inputs`: NIfTI files, folders (their `.nii`/`.nii.gz` files, sorted) and
/// `.txt` lists (one path a line, relative to the list's folder; `#` starts a comment).
/// What pretraining synthesises from (scan paths and seed), for the model card's history.
pub fn synthesis_record(healthy: &[PathBuf], textures: &[PathBuf], seed: u64) -> serde_json::Value {
    let shown = |paths: &[PathBuf]| -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    serde_json::json!({"healthy": shown(healthy), "textures": shown(textures), "seed": seed})
}

pub fn list_scans(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            out.extend(layerseg_core::io::scan_files(input)?);
        } else if input.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(input).map_err(|e| Error::io(input, e))?;
            let base = input.parent().unwrap_or(Path::new("."));
            out.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(|l| base.join(l)),
            );
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// Organ masks for `healthy`: the same file names inside a single folder, else the files
/// listed, paired in order.
pub fn pair_masks(healthy: &[PathBuf], masks: &[PathBuf]) -> Result<Vec<PathBuf>> {
    match masks {
        [folder] if folder.is_dir() => healthy
            .iter()
            .map(|h| {
                let m = folder.join(h.file_name().unwrap_or_default());
                if m.is_file() {
                    Ok(m)
                } else {
                    Err(Error::NotFound { path: m })
                }
            })
            .collect(),
        _ => list_scans(masks),
    }
}

/// Unlabelled real scans for validation: each preprocessed as for inference (normalised, on
/// the network grid), then cut to its central patch when larger than the profile's patch.
pub fn load_real_validation(profile: &Profile, paths: &[PathBuf]) -> Result<Vec<Array3<f32>>> {
    let opts = ReadOptions::default();
    paths
        .iter()
        .map(|path| {
            let (image, _) = read_image(path, &opts)?;
            let prepared = layerseg_core::preprocess::preprocess(&image, None, profile)
                .map_err(|e| invalid(path, e))?;
            let (d, h, w) = prepared.input.dim();
            let size = [d, h, w];
            let patch = [0, 1, 2].map(|a| profile.inference.patch_size[a].min(size[a]));
            let start = [0, 1, 2].map(|a| (size[a] - patch[a]) / 2);
            if patch
                .iter()
                .any(|&n| n < crate::network::MIN_SPATIAL as usize)
            {
                return Err(invalid(
                    path,
                    format!("its network grid {size:?} is too small"),
                ));
            }
            Ok(prepared
                .input
                .slice(s![
                    start[0]..start[0] + patch[0],
                    start[1]..start[1] + patch[1],
                    start[2]..start[2] + patch[2]
                ])
                .to_owned())
        })
        .collect()
}

impl TrainConfig {
    /// The profile's training section (Adam, plateau schedule, batch, epoch length) over the
    /// defaults; an epoch is the scheduler's period, and `steps` covers `max_epochs` epochs.
    pub fn from_profile(profile: &Profile) -> TrainConfig {
        let t = &profile.training;
        let Scheduler::ReduceOnPlateau {
            factor,
            patience,
            min_lr,
        } = t.scheduler;
        let batch_size = t.batch_size.max(1);
        let period_steps = t.samples_per_epoch.div_ceil(batch_size).max(1) as u64;
        let defaults = TrainConfig::default();
        let mut config = TrainConfig {
            steps: t.max_epochs as u64 * period_steps,
            batch_size,
            adam: AdamConfig {
                lr: t.lr,
                beta1: t.betas[0],
                beta2: t.betas[1],
                eps: t.eps,
                weight_decay: t.weight_decay,
            },
            plateau: PlateauConfig {
                factor,
                patience: patience as u32,
                // The paper stops once lr < 1e-6 (the profile's min_lr), with no floor before.
                stop_below_lr: min_lr,
                early_stop_patience: t.early_stop_patience as u32,
                ..defaults.plateau
            },
            period_steps,
            ..defaults
        };
        config.record_profile(profile);
        config
    }
}
