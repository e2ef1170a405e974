//! Layer-decomposition losses (method.md section 5) and the label-free recomposition score
//! (section 6).
//!
//! Notation, per batch: the network output `pred` is (B, 3, D, H, W) with channel 0 the healthy
//! layer n̂, channel 1 the tumour layer ŝ and channel 2 the mask logit m̂; the targets `healthy` N,
//! `tumour` T and `mask` M are each (B, 1, D, H, W), M binary (0 or 1). Everything is computed in
//! float32 whatever the prediction's dtype. With p = sigmoid(m̂) and "tumour voxels" = M > 0.5:
//!
//! - `dice` = 1 − (2·Σ p·M + 1e-7) / (Σ p + Σ M + 1e-7), sums over the whole batch (one Dice for
//!   the batch, not a mean of per-sample Dice);
//! - `healthy` = mean |n̂ − N| and `tumour` = mean |ŝ − T| over every voxel of the batch;
//! - `healthy_in_tumour` and `tumour_in_tumour` = the same absolute errors averaged over the tumour
//!   voxels of the batch only; both are 0 unless the batch has at least one tumour voxel and at
//!   least one other voxel;
//! - `total` = Σ weight · term, with [`LossWeights`] (all 1 by default, as in the paper).
//!
//! No term forces a device synchronisation: the "both 0 and 1" condition is a tensor factor.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result, TorchContext};
use crate::network::{HEALTHY_CHANNEL, MASK_CHANNEL, TUMOUR_CHANNEL};

/// The smoothing constant of the Dice loss, in numerator and denominator.
pub const DICE_SMOOTH: f64 = 1e-7;

/// Weights of the loss terms. Missing fields take their default of 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    pub dice: f64,
    pub healthy: f64,
    pub tumour: f64,
    pub healthy_in_tumour: f64,
    pub tumour_in_tumour: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            dice: 1.0,
            healthy: 1.0,
            tumour: 1.0,
            healthy_in_tumour: 1.0,
            tumour_in_tumour: 1.0,
        }
    }
}

/// Every term as a scalar float32 tensor (differentiable), and their weighted sum. Terms a
/// loss does not use are zero (`bce` and `recomposition` belong to [`finetune_losses`]).
#[derive(Debug)]
pub struct Losses {
    pub total: Tensor,
    pub dice: Tensor,
    pub healthy: Tensor,
    pub tumour: Tensor,
    pub healthy_in_tumour: Tensor,
    pub tumour_in_tumour: Tensor,
    pub bce: Tensor,
    pub recomposition: Tensor,
}

/// The same terms as plain numbers, for logs, metrics and model cards. Missing fields (older
/// records) read as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossValues {
    pub total: f64,
    pub dice: f64,
    pub healthy: f64,
    pub tumour: f64,
    pub healthy_in_tumour: f64,
    pub tumour_in_tumour: f64,
    pub bce: f64,
    pub recomposition: f64,
}

impl Losses {
    /// Reads the values (one device synchronisation).
    pub fn values(&self) -> Result<LossValues> {
        let v = |t: &Tensor| {
            t.f_double_value(&[])
                .context(|| "reading a loss".to_string())
        };
        Ok(LossValues {
            total: v(&self.total)?,
            dice: v(&self.dice)?,
            healthy: v(&self.healthy)?,
            tumour: v(&self.tumour)?,
            healthy_in_tumour: v(&self.healthy_in_tumour)?,
            tumour_in_tumour: v(&self.tumour_in_tumour)?,
            bce: v(&self.bce)?,
            recomposition: v(&self.recomposition)?,
        })
    }
}

fn check_pair(what: &str, target: &Tensor, pred: &Tensor) -> Result<()> {
    let (t, p) = (target.size(), pred.size());
    if t.len() == 5 && p.len() == 5 && t[1] == 1 && t[0] == p[0] && t[2..] == p[2..] {
        Ok(())
    } else {
        Err(Error::Shape {
            what: what.to_string(),
            expected: format!("(B, 1, D, H, W) matching the prediction {p:?}"),
            got: t,
        })
    }
}

/// Channel `c` of `pred` as float32, keeping the channel axis: (B, 1, D, H, W).
fn channel(pred: &Tensor, c: i64) -> Result<Tensor> {
    pred.f_narrow(1, c, 1)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .context(|| format!("taking channel {c} of the prediction"))
}

/// The predicted mask probability σ(m̂), (B, 1, D, H, W) float32.
pub fn mask_probability(pred: &Tensor) -> Result<Tensor> {
    check_prediction(pred)?;
    channel(pred, MASK_CHANNEL)?
        .f_sigmoid()
        .context(|| "sigmoid".to_string())
}

