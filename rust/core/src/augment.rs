//! Intensity and mirror augmentation for fine-tuning (method.md section 11): the transforms and
//! ranges of the official code's `dataload/augmentations.py` (batchgenerators style), with the
//! per-sample probabilities nnU-Net uses, since the paper's own are unknown.
//!
//! As in TorchIO, a random transform first draws its parameters ([`Augmentation::sample`], a pure
//! function of the seed) and then applies them deterministically ([`AugmentParams::apply`]), so
//! any training patch can be replayed from its seed.

use ndarray::{Array3, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::profile::Range;
use crate::resample::{resize_linear, resize_nearest};
use crate::synth::blur::gaussian;
use crate::synth::draw::normal;

/// A transform applied with probability `p`, its strength drawn uniformly from `range`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chance {
    pub p: f64,
    pub range: Range,
}

impl Chance {
    fn draw(&self, rng: &mut ChaCha8Rng) -> Option<f64> {
        let hit = rng.random::<f64>() < self.p;
        let value = uniform(rng, &self.range);
        hit.then_some(value)
    }
}

/// Gamma: with probability `p`, an exponent below one (from `low`) or above one (from `high`),
/// half the time each; the mean and standard deviation are restored afterwards (nnU-Net's
/// `retain_stats`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gamma {
    pub p: f64,
    pub low: Range,
    pub high: Range,
}

/// The augmentation of one fine-tuning patch. Defaults: the ranges of method.md section 11;
/// probabilities from nnU-Net (noise 0.1, blur 0.2, brightness 0.15, contrast 0.15, low
/// resolution 0.25, gamma 0.3, mirroring 0.5 per axis).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Additive Gaussian noise; `range` is its standard deviation (normalised units).
    pub noise: Chance,
    /// Gaussian blur; `range` is sigma in voxels, one draw for all axes.
    pub blur: Chance,
    /// Multiplicative brightness: every voxel times the factor.
    pub brightness: Chance,
    /// Contrast around the mean, clipped to the patch's original range.
    pub contrast: Chance,
    /// Simulated low resolution: down by the zoom factor (linear), back up (nearest).
    pub low_resolution: Chance,
    pub gamma: Gamma,
    /// Mirroring probability per axis (image and label alike).
    pub mirror_p: f64,
}

impl Default for Augmentation {
    fn default() -> Self {
        let r = |min, max| Range { min, max };
        Augmentation {
            noise: Chance {
                p: 0.1,
                range: r(0.0, 0.1),
            },
            blur: Chance {
                p: 0.2,
                range: r(1.0, 5.0),
            },
            brightness: Chance {
                p: 0.15,
                range: r(0.5, 2.0),
            },
            contrast: Chance {
                p: 0.15,
                range: r(0.75, 1.25),
            },
            low_resolution: Chance {
                p: 0.25,
                range: r(0.5, 1.0),
            },
            gamma: Gamma {
                p: 0.3,
                low: r(0.5, 1.0),
                high: r(1.0, 2.0),
            },
            mirror_p: 0.5,
        }
    }
}

impl Augmentation {
    /// No transform at all.
    pub fn none() -> Augmentation {
        let off = |c: Chance| Chance { p: 0.0, ..c };
        let d = Augmentation::default();
        Augmentation {
            noise: off(d.noise),
            blur: off(d.blur),
            brightness: off(d.brightness),
            contrast: off(d.contrast),
            low_resolution: off(d.low_resolution),
            gamma: Gamma { p: 0.0, ..d.gamma },
            mirror_p: 0.0,
        }
    }

