//! Profiles: every modality- and organ-specific setting in one JSON file.
//!
//! Built in: `brain-mri` (the paper's recipe, method.md section 3) and `liver-ct` (Hu et al.,
//! CVPR 2023). A user profile is read with unknown keys refused, then validated; every error
//! names the key, e.g. `synthesis.opacity: min 0.8 > max 0.2`.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, Result};

mod acquisition;
mod adaptation;
mod synthesis;
mod validate;

pub use acquisition::*;
pub use adaptation::{Adaptation, ResidualSign};
pub use synthesis::*;

const BRAIN_MRI: &str = include_str!("../profiles/brain-mri.json");
const LIVER_CT: &str = include_str!("../profiles/liver-ct.json");

/// Names of the built-in profiles.
pub const BUILTIN: [&str; 2] = ["brain-mri", "liver-ct"];

/// A closed range `[min, max]` that a value is drawn from uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range<T = f64> {
    pub min: T,
    pub max: T,
}

impl<T: Copy> Range<T> {
    pub fn fixed(v: T) -> Self {
        Range { min: v, max: v }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub modality: Modality,
    pub normalisation: Normalisation,
    pub roi: Roi,
    pub resample: Resample,
    pub synthesis: Synthesis,
    pub network: Network,
    pub inference: Inference,
    pub training: Training,
    /// Self-training on unlabelled scans (`layerseg adapt`); absent: the modality's defaults,
    /// see [`Profile::adaptation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<Adaptation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Mri,
    Ct,
}

/// How intensities are normalised before the network sees them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalisation {
    /// z-score with the mean and std of the non-zero voxels, applied to every voxel; min-max
    /// scaling when the std is below `min_std` (the paper's rule).
    ZscoreNonzero { min_std: f64 },
    /// Clip to the HU window `[min, max]` and map it linearly onto `[out_min, out_max]`.
    HuWindow {
        min: f64,
        max: f64,
        out_min: f64,
        out_max: f64,
    },
}

/// The region the network looks at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Roi {
    /// The bounding box of the non-zero voxels (the paper crops to it).
    ForegroundCrop { margin_mm: f64 },
    /// The bounding box of an organ mask, with a margin.
    OrganMask { margin_mm: f64 },
}

/// Resampling of the region before the network: a fixed size (the paper squashes the brain box
/// into 128^3) or a fixed spacing (patch-based, as for liver CT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resample {
    pub target_size: Option<[usize; 3]>,
    pub target_spacing_mm: Option<[f64; 3]>,
}

/// How a scan becomes the network's input: the profile sections a model's weights are bound to.
/// Pretraining records it in the model card, and a model runs only under a profile whose input
/// is the same, so training and inference use one grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInput {
    pub normalisation: Normalisation,
    pub roi: Roi,
    pub resample: Resample,
    /// The training patch and the sliding window (`inference.patch_size`).
    pub patch_size: [usize; 3],
}

/// MONAI `BasicUNet(spatial_dims=3, in_channels, out_channels, features)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub in_channels: usize,
    /// Channels: healthy layer, tumour layer, mask logit.
    pub out_channels: usize,
    pub features: [usize; 6],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inference {
    pub patch_size: [usize; 3],
    /// Fraction of a window shared with its neighbour (MONAI `overlap`).
    pub overlap: f64,
    /// Threshold on the sigmoid of the mask channel.
    pub threshold: f64,
    /// Extract the brain (deepbet) when no organ mask is given (`--organ-mask auto`), and
    /// search for tumour only inside it.
    #[serde(default)]
    pub brain_extraction: bool,
    /// Keep a voxel of the mask only where the layers agree (absent: the network's own mask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_rule: Option<LayerRule>,
    /// Divide the scan by its intensity bias field (N4, `crate::bias`), estimated inside the
    /// region searched, before normalising it (absent: no correction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_correction: Option<BiasCorrection>,
}