fn check_prediction(pred: &Tensor) -> Result<()> {
    let p = pred.size();
    if p.len() == 5 && p[1] == 3 {
        Ok(())
    } else {
        Err(Error::Shape {
            what: "prediction".to_string(),
            expected: "(B, 3, D, H, W): healthy layer, tumour layer, mask logit".to_string(),
            got: p,
        })
    }
}

/// Batch-level soft Dice loss between probabilities `p` and a binary target `t` (same shape).
pub fn soft_dice_loss(p: &Tensor, t: &Tensor) -> Result<Tensor> {
    let inner = (|| {
        let intersection = p.f_mul(t)?.f_sum(Kind::Float)?;
        let denominator = p.f_sum(Kind::Float)?.f_add(&t.f_sum(Kind::Float)?)?;
        let ratio = (intersection * 2.0 + DICE_SMOOTH).f_div(&(denominator + DICE_SMOOTH))?;
        Ok::<Tensor, tch::TchError>(ratio.f_neg()? + 1.0)
    })();
    inner.context(|| format!("Dice of shapes {:?} and {:?}", p.size(), t.size()))
}

/// The training loss of one batch. See the module documentation for the exact definitions.
pub fn layer_losses(
    pred: &Tensor,
    healthy: &Tensor,
    tumour: &Tensor,
    mask: &Tensor,
    weights: &LossWeights,
) -> Result<Losses> {
    check_prediction(pred)?;
    check_pair("healthy target", healthy, pred)?;
    check_pair("tumour target", tumour, pred)?;
    check_pair("mask target", mask, pred)?;
    let to_float = |t: &Tensor| t.f_to_kind(Kind::Float).context(|| "to float".to_string());
    let (healthy, tumour, mask) = (to_float(healthy)?, to_float(tumour)?, to_float(mask)?);
    let healthy_error = channel(pred, HEALTHY_CHANNEL)?.f_sub(&healthy)?.f_abs()?;
    let tumour_error = channel(pred, TUMOUR_CHANNEL)?.f_sub(&tumour)?.f_abs()?;
    let probability = mask_probability(pred)?;
    let dice = soft_dice_loss(&probability, &mask)?;

    let l1 = || -> Result<(Tensor, Tensor, Tensor, Tensor), tch::TchError> {
        let healthy_l1 = healthy_error.f_mean(Kind::Float)?;
        let tumour_l1 = tumour_error.f_mean(Kind::Float)?;
        let selected = mask.f_gt(0.5)?.f_to_kind(Kind::Float)?;
        let count = selected.f_sum(Kind::Float)?;
        let total = selected.numel() as f64;
        // 1 when the batch has tumour and non-tumour voxels, else 0.
        let active = count.f_gt(0.0)?.f_logical_and(&count.f_lt(total)?)?;
        let scale = active
            .f_to_kind(Kind::Float)?
            .f_div(&count.f_clamp_min(1.0)?)?;
        let healthy_in = healthy_error
            .f_mul(&selected)?
            .f_sum(Kind::Float)?
            .f_mul(&scale)?;
        let tumour_in = tumour_error
            .f_mul(&selected)?
            .f_sum(Kind::Float)?
            .f_mul(&scale)?;
        Ok((healthy_l1, tumour_l1, healthy_in, tumour_in))
    };
    let (healthy_l1, tumour_l1, healthy_in, tumour_in) =
        l1().context(|| "L1 loss terms".to_string())?;
    let total = &dice * weights.dice
        + &healthy_l1 * weights.healthy
        + &tumour_l1 * weights.tumour
        + &healthy_in * weights.healthy_in_tumour
        + &tumour_in * weights.tumour_in_tumour;
    let zero = total.f_zeros_like().context(|| "zeros".to_string())?;
    Ok(Losses {
        total,
        dice,
        healthy: healthy_l1,
        tumour: tumour_l1,
        healthy_in_tumour: healthy_in,
        tumour_in_tumour: tumour_in,
        bce: zero.shallow_clone(),
        recomposition: zero,
    })
}

/// Weights of the fine-tuning loss terms ([`finetune_losses`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneWeights {
    pub dice: f64,
    pub bce: f64,
    /// The healthy layer against the image outside the labelled tumour.
    pub healthy: f64,
    /// The recomposition of both layers against the image, the mask held fixed.
    pub recomposition: f64,
}

impl Default for FinetuneWeights {
    fn default() -> Self {
        Self {
            dice: 1.0,
            bce: 1.0,
            healthy: 1.0,
            recomposition: 0.1,
        }
    }
}

