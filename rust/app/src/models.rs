//! Finding the weights to run: a `--model` file, or the model shipped for the profile.

use anyhow::{bail, Context, Result};
use layerseg_core::Profile;
use layerseg_torch::brain::BrainExtractor;
use layerseg_torch::checkpoint::ModelCard;
use layerseg_torch::BasicUNetConfig;
use std::path::{Path, PathBuf};

/// Weights plus what is known about them.
pub struct ModelFile {
    pub weights: PathBuf,
    /// The model card beside the weights (`NAME.json`), when there is one.
    pub card: Option<ModelCard>,
}

impl ModelFile {
    /// Whether its own mask is the segmentation: a fine-tuned or adapted model's mask was fitted
    /// to labels, and the profile's layer rule (made for pretrained models) stands aside
    /// ([`ModelCard::mask_fitted_to_labels`]).
    pub fn mask_fitted_to_labels(&self) -> bool {
        self.card
            .as_ref()
            .is_some_and(ModelCard::mask_fitted_to_labels)
    }

    /// The model must see its input made as in training: same normalisation, region, grid and
    /// window ([`layerseg_core::profile::NetworkInput`]), whatever the profile's name says.
    pub fn check_input(&self, profile: &Profile) -> Result<()> {
        if let Some(trained) = self.card.as_ref().and_then(|c| c.input.as_ref()) {
            profile.check_trained_input(&self.weights, trained)?;
        }
        Ok(())
    }

    /// The network shape: the card's, else the profile's.
    pub fn config(&self, profile: &Profile) -> BasicUNetConfig {
        match &self.card {
            Some(card) => card.config.clone(),
            None => BasicUNetConfig {
                in_channels: profile.network.in_channels as i64,
                out_channels: profile.network.out_channels as i64,
                features: profile.network.features.map(|f| f as i64),
            },
        }
    }
}

pub use layerseg_core::models::{model_dirs, register_packaged_models};

/// `--model` when given, else `<profile>.safetensors` from the first folder that has it.
pub fn resolve(model: Option<&Path>, profile_name: &str) -> Result<ModelFile> {
    let weights = match model {
        Some(path) => {
            if !path.exists() {
                // Typed, so Python raises FileNotFoundError with the CLI's message.
                return Err(layerseg_torch::Error::NotFound {
                    path: path.to_path_buf(),
                }
                .into());
            }
            path.to_path_buf()
        }
        None => {
            // An unknown profile is the user's mistake to name first, with the built-in list.
            let profile = Profile::load(profile_name)?;
            let file = format!("{}.safetensors", profile.name);
            match model_dirs().into_iter().map(|d| d.join(&file)).find(|p| p.exists()) {
                Some(p) => p,
                None => bail!(
                    "no shipped model for profile {profile_name} (looked for {file} in $LAYERSEG_MODELS and models/); pass a model (CLI --model, Python model=), or train one with `layerseg pretrain` (Python layerseg.pretrain)"
                ),
            }
        }
    };
    let card_path = weights.with_extension("json");
    let card = if card_path.exists() {
        Some(
            ModelCard::read(&card_path)
                .with_context(|| format!("{}: unreadable model card", card_path.display()))?,
        )
    } else {
        None
    };
    Ok(ModelFile { weights, card })
}

/// The model and profile of a command that starts from trained weights (`segment`, `finetune`,
/// `adapt`): `--model`, else the shipped model of the profile; `--profile`, else the model
/// card's profile, else brain-mri. A profile that contradicts the card is an error.
pub fn resolve_with_profile(
    model: Option<&Path>,
    profile: Option<&str>,
) -> Result<(ModelFile, Profile)> {
    let model_file = resolve(model, profile.unwrap_or("brain-mri"))?;
    let card_profile = model_file.card.as_ref().and_then(|c| c.profile.clone());
    if let (Some(asked), Some(trained)) = (profile, &card_profile) {
        if Profile::load(asked)?.name != *trained {
            bail!(
                "{}: this model was trained with profile {trained}, not {asked}",
                model_file.weights.display()
            );
        }
    }
    let name = profile.map(str::to_string).or(card_profile);
    let profile = Profile::load(name.as_deref().unwrap_or("brain-mri"))?;
    model_file.check_input(&profile)?;
    Ok((model_file, profile))
}

/// The brain extractor shipped beside the models (`deepbet/` in a folder of [`model_dirs`]).
pub fn brain_extractor(device: layerseg_torch::Device) -> Result<BrainExtractor> {
    let dirs = model_dirs();
    let Some(dir) = BrainExtractor::find(&dirs) else {
        bail!(
            "the brain extractor ({}/) is in none of {} (in a LayerSeg checkout, `make models` fetches it); give a brain mask, or search the whole scan (CLI --organ-mask none, Python organ_mask=\"none\", bundle brain_extraction false)",
            layerseg_torch::brain::MODEL_FOLDER,
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    BrainExtractor::load(&dir, device).map_err(|e| anyhow::anyhow!(e))
}