    /// Draws every parameter from `seed`: the same seed gives the same parameters.
    pub fn sample(&self, seed: u64) -> AugmentParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Every draw happens whatever the outcome, so one transform's probability never shifts
        // another's parameters.
        let noise_std = self.noise.draw(&mut rng);
        let noise_seed = rng.random::<u64>();
        let blur_sigma = self.blur.draw(&mut rng);
        let brightness = self.brightness.draw(&mut rng);
        let contrast = self.contrast.draw(&mut rng);
        let low_resolution = self.low_resolution.draw(&mut rng);
        let gamma_hit = rng.random::<f64>() < self.gamma.p;
        let below = rng.random::<f64>() < 0.5;
        let (low, high) = (
            uniform(&mut rng, &self.gamma.low),
            uniform(&mut rng, &self.gamma.high),
        );
        let gamma = gamma_hit.then_some(if below { low } else { high });
        let mirror = [0, 1, 2].map(|_| rng.random::<f64>() < self.mirror_p);
        AugmentParams {
            noise_std,
            noise_seed,
            blur_sigma,
            brightness,
            contrast,
            low_resolution,
            gamma,
            mirror,
        }
    }

    /// Checks probabilities and ranges; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let chances = [
            ("noise", self.noise),
            ("blur", self.blur),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("low_resolution", self.low_resolution),
        ];
        let probability = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!(
                    "augmentation.{name}: probability {p} is not in [0, 1]"
                ))
            }
        };
        let ordered = |name: &str, r: &Range, lo: f64| {
            if r.min.is_finite() && r.max.is_finite() && lo <= r.min && r.min <= r.max {
                Ok(())
            } else {
                Err(format!(
                    "augmentation.{name}: range [{}, {}] must be ordered and at least {lo}",
                    r.min, r.max
                ))
            }
        };
        for (name, c) in chances {
            probability(name, c.p)?;
            ordered(name, &c.range, 0.0)?;
        }
        if self.low_resolution.range.max > 1.0 || self.low_resolution.range.min <= 0.0 {
            return Err("augmentation.low_resolution: the zoom must be in (0, 1]".to_string());
        }
        probability("gamma", self.gamma.p)?;
        ordered("gamma.low", &self.gamma.low, 1e-3)?;
        ordered("gamma.high", &self.gamma.high, 1e-3)?;
        probability("mirror_p", self.mirror_p)
    }
}

fn uniform(rng: &mut ChaCha8Rng, r: &Range) -> f64 {
    let u: f64 = rng.random();
    r.min + u * (r.max - r.min)
}

/// The drawn parameters of one augmentation; `None` means the transform is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    pub noise_std: Option<f64>,
    pub noise_seed: u64,
    pub blur_sigma: Option<f64>,
    pub brightness: Option<f64>,
    pub contrast: Option<f64>,
    pub low_resolution: Option<f64>,
    pub gamma: Option<f64>,
    pub mirror: [bool; 3],
}

impl AugmentParams {
    /// Applies the intensity transforms to `image` (in the order noise, blur, brightness,
    /// contrast, low resolution, gamma, as nnU-Net), then mirrors it.
    pub fn apply(&self, image: Array3<f32>) -> Array3<f32> {
        let mut x = image.as_standard_layout().into_owned();
        if let Some(std) = self.noise_std.filter(|&s| s > 0.0) {
            add_noise(&mut x, std, self.noise_seed);
        }
        if let Some(sigma) = self.blur_sigma {
            gaussian(&mut x, [sigma; 3]);
        }
        if let Some(f) = self.brightness {
            x.mapv_inplace(|v| v * f as f32);
        }
        if let Some(f) = self.contrast {
            contrast(&mut x, f);
        }
        if let Some(zoom) = self.low_resolution {
            x = low_resolution(&x, zoom);
        }
        if let Some(g) = self.gamma {
            gamma(&mut x, g);
        }
        self.mirrored(x)
    }

    /// The geometric part alone, for labels and other targets that must stay aligned.
    pub fn mirrored<T: Clone>(&self, mut data: Array3<T>) -> Array3<T> {
        for (axis, &flip) in self.mirror.iter().enumerate() {
            if flip {
                data.invert_axis(Axis(axis));
            }
        }
        data.as_standard_layout().into_owned()
    }
}

fn add_noise(x: &mut Array3<f32>, std: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for v in x.iter_mut() {
        *v += (normal(&mut rng) * std) as f32;
    }
}

fn stats(x: &Array3<f32>) -> (f64, f64, f32, f32) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    (mean, var.sqrt(), lo, hi)
}

/// batchgenerators' `augment_contrast` with `preserve_range`.
fn contrast(x: &mut Array3<f32>, factor: f64) {
    let (mean, _, lo, hi) = stats(x);
    x.mapv_inplace(|v| (((v as f64 - mean) * factor + mean) as f32).clamp(lo, hi));
}

/// batchgenerators' `augment_linear_downsampling_scipy`: down with order 1, up with order 0.
fn low_resolution(x: &Array3<f32>, zoom: f64) -> Array3<f32> {
    let shape = [x.shape()[0], x.shape()[1], x.shape()[2]];
    let small = shape.map(|n| ((n as f64 * zoom).round() as usize).max(1));
    if small == shape {
        return x.clone();
    }
    let down = resize_linear(x.view(), small);
    resize_nearest(down.view(), shape)
}