/// N4 bias-field correction settings (`crate::bias`). The defaults are ITK's
/// (`N4BiasFieldCorrectionImageFilter`), not tuned on any scan. `benchmarks/bias_correction.py`
/// measures each depth on synthetic fields; none passed its rule, and the built-in profiles
/// leave the section out (README, "Bias correction").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BiasCorrection {
    /// Fitting levels: level l fits a cubic B-spline with 2^l spans per axis.
    pub levels: usize,
    /// Most iterations per level.
    pub iterations: usize,
    /// A level ends when the field's update varies less than this (coefficient of variation).
    pub convergence: f64,
    pub histogram_bins: usize,
    /// Width of the bias's log-intensity spread that the histogram is sharpened by.
    pub fwhm: f64,
    pub wiener_noise: f64,
    /// The field is fitted on a grid this many times coarser along each axis.
    pub shrink: usize,
}

impl BiasCorrection {
    /// The `inference.bias_correction` section on its own (missing keys take the defaults),
    /// parsed and checked as in a profile; `origin` appears in every error.
    pub fn from_json(text: &str, origin: &str) -> Result<BiasCorrection> {
        parse_checked(text, origin, BiasCorrection::validate)
    }
}

/// JSON parsed with unknown keys refused, then checked; every error names `origin` and the key.
fn parse_checked<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    check: impl FnOnce(&T) -> std::result::Result<(), (String, String)>,
) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        Error::Profile {
            origin: origin.to_string(),
            key: if key == "." { String::new() } else { key },
            reason: e.into_inner().to_string(),
        }
    })?;
    check(&value).map_err(|(key, reason)| Error::Profile {
        origin: origin.to_string(),
        key,
        reason,
    })?;
    Ok(value)
}

impl Default for BiasCorrection {
    fn default() -> Self {
        BiasCorrection {
            levels: 4,
            iterations: 50,
            convergence: 0.001,
            histogram_bins: 200,
            fwhm: 0.15,
            wiener_noise: 0.01,
            shrink: 2,
        }
    }
}

/// The final mask follows the layers: a voxel stays tumour only where the mask probability
/// passes the threshold and the image departs from the predicted healthy layer in the lesion
/// direction by more than `margin` (normalised units) beyond the median departure inside the
/// region searched (the organ or brain mask, else the foreground); then components smaller than
/// `min_lesion_mm3` go, and what the remaining lesions enclose inside the region is filled
/// (`postprocess::fill_enclosed`: a necrotic core is tumour too). The numbers are chosen on synthetic validation samples, where the
/// truth is known, by `benchmarks/choose_layer_rule.py` (README, "The layer rule").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRule {
    pub residual_sign: ResidualSign,
    /// Least signed residual (image minus healthy layer, minus its median in the region), in
    /// the profile's normalised units.
    pub margin: f64,
    /// Smallest lesion kept (mm^3).
    pub min_lesion_mm3: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    pub optimizer: Optimizer,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    pub samples_per_epoch: usize,
    pub scheduler: Scheduler,
    /// Stop when the training loss has not improved for this many epochs.
    pub early_stop_patience: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Adam,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scheduler {
    /// PyTorch `ReduceLROnPlateau(mode="min")` stepped on the mean training loss of each epoch.
    ReduceOnPlateau {
        factor: f64,
        patience: usize,
        min_lr: f64,
    },
}

impl Profile {
    /// A built-in profile by name (`brain-mri`, `liver-ct`).
    pub fn builtin(name: &str) -> Result<Profile> {
        let text = match name {
            "brain-mri" => BRAIN_MRI,
            "liver-ct" => LIVER_CT,
            _ => {
                return Err(Error::Profile {
                    origin: name.to_string(),
                    key: String::new(),
                    reason: format!(
                        "no built-in profile of that name (built in: {}); pass a .json file to use your own",
                        BUILTIN.join(", ")
                    ),
                })
            }
        };
        Profile::from_json(text, &format!("built-in {name}"))
    }