/// The supervised loss of fine-tuning on labelled real scans: `image` and binary `label` are
/// (B, 1, D, H, W). With p = σ(m̂), y = label and x = image:
///
/// - `dice` = the batch-level soft Dice loss of p against y (as in pretraining);
/// - `bce` = mean binary cross-entropy of the mask logit m̂ against y;
/// - `healthy` = mean |n̂ − x| over the voxels outside the labelled tumour (0 when there are none);
/// - `recomposition` = mean |ŝ·p' + n̂·(1 − p') − x| over every voxel, with p' = p detached.
///
/// Why the layer heads are regularised rather than dropped or frozen: the mask channel is what
/// the labels improve, but the healthy and tumour layers share the whole decoder with it, and
/// left alone they drift once the decoder moves. `layerseg adapt` and the label-free model
/// selection read those layers (the residual x − n̂, the recomposition error), so a fine-tuned
/// model must keep them meaningful. Outside the labelled tumour the healthy layer has an exact
/// target, the image itself (in pretraining N = X there), so it stays supervised; the tumour
/// layer has no label-derived target (the pretraining one is normalised within the synthetic
/// tumour), so only the recomposition ties it to the image. The mask is detached in that term so
/// that the label-free regulariser never argues with the labels about the mask; freezing the
/// heads instead would not help, as their input features still change.
pub fn finetune_losses(
    pred: &Tensor,
    image: &Tensor,
    label: &Tensor,
    weights: &FinetuneWeights,
) -> Result<Losses> {
    check_prediction(pred)?;
    check_pair("image", image, pred)?;
    check_pair("label", label, pred)?;
    let x = image
        .f_to_kind(Kind::Float)
        .context(|| "to float".to_string())?;
    let y = label
        .f_to_kind(Kind::Float)
        .context(|| "to float".to_string())?;
    let logit = channel(pred, MASK_CHANNEL)?;
    let probability = logit.f_sigmoid().context(|| "sigmoid".to_string())?;
    let dice = soft_dice_loss(&probability, &y)?;
    let terms = || -> Result<(Tensor, Tensor, Tensor), tch::TchError> {
        let bce = logit.f_binary_cross_entropy_with_logits::<Tensor>(
            &y,
            None,
            None,
            tch::Reduction::Mean,
        )?;
        let healthy = channel(pred, HEALTHY_CHANNEL).map_err(to_tch)?;
        let outside = y.f_le(0.5)?.f_to_kind(Kind::Float)?;
        let healthy_l1 = healthy
            .f_sub(&x)?
            .f_abs()?
            .f_mul(&outside)?
            .f_sum(Kind::Float)?
            .f_div(&outside.f_sum(Kind::Float)?.f_clamp_min(1.0)?)?;
        let tumour = channel(pred, TUMOUR_CHANNEL).map_err(to_tch)?;
        let fixed = probability.f_detach()?;
        let recomposed = tumour.f_sub(&healthy)?.f_mul(&fixed)?.f_add(&healthy)?;
        let recomposition = recomposed.f_sub(&x)?.f_abs()?.f_mean(Kind::Float)?;
        Ok((bce, healthy_l1, recomposition))
    };
    let (bce, healthy, recomposition) = terms().context(|| "fine-tuning loss terms".to_string())?;
    let total = &dice * weights.dice
        + &bce * weights.bce
        + &healthy * weights.healthy
        + &recomposition * weights.recomposition;
    let zero = total.f_zeros_like().context(|| "zeros".to_string())?;
    Ok(Losses {
        total,
        dice,
        healthy,
        tumour: zero.shallow_clone(),
        healthy_in_tumour: zero.shallow_clone(),
        tumour_in_tumour: zero,
        bce,
        recomposition,
    })
}

fn to_tch(e: Error) -> tch::TchError {
    tch::TchError::Kind(e.to_string())
}

/// The image the layers recompose: ŝ·σ(m̂) + n̂·(1 − σ(m̂)), (B, 1, D, H, W) float32.
pub fn recompose(pred: &Tensor) -> Result<Tensor> {
    let p = mask_probability(pred)?;
    let healthy = channel(pred, HEALTHY_CHANNEL)?;
    let tumour = channel(pred, TUMOUR_CHANNEL)?;
    // n̂ + σ·(ŝ − n̂) is the same blend with one multiplication.
    tumour
        .f_sub(&healthy)
        .and_then(|d| d.f_mul(&p))
        .and_then(|d| d.f_add(&healthy))
        .context(|| "recomposing the layers".to_string())
}

