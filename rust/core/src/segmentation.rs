//! From the network's raw outputs to the segmentation on the scan's own grid: the mask
//! probability mapped back, the threshold inside the region searched, the profile's layer rule,
//! small lesions dropped. It needs no network, so the libtorch runtime (`layerseg segment`) and
//! a network run elsewhere (MONAI's BasicUNet on the user's torch, `layerseg.monai.segment`)
//! finish a scan with the same code.

use ndarray::{Array3, ArrayView4, Axis, Zip};

use crate::error::{Error, Result};
use crate::postprocess::{fill_enclosed, remove_small_components, threshold};
use crate::preprocess::Prepared;
use crate::volume::{Image, LabelMap};
use crate::Profile;

/// Output channel of the healthy layer (the network's, as MONAI's BasicUNet gives them).
pub const HEALTHY_CHANNEL: usize = 0;
/// Output channel of the tumour layer.
pub const TUMOUR_CHANNEL: usize = 1;
/// Output channel of the mask logit.
pub const MASK_CHANNEL: usize = 2;

/// How the outputs become a mask; `None` means the profile's value.
#[derive(Clone, Debug, Default)]
pub struct MaskOptions {
    pub threshold: Option<f64>,
    /// Drop connected components smaller than this (mm^3); 0 keeps everything.
    pub min_component_mm3: f64,
    /// Also map the healthy and tumour layers back to the input grid.
    pub layers: bool,
    /// The network's own mask, without the profile's layer rule.
    pub raw_mask: bool,
}

/// Refuses settings that cannot mean anything, before any work, with the reason: the threshold
/// is a probability in [0, 1], the overlap a fraction of a window in [0, 1), the smallest
/// component a volume >= 0. Every face (CLI, Python, the MONAI path) checks through this.
pub fn check_settings(
    threshold: Option<f64>,
    overlap: Option<f64>,
    min_component_mm3: f64,
) -> std::result::Result<(), String> {
    let refuse =
        |what: &str, value: f64, range: &str| Err(format!("{what} {value} is outside {range}"));
    if let Some(t) = threshold.filter(|t| !(0.0..=1.0).contains(t)) {
        return refuse("threshold", t, "[0, 1] (a probability)");
    }
    if let Some(o) = overlap.filter(|o| !(0.0..1.0).contains(o)) {
        return refuse("overlap", o, "[0, 1) (a fraction of the window)");
    }
    if !(min_component_mm3 >= 0.0 && min_component_mm3.is_finite()) {
        return refuse(
            "minimum component size (mm^3)",
            min_component_mm3,
            "[0, infinity)",
        );
    }
    Ok(())
}

/// Everything a segmentation produces, on the input scan's grid.
pub struct Segmentation {
    pub mask: LabelMap,
    /// Sigmoid of the mask channel.
    pub probability: Image,
    /// The healthy and tumour layers, in the network's normalised intensity units (when asked).
    pub healthy: Option<Image>,
    pub tumour: Option<Image>,
    /// The image minus the healthy layer, in the network's normalised units (when asked).
    pub residual: Option<Image>,
}

/// The segmentation of `image` from the network's raw outputs `[C, D, H, W]` on the network
/// grid of `prepared` (from `preprocess(image, ...)`).
pub fn finish(
    image: &Image,
    prepared: &Prepared,
    outputs: ArrayView4<'_, f32>,
    profile: &Profile,
    opts: &MaskOptions,
) -> Result<Segmentation> {
    let net_shape = prepared.input.dim();
    let (channels, d, h, w) = outputs.dim();
    if channels != 3 || (d, h, w) != net_shape {
        return Err(Error::InvalidInput {
            what: "network outputs".into(),
            reason: format!(
                "expected [3, {}, {}, {}] (healthy layer, tumour layer, mask logit on the \
                 network grid), got {:?}",
                net_shape.0,
                net_shape.1,
                net_shape.2,
                outputs.shape()
            ),
        });
    }
    let channel = |c: usize| outputs.index_axis(Axis(0), c);
    let probability_net = channel(MASK_CHANNEL).mapv(|v| 1.0 / (1.0 + (-v).exp()));
    let map = &prepared.mapping;
    let probability = map.to_input_grid(probability_net.view(), 0.0);
    let mapped_back;
    let region = match &prepared.input_region {
        Some(organ) => organ,
        None => {
            let region = map.labels_to_input_grid(prepared.region.mapv(u8::from).view());
            mapped_back = region.data.mapv(|v| v > 0);
            &mapped_back
        }
    };
    let thr = opts.threshold.unwrap_or(profile.inference.threshold) as f32;
    let mut mask = threshold(&probability.data, thr, Some(region));
    let rule = (profile.inference.layer_rule.as_ref()).filter(|_| !opts.raw_mask);
    let residual = (opts.layers || rule.is_some()).then(|| {
        let residual = &prepared.input - &channel(HEALTHY_CHANNEL);
        map.to_input_grid(residual.view(), 0.0)
    });
    if let (Some(rule), Some(residual)) = (rule, &residual) {
        let typical = median_inside(&residual.data, region);
        let margin = rule.margin as f32;
        Zip::from(&mut mask)
            .and(&residual.data)
            .for_each(|keep, &r| {
                *keep = *keep && rule.residual_sign.apply(r - typical) > margin;
            });
    }
    let min_component_mm3 = opts
        .min_component_mm3
        .max(rule.map_or(0.0, |r| r.min_lesion_mm3));
    if min_component_mm3 > 0.0 {
        mask = remove_small_components(&mask, image.spacing(), min_component_mm3);
    }
    if rule.is_some() {
        mask = fill_enclosed(&mask) & region;
    }
    Ok(Segmentation {
        mask: image.with_data(mask.mapv(u8::from)),
        healthy: opts
            .layers
            .then(|| map.to_input_grid(channel(HEALTHY_CHANNEL), 0.0)),
        tumour: opts
            .layers
            .then(|| map.to_input_grid(channel(TUMOUR_CHANNEL), 0.0)),
        residual: residual.filter(|_| opts.layers),
        probability,
    })
}

/// The median of `values` inside `region` (0 for an empty region). The layer rule measures
/// departures from it, not from 0: a healthy layer that is off by a constant over the whole
/// organ (seen on LiTS-117, where it sat 0.44 below the parenchyma) shifts every residual alike
/// and must not decide what is tumour.
pub fn median_inside(values: &Array3<f32>, region: &Array3<bool>) -> f32 {
    let mut inside: Vec<f32> = Zip::from(values)
        .and(region)
        .fold(Vec::new(), |mut acc, &v, &r| {
            if r {
                acc.push(v);
            }
            acc
        });
    if inside.is_empty() {
        return 0.0;
    }
    let middle = inside.len() / 2;
    *inside.select_nth_unstable_by(middle, f32::total_cmp).1
}
