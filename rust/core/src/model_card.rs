//! The checks a LayerSeg model card (`NAME.json` beside `NAME.safetensors`) must pass before
//! anything trusts it: one definition for the libtorch runtime (`layerseg_torch::checkpoint`)
//! and the MONAI path (`layerseg.monai.read_model_card`).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::profile::NetworkInput;

/// Bumped when the card's meaning changes incompatibly.
pub const CARD_FORMAT: u32 = 1;

/// The kinds of training run (a card's `history[].kind`) that fit the mask channel to masks:
/// real labels (`finetune`) or the model's own pseudo-labels (`adapt`).
pub const MASK_FITTING_RUNS: [&str; 2] = ["finetune", "adapt"];

/// Whether a model's mask was fitted to labels by one of [`MASK_FITTING_RUNS`], so that its
/// own mask is the segmentation (`history` of a checked card, as JSON).
///
/// The profile's layer rule keeps mask voxels that depart from the healthy layer by a margin
/// chosen for pretrained models on synthetic samples. Fitting the mask to labels also fits the
/// healthy layer to the image outside them, and it learns to follow the image inside them too,
/// so the departure shrinks below the margin while the mask itself improves (LiTS-117, 30
/// fine-tuning steps: the network's own mask 0.80 Dice on its training half, 0.06 after the
/// rule). The labels are then the better authority on the mask, and the rule stands aside.
pub fn mask_fitted_to_labels(card: &Value) -> bool {
    card["history"].as_array().is_some_and(|runs| {
        runs.iter()
            .any(|run| MASK_FITTING_RUNS.iter().any(|kind| run["kind"] == *kind))
    })
}

/// The card at `path` (its `text`) as JSON, checked: an object with `format` 1, `network`
/// "BasicUNet" and a `config` of integer `in_channels`, `out_channels` and six positive
/// `features`.
pub fn check_model_card(path: &Path, text: &str) -> Result<Value> {
    let refuse = |reason: String| Error::InvalidInput {
        what: path.display().to_string(),
        reason,
    };
    let card: Value = serde_json::from_str(text)
        .map_err(|e| refuse(format!("not a LayerSeg model card: {e}")))?;
    let Some(fields) = card.as_object() else {
        return Err(refuse(
            "not a LayerSeg model card: not a JSON object".into(),
        ));
    };
    if let Some(missing) = ["format", "network", "config"]
        .into_iter()
        .find(|k| !fields.contains_key(*k))
    {
        return Err(refuse(format!(
            "not a LayerSeg model card: missing field `{missing}`"
        )));
    }
    if card["format"].as_u64() != Some(u64::from(CARD_FORMAT)) {
        return Err(refuse(format!(
            "model card format {} (this LayerSeg reads {CARD_FORMAT})",
            card["format"]
        )));
    }
    if card["network"] != "BasicUNet" {
        return Err(refuse(format!(
            "network {}; only BasicUNet is supported",
            card["network"]
        )));
    }
    let config = &card["config"];
    let features = config["features"].as_array();
    let ok = config["in_channels"].is_i64()
        && config["out_channels"].is_i64()
        && features.is_some_and(|f| f.len() == 6 && f.iter().all(|v| v.as_i64() > Some(0)));
    if !ok {
        return Err(refuse(format!(
            "model card config must hold in_channels, out_channels and six positive features, \
             got {config}"
        )));
    }
    trained_input(&card).map_err(refuse)?;
    Ok(card)
}

/// How the model's input was made in training (`input`), when the card records it: cards
/// written before it was recorded do not.
pub fn trained_input(card: &Value) -> std::result::Result<Option<NetworkInput>, String> {
    match card.get("input") {
        None | Some(Value::Null) => Ok(None),
        Some(input) => serde_json::from_value(input.clone())
            .map(Some)
            .map_err(|e| format!("model card `input`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> std::result::Result<Value, String> {
        check_model_card(Path::new("m.json"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_trained_input_is_read_and_checked() {
        let card = |input: &str| {
            format!(
                r#"{{"format": 1, "network": "BasicUNet", "config": {{"in_channels": 1,
                "out_channels": 3, "features": [8, 8, 16, 32, 64, 8]}}{input}}}"#
            )
        };
        assert_eq!(trained_input(&check(&card("")).unwrap()), Ok(None));
        let brain = crate::Profile::builtin("brain-mri")
            .unwrap()
            .network_input();
        let recorded = format!(r#", "input": {}"#, serde_json::to_string(&brain).unwrap());
        let read = trained_input(&check(&card(&recorded)).unwrap());
        assert_eq!(read, Ok(Some(brain)));
        let err = check(&card(r#", "input": {"roi": 3}"#)).unwrap_err();
        assert!(err.starts_with("m.json: model card `input`:"), "{err}");
    }

    #[test]
    fn a_card_passes_and_each_fault_is_named() {
        let good = r#"{"format": 1, "network": "BasicUNet",
            "config": {"in_channels": 1, "out_channels": 3, "features": [8, 8, 16, 32, 64, 8]}}"#;
        assert_eq!(check(good).unwrap()["config"]["out_channels"], 3);
        assert!(check("{not json")
            .unwrap_err()
            .contains("not a LayerSeg model card"));
        assert!(check("[1]").unwrap_err().contains("not a JSON object"));
        assert!(check(r#"{"a": 1}"#)
            .unwrap_err()
            .contains("missing field `format`"));
        let other = good.replace(r#""format": 1"#, r#""format": 7"#);
        assert!(check(&other)
            .unwrap_err()
            .contains("model card format 7 (this LayerSeg reads 1)"));
        let unet = good.replace("BasicUNet", "UNETR");
        assert!(check(&unet)
            .unwrap_err()
            .contains(r#"network "UNETR"; only BasicUNet"#));
        let zero = good.replace("[8, 8", "[0, 8");
        assert!(check(&zero).unwrap_err().contains("six positive features"));
    }

    #[test]
    fn only_finetuned_or_adapted_models_have_label_fitted_masks() {
        let card = |kinds: &[&str]| {
            let runs: Vec<Value> = kinds
                .iter()
                .map(|k| serde_json::json!({"kind": k}))
                .collect();
            serde_json::json!({"format": 1, "history": runs})
        };
        assert!(!mask_fitted_to_labels(&serde_json::json!({"format": 1})));
        assert!(!mask_fitted_to_labels(&card(&["unrecorded", "pretrain"])));
        assert!(mask_fitted_to_labels(&card(&["pretrain", "finetune"])));
        assert!(mask_fitted_to_labels(&card(&["unrecorded", "adapt"])));
    }
}