/// The label-free score: per sample, the mean |image − recompose(pred)| over its voxels; (B,)
/// float32. Lower is better; average over held-out volumes to select a model without labels.
pub fn recomposition_l1(pred: &Tensor, image: &Tensor) -> Result<Tensor> {
    check_prediction(pred)?;
    check_pair("image", image, pred)?;
    let recomposed = recompose(pred)?;
    recomposed
        .f_sub(&image.f_to_kind(Kind::Float)?)
        .and_then(|d| d.f_abs())
        .and_then(|d| d.f_flatten(1, -1))
        .and_then(|d| d.f_mean_dim(1, false, Kind::Float))
        .context(|| "recomposition L1".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A (B, 1, 1, 1, V) tensor from per-sample voxel values.
    fn volume(samples: &[&[f32]]) -> Tensor {
        let v = samples[0].len() as i64;
        let flat: Vec<f32> = samples.iter().flat_map(|s| s.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([samples.len() as i64, 1, 1, 1, v])
    }

    fn prediction(healthy: &Tensor, tumour: &Tensor, logit: &Tensor) -> Tensor {
        Tensor::cat(&[healthy, tumour, logit], 1)
    }

    fn close(t: &Tensor, expected: f64) {
        let got = t.double_value(&[]);
        assert!(
            (got - expected).abs() < 1e-6,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn hand_computed_terms() {
        // One sample, four voxels, tumour at voxel 0. Logit 0 gives p = 0.5 everywhere:
        // Dice = 1 - (2*0.5 + e) / (2 + 1 + e) = 2/3; healthy error 1 everywhere; tumour error
        // 2 at the tumour voxel only.
        let pred = prediction(
            &volume(&[&[1.0, 1.0, 1.0, 1.0]]),
            &volume(&[&[2.0, 0.0, 0.0, 0.0]]),
            &volume(&[&[0.0; 4]]),
        );
        let zeros = volume(&[&[0.0; 4]]);
        let mask = volume(&[&[1.0, 0.0, 0.0, 0.0]]);
        let l = layer_losses(&pred, &zeros, &zeros, &mask, &LossWeights::default()).unwrap();
        close(&l.dice, 1.0 - (1.0 + 1e-7) / (3.0 + 1e-7));
        close(&l.healthy, 1.0);
        close(&l.tumour, 0.5);
        close(&l.healthy_in_tumour, 1.0);
        close(&l.tumour_in_tumour, 2.0);
        close(&l.total, 2.0 / 3.0 + 1.0 + 0.5 + 1.0 + 2.0);
        let v = l.values().unwrap();
        assert!((v.total - (2.0 / 3.0 + 4.5)).abs() < 1e-6);
    }

    #[test]
    fn dice_is_one_ratio_over_the_whole_batch() {
        // Sample 0 is predicted perfectly, sample 1 has no tumour and predicts p = 0.5 on 2
        // voxels. Batch Dice: 1 - 2*1/(1 + 1 + 1) = 1/3; a per-sample mean would give 0.5.
        let big = 30.0;
        let logit = volume(&[&[big, -big], &[0.0, 0.0]]);
        let mask = volume(&[&[1.0, 0.0], &[0.0, 0.0]]);
        let zeros = volume(&[&[0.0; 2], &[0.0; 2]]);
        let pred = prediction(&zeros, &zeros, &logit);
        let l = layer_losses(&pred, &zeros, &zeros, &mask, &LossWeights::default()).unwrap();
        close(&l.dice, 1.0 / 3.0);
    }

    #[test]
    fn tumour_terms_vanish_without_both_classes() {
        let pred = prediction(
            &volume(&[&[1.0, 1.0]]),
            &volume(&[&[1.0, 1.0]]),
            &volume(&[&[0.0, 0.0]]),
        )
        .set_requires_grad(true);
        let zeros = volume(&[&[0.0, 0.0]]);
        for mask in [volume(&[&[0.0, 0.0]]), volume(&[&[1.0, 1.0]])] {
            let l = layer_losses(&pred, &zeros, &zeros, &mask, &LossWeights::default()).unwrap();
            close(&l.healthy_in_tumour, 0.0);
            close(&l.tumour_in_tumour, 0.0);
            close(&l.healthy, 1.0);
            l.total.backward();
            let mut grad = pred.grad();
            assert_eq!(grad.isfinite().all().int64_value(&[]), 1);
            let _ = grad.zero_();
        }
    }

    #[test]
    fn weights_scale_terms_and_parse_with_defaults() {
        let pred = prediction(
            &volume(&[&[1.0, 1.0]]),
            &volume(&[&[3.0, 3.0]]),
            &volume(&[&[0.0, 0.0]]),
        );
        let zeros = volume(&[&[0.0, 0.0]]);
        let mask = volume(&[&[1.0, 0.0]]);
        let weights = LossWeights {
            dice: 0.0,
            healthy: 2.0,
            tumour: 0.5,
            healthy_in_tumour: 0.0,
            tumour_in_tumour: 0.0,
        };
        let l = layer_losses(&pred, &zeros, &zeros, &mask, &weights).unwrap();
        close(&l.total, 2.0 * 1.0 + 0.5 * 3.0);

        let parsed: LossWeights = serde_json::from_str(r#"{"dice": 2.0}"#).unwrap();
        assert_eq!(parsed.dice, 2.0);
        assert_eq!(parsed.tumour_in_tumour, 1.0);
        assert!(serde_json::from_str::<LossWeights>(r#"{"bce": 1.0}"#).is_err());
    }

    #[test]
    fn recomposition_blends_by_the_mask_probability() {
        // Logit 0 blends half and half; a large logit keeps the tumour layer.
        let pred = prediction(
            &volume(&[&[2.0, 2.0], &[0.0, 0.0]]),
            &volume(&[&[4.0, 4.0], &[5.0, 5.0]]),
            &volume(&[&[0.0, 0.0], &[40.0, 40.0]]),
        );
        let recomposed = recompose(&pred).unwrap();
        assert_eq!(recomposed.size(), [2, 1, 1, 1, 2]);
        close(&recomposed.get(0).mean(Kind::Float), 3.0);
        close(&recomposed.get(1).mean(Kind::Float), 5.0);

        let image = volume(&[&[3.0, 4.0], &[5.0, 5.0]]);
        let score = recomposition_l1(&pred, &image).unwrap();
        assert_eq!(score.size(), [2]);
        close(&score.get(0), 0.5);
        close(&score.get(1), 0.0);
    }

    #[test]
    fn finetune_terms_by_hand() {
        // Two voxels, tumour at voxel 0. Logits 0: p = 0.5, BCE = ln 2 on both voxels.
        // Healthy layer 1 vs image (3, 2): outside the tumour |1 - 2| = 1. Tumour layer 5:
        // recomposition 0.5*5 + 0.5*1 = 3, errors (0, 1), mean 0.5.
        let pred = prediction(
            &volume(&[&[1.0, 1.0]]),
            &volume(&[&[5.0, 5.0]]),
            &volume(&[&[0.0, 0.0]]),
        )
        .set_requires_grad(true);
        let image = volume(&[&[3.0, 2.0]]);
        let label = volume(&[&[1.0, 0.0]]);
        let l = finetune_losses(&pred, &image, &label, &FinetuneWeights::default()).unwrap();
        close(&l.dice, 1.0 - (1.0 + 1e-7) / (2.0 + 1e-7));
        close(&l.bce, std::f64::consts::LN_2);
        close(&l.healthy, 1.0);
        close(&l.recomposition, 0.5);
        close(&l.tumour, 0.0);
        let expected = 0.5 + std::f64::consts::LN_2 + 1.0 + 0.05;
        close(&l.total, expected);
        // The recomposition term does not push the mask: with only it weighted, the mask
        // logit gets no gradient.
        let only = FinetuneWeights {
            dice: 0.0,
            bce: 0.0,
            healthy: 0.0,
            recomposition: 1.0,
        };
        finetune_losses(&pred, &image, &label, &only)
            .unwrap()
            .total
            .backward();
        let grad = pred.grad();
        assert_eq!(
            grad.narrow(1, 2, 1)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert!(
            grad.narrow(1, 1, 1)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let pred = Tensor::zeros([1, 3, 1, 1, 4], (Kind::Float, Device::Cpu));
        let good = Tensor::zeros([1, 1, 1, 1, 4], (Kind::Float, Device::Cpu));
        let bad = Tensor::zeros([1, 1, 1, 1, 5], (Kind::Float, Device::Cpu));
        let w = LossWeights::default();
        assert!(matches!(
            layer_losses(&pred, &good, &good, &bad, &w),
            Err(Error::Shape { .. })
        ));
        let two_channels = Tensor::zeros([1, 2, 1, 1, 4], (Kind::Float, Device::Cpu));
        assert!(matches!(
            layer_losses(&two_channels, &good, &good, &good, &w),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            recomposition_l1(&pred, &bad),
            Err(Error::Shape { .. })
        ));
    }
}