/// batchgenerators' `augment_gamma` with `retain_stats` (and no inversion).
fn gamma(x: &mut Array3<f32>, g: f64) {
    let (mean, std, lo, hi) = stats(x);
    let range = (hi - lo) as f64;
    if range <= 0.0 {
        return;
    }
    x.mapv_inplace(|v| ((((v - lo) as f64 / (range + 1e-7)).powf(g)) * range + lo as f64) as f32);
    let (new_mean, new_std, _, _) = stats(x);
    let scale = std / (new_std + 1e-8);
    x.mapv_inplace(|v| ((v as f64 - new_mean) * scale + mean) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Array3<f32> {
        Array3::from_shape_fn((8, 10, 12), |(i, j, k)| {
            (i * 120 + j * 12 + k) as f32 / 960.0
        })
    }

    #[test]
    fn same_seed_same_patch_and_defaults_are_valid() {
        let aug = Augmentation::default();
        aug.validate().unwrap();
        for seed in 0..20 {
            let a = aug.sample(seed);
            assert_eq!(a, aug.sample(seed));
            assert_eq!(a.apply(ramp()), a.apply(ramp()));
        }
        assert_ne!(aug.sample(1), aug.sample(2));
    }

    #[test]
    fn probabilities_are_respected() {
        let aug = Augmentation::default();
        let n = 2000;
        let hits = (0..n).filter(|&s| aug.sample(s).gamma.is_some()).count() as f64;
        assert!(
            (hits / n as f64 - 0.3).abs() < 0.05,
            "gamma rate {}",
            hits / n as f64
        );
        let mirrored = (0..n).filter(|&s| aug.sample(s).mirror[1]).count() as f64;
        assert!((mirrored / n as f64 - 0.5).abs() < 0.05);
        let none = Augmentation::none();
        let p = none.sample(3);
        assert_eq!(p.apply(ramp()), ramp());
    }

    #[test]
    fn each_transform_does_what_it_says() {
        let base = AugmentParams {
            noise_std: None,
            noise_seed: 7,
            blur_sigma: None,
            brightness: None,
            contrast: None,
            low_resolution: None,
            gamma: None,
            mirror: [false; 3],
        };
        let x = ramp();
        let flipped = AugmentParams {
            mirror: [true, false, false],
            ..base
        }
        .apply(x.clone());
        assert_eq!(flipped[[0, 3, 4]], x[[7, 3, 4]]);
        let bright = AugmentParams {
            brightness: Some(2.0),
            ..base
        }
        .apply(x.clone());
        assert_eq!(bright[[5, 5, 5]], 2.0 * x[[5, 5, 5]]);
        let (m0, s0, lo, hi) = stats(&x);
        let g = AugmentParams {
            gamma: Some(0.5),
            ..base
        }
        .apply(x.clone());
        let (m1, s1, _, _) = stats(&g);
        assert!((m0 - m1).abs() < 1e-4 && (s0 - s1).abs() < 1e-4);
        assert_ne!(g, x);
        let c = AugmentParams {
            contrast: Some(1.25),
            ..base
        }
        .apply(x.clone());
        let (_, _, clo, chi) = stats(&c);
        assert!(clo >= lo && chi <= hi);
        let low = AugmentParams {
            low_resolution: Some(0.5),
            ..base
        }
        .apply(x.clone());
        assert_eq!(low.dim(), x.dim());
        assert_eq!(low[[0, 0, 0]], low[[1, 0, 0]]);
        let noisy = AugmentParams {
            noise_std: Some(0.1),
            ..base
        }
        .apply(x.clone());
        let (mn, sn, _, _) = stats(&(&noisy - &x));
        assert!(mn.abs() < 0.01 && (sn - 0.1).abs() < 0.01, "{mn} {sn}");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut aug = Augmentation::default();
        aug.blur.p = 1.5;
        assert!(aug.validate().unwrap_err().contains("augmentation.blur"));
        let parsed: Augmentation = serde_json::from_str(r#"{"mirror_p": 0.0}"#).unwrap();
        assert_eq!(parsed.mirror_p, 0.0);
        assert_eq!(parsed.noise, Augmentation::default().noise);
    }
}