    /// Read and validate a profile file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Profile> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Profile::from_json(&text, &path.display().to_string())
    }

    /// A built-in name, or else a path to a profile file.
    pub fn load(name_or_path: &str) -> Result<Profile> {
        if BUILTIN.contains(&name_or_path) {
            Profile::builtin(name_or_path)
        } else if Path::new(name_or_path).exists() || name_or_path.ends_with(".json") {
            Profile::from_file(name_or_path)
        } else {
            Profile::builtin(name_or_path)
        }
    }

    /// Parse and validate; `origin` (a file or "built-in NAME") appears in every error.
    pub fn from_json(text: &str, origin: &str) -> Result<Profile> {
        parse_checked(text, origin, Profile::validate)
    }

    /// What its models' weights are bound to ([`NetworkInput`]).
    pub fn network_input(&self) -> NetworkInput {
        NetworkInput {
            normalisation: self.normalisation.clone(),
            roi: self.roi.clone(),
            resample: self.resample.clone(),
            patch_size: self.inference.patch_size,
        }
    }

    /// Refuses to run the model at `weights`, trained on `trained`, under this profile unless
    /// the profile makes the network's input the same way; the error names every section of
    /// [`NetworkInput`] that differs, with both values.
    pub fn check_trained_input(&self, weights: &Path, trained: &NetworkInput) -> Result<()> {
        match self.input_mismatch(trained) {
            None => Ok(()),
            Some(why) => Err(Error::InvalidInput {
                what: weights.display().to_string(),
                reason: format!(
                    "this model cannot run under profile {}: {why}; use the profile it was trained with",
                    self.name
                ),
            }),
        }
    }

    fn input_mismatch(&self, trained: &NetworkInput) -> Option<String> {
        fn text<T: Serialize>(value: &T) -> String {
            serde_json::to_string(value).expect("profile sections always serialise")
        }
        let now = self.network_input();
        let differences: Vec<String> = [
            (
                "normalisation",
                text(&trained.normalisation),
                text(&now.normalisation),
            ),
            ("roi", text(&trained.roi), text(&now.roi)),
            ("resample", text(&trained.resample), text(&now.resample)),
            (
                "inference.patch_size",
                text(&trained.patch_size),
                text(&now.patch_size),
            ),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(key, a, b)| format!("{key} was {a} in training, is {b} in profile {}", self.name))
        .collect();
        (!differences.is_empty()).then(|| differences.join("; "))
    }

    /// The `adaptation` section, or the defaults for the profile's modality.
    pub fn adaptation(&self) -> Adaptation {
        self.adaptation
            .clone()
            .unwrap_or_else(|| Adaptation::for_modality(self.modality))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile always serialises")
    }

    /// Why `image` looks like another modality than the profile's, if it does: CT in
    /// Hounsfield units holds air near -1000 and MRI magnitudes are never far below 0, so a
    /// minimum under -500 under an MRI profile, or none below 0 under a CT profile, is suspect.
    pub fn modality_mismatch(&self, image: &ndarray::Array3<f32>) -> Option<String> {
        let min = image.iter().copied().fold(f32::INFINITY, f32::min);
        match self.modality {
            Modality::Mri if min < -500.0 => Some(format!(
                "values go down to {min:.0}, like a CT in Hounsfield units, but profile {} is for MRI (use profile liver-ct: CLI --profile, Python profile=; or a CT model)",
                self.name
            )),
            Modality::Ct if min >= 0.0 => Some(format!(
                "no value is below 0, unlike a CT in Hounsfield units, but profile {} is for CT",
                self.name
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_of_the_other_modality_is_named() {
        let brain = Profile::builtin("brain-mri").unwrap();
        let liver = Profile::builtin("liver-ct").unwrap();
        let mut ct = ndarray::Array3::from_elem((4, 4, 4), 40.0_f32);
        ct[[0, 0, 0]] = -1024.0;
        let mri = ndarray::Array3::from_elem((4, 4, 4), 300.0_f32);
        let warning = brain.modality_mismatch(&ct).unwrap();
        assert!(
            warning.contains("-1024") && warning.contains("brain-mri"),
            "{warning}"
        );
        assert!(liver.modality_mismatch(&mri).unwrap().contains("liver-ct"));
        assert_eq!(brain.modality_mismatch(&mri), None);
        assert_eq!(liver.modality_mismatch(&ct), None);
    }

    #[test]
    fn a_model_is_bound_to_the_input_it_was_trained_on() {
        let brain = Profile::builtin("brain-mri").unwrap();
        let trained = brain.network_input();
        let weights = Path::new("m.safetensors");
        assert!(brain.check_trained_input(weights, &trained).is_ok());
        let mut other = brain.clone();
        other.inference.threshold = 0.3;
        other.inference.layer_rule = None;
        assert!(other.check_trained_input(weights, &trained).is_ok());
        other.resample.target_size = None;
        other.resample.target_spacing_mm = Some([1.5; 3]);
        other.inference.patch_size = [96; 3];
        let err = other
            .check_trained_input(weights, &trained)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.safetensors: this model cannot run under profile brain-mri: resample was {\"target_size\":[128,128,128]"), "{err}");
        assert!(
            err.contains("inference.patch_size was [128,128,128] in training, is [96,96,96]"),
            "{err}"
        );
        assert!(
            !err.contains("normalisation") && !err.contains("roi"),
            "{err}"
        );
    }

    #[test]
    fn builtins_load_and_round_trip() {
        for name in BUILTIN {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, name);
            let again = Profile::from_json(&p.to_json(), "round trip").unwrap();
            assert_eq!(p, again);
        }
    }

    #[test]
    fn paper_defaults() {
        let p = Profile::builtin("brain-mri").unwrap();
        assert_eq!(p.training.lr, 1e-2);
        assert_eq!(p.training.weight_decay, 3e-5);
        assert_eq!(p.training.batch_size, 2);
        assert_eq!(p.network.features, [32, 32, 64, 128, 256, 32]);
        assert_eq!(p.synthesis.opacity, Range { min: 0.2, max: 0.8 });
    }

    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Profile> {
        let mut v: serde_json::Value = serde_json::from_str(BRAIN_MRI).unwrap();
        edit(&mut v);
        Profile::from_json(&v.to_string(), "test.json")
    }

    #[test]
    fn inverted_range_names_the_key() {
        let err =
            edited(|v| v["synthesis"]["opacity"] = serde_json::json!({"min": 0.8, "max": 0.2}))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile test.json: synthesis.opacity: min 0.8 > max 0.2"
        );
    }

    #[test]
    fn unknown_key_names_the_path() {
        let err =
            edited(|v| v["synthesis"]["texture"]["elastic"]["wobble"] = 1.into()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("synthesis.texture"), "{text}");
        assert!(text.contains("unknown field `wobble`"), "{text}");
    }

    #[test]
    fn out_of_domain_values() {
        let err = edited(|v| v["synthesis"]["opacity"]["max"] = 1.5.into()).unwrap_err();
        assert!(err.to_string().contains("synthesis.opacity"), "{err}");
        let err = edited(|v| v["network"]["features"][2] = 0.into()).unwrap_err();
        assert!(err.to_string().contains("network.features"), "{err}");
    }

    #[test]
    fn adaptation_section_is_optional_and_checked() {
        let brain = Profile::builtin("brain-mri").unwrap();
        assert_eq!(brain.adaptation().residual_sign, ResidualSign::Brighter);
        assert_eq!(brain.adaptation().max_recomposition_l1, 0.3);
        let liver = Profile::builtin("liver-ct").unwrap();
        assert_eq!(liver.adaptation().residual_sign, ResidualSign::Darker);
        let without = edited(|v| {
            v.as_object_mut().unwrap().remove("adaptation");
        })
        .unwrap();
        assert_eq!(without.adaptation, None);
        assert_eq!(
            without.adaptation(),
            Adaptation::for_modality(Modality::Mri)
        );
        let err = edited(|v| v["adaptation"]["keep_fraction"] = 0.0.into()).unwrap_err();
        assert!(
            err.to_string().contains("adaptation.keep_fraction"),
            "{err}"
        );
    }

    #[test]
    fn bias_correction_takes_itks_defaults_and_is_checked() {
        let p = edited(|v| v["inference"]["bias_correction"] = serde_json::json!({"levels": 2}))
            .unwrap();
        let settings = p.inference.bias_correction.unwrap();
        assert_eq!(settings.levels, 2);
        assert_eq!(settings.histogram_bins, 200);
        assert_eq!(settings.fwhm, 0.15);
        for (bad, key) in [
            (
                serde_json::json!({"levels": 0}),
                "inference.bias_correction",
            ),
            (
                serde_json::json!({"shrink": 0}),
                "inference.bias_correction",
            ),
            (
                serde_json::json!({"fwhm": -1.0}),
                "inference.bias_correction.fwhm",
            ),
        ] {
            let err = edited(|v| v["inference"]["bias_correction"] = bad.clone()).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
            let err = BiasCorrection::from_json(&bad.to_string(), "settings").unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
        let alone = BiasCorrection::from_json(r#"{"levels": 1}"#, "settings").unwrap();
        assert_eq!(
            alone,
            BiasCorrection {
                levels: 1,
                ..BiasCorrection::default()
            }
        );
        let err = BiasCorrection::from_json(r#"{"level": 1}"#, "settings").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn patch_sizes_must_survive_four_poolings() {
        for bad in [0, 16, 24, 40] {
            let err = edited(|v| v["inference"]["patch_size"] = serde_json::json!([bad, 64, 64]))
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("inference.patch_size: each size must be a multiple of 16"),
                "{bad}: {err}"
            );
        }
        assert!(edited(|v| v["inference"]["patch_size"] = serde_json::json!([32, 48, 96])).is_ok());
    }

    #[test]
    fn acquisition_section_is_optional_and_checked() {
        let without = edited(|v| {
            v["synthesis"]
                .as_object_mut()
                .unwrap()
                .remove("acquisition");
        })
        .unwrap();
        assert_eq!(without.synthesis.acquisition, None);
        type Edit = fn(&mut serde_json::Value);
        let cases: [(Edit, &str); 6] = [
            (
                |v| v["synthesis"]["acquisition"]["noise"]["probability"] = 1.5.into(),
                "profile test.json: synthesis.acquisition.noise.probability: probability 1.5 is not in [0, 1]",
            ),
            (
                |v| {
                    v["synthesis"]["acquisition"]["slice_thickness"]["thickness_mm"] =
                        serde_json::json!({"min": 7.0, "max": 1.0})
                },
                "profile test.json: synthesis.acquisition.slice_thickness.thickness_mm: min 7 > max 1",
            ),
            (
                |v| v["synthesis"]["acquisition"]["bias_field"]["order"] = 0.into(),
                "profile test.json: synthesis.acquisition.bias_field.order: must be in [1, 8]",
            ),
            (
                |v| v["synthesis"]["acquisition"]["coverage"]["fraction"]["min"] = 0.0.into(),
                "synthesis.acquisition.coverage.fraction: [0, 1] is outside the allowed [0.01, 1]",
            ),
            (
                |v| v["synthesis"]["acquisition"]["noise"]["kind"] = "poisson".into(),
                "synthesis.acquisition.noise.kind: unknown variant `poisson`",
            ),
            (
                |v| v["synthesis"]["acquisition"]["gamma"]["sigma"] = 1.into(),
                "synthesis.acquisition.gamma.sigma: unknown field `sigma`",
            ),
        ];
        for (edit, message) in cases {
            let err = edited(edit).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn unknown_builtin() {
        let err = Profile::load("kidney-mri").unwrap_err();
        assert!(err.to_string().contains("brain-mri, liver-ct"), "{err}");
    }
}
