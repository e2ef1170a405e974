//! MONAI's `BasicUNet(spatial_dims=3, in_channels, out_channels, features)` with MONAI's other
//! defaults, with the same graph, state-dict names and shapes, so weights move both ways unchanged.

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use layerseg_core::segmentation;

use super::convolution::{conv_params, TwoConv};
use super::sampling::{Down, UpCat};
use crate::error::{Error, Result, TorchContext};

/// Output channel of the healthy (normal) layer n̂.
pub const HEALTHY_CHANNEL: i64 = segmentation::HEALTHY_CHANNEL as i64;
/// Output channel of the tumour layer ŝ.
pub const TUMOUR_CHANNEL: i64 = segmentation::TUMOUR_CHANNEL as i64;
/// Output channel of the mask logit m̂ (the mask is its sigmoid).
pub const MASK_CHANNEL: i64 = segmentation::MASK_CHANNEL as i64;

/// Every spatial axis must survive four 2x poolings.
pub const MIN_SPATIAL: i64 = 16;

/// The network's shape. Serialised in model cards and profiles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicUNetConfig {
    pub in_channels: i64,
    /// 3 for layer decomposition: healthy layer, tumour layer, mask logit.
    pub out_channels: i64,
    /// MONAI's `features`: the five encoder widths, then the width after the last upsampling.
    pub features: [i64; 6],
}

impl Default for BasicUNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            out_channels: 3,
            features: [32, 32, 64, 128, 256, 32],
        }
    }
}

impl BasicUNetConfig {
    pub fn validate(&self) -> Result<()> {
        if self.in_channels < 1 || self.out_channels < 1 {
            return Err(Error::Config(format!(
                "in_channels ({}) and out_channels ({}) must be at least 1",
                self.in_channels, self.out_channels
            )));
        }
        let f = &self.features;
        // The upsampling of levels 4, 3 and 2 halves the channel count.
        if f.iter().any(|&c| c < 1) || f[2..5].iter().any(|&c| c < 2) {
            return Err(Error::Config(format!(
                "features {f:?}: each must be at least 1, and features[2..5] at least 2"
            )));
        }
        Ok(())
    }
}

/// The 3D BasicUNet. `forward_t` maps (N, in_channels, D, H, W) to (N, out_channels, D, H, W);
/// for layer decomposition see [`HEALTHY_CHANNEL`], [`TUMOUR_CHANNEL`], [`MASK_CHANNEL`].
#[derive(Debug)]
pub struct BasicUNet {
    config: BasicUNetConfig,
    conv_0: TwoConv,
    down_1: Down,
    down_2: Down,
    down_3: Down,
    down_4: Down,
    upcat_4: UpCat,
    upcat_3: UpCat,
    upcat_2: UpCat,
    upcat_1: UpCat,
    final_weight: Tensor,
    final_bias: Tensor,
}

impl BasicUNet {
    /// Creates the parameters under `p` with PyTorch's default initialisation.
    pub fn new(p: nn::Path, config: &BasicUNetConfig) -> Result<Self> {
        config.validate()?;
        let f = config.features;
        let (final_weight, final_bias) = conv_params(
            &(&p / "final_conv"),
            &[config.out_channels, f[5], 1, 1, 1],
            config.out_channels,
        )?;
        Ok(Self {
            config: config.clone(),
            conv_0: TwoConv::new(&p / "conv_0", config.in_channels, f[0])?,
            down_1: Down::new(&p / "down_1", f[0], f[1])?,
            down_2: Down::new(&p / "down_2", f[1], f[2])?,
            down_3: Down::new(&p / "down_3", f[2], f[3])?,
            down_4: Down::new(&p / "down_4", f[3], f[4])?,
            upcat_4: UpCat::new(&p / "upcat_4", f[4], f[3], f[3], true)?,
            upcat_3: UpCat::new(&p / "upcat_3", f[3], f[2], f[2], true)?,
            upcat_2: UpCat::new(&p / "upcat_2", f[2], f[1], f[1], true)?,
            upcat_1: UpCat::new(&p / "upcat_1", f[1], f[0], f[5], false)?,
            final_weight,
            final_bias,
        })
    }

    pub fn config(&self) -> &BasicUNetConfig {
        &self.config
    }

    /// Checks that `x` is (N, in_channels, D, H, W) with every spatial size at least
    /// [`MIN_SPATIAL`], so that shape errors read as such rather than as libtorch failures.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let size = x.size();
        let ok = size.len() == 5
            && size[0] >= 1
            && size[1] == self.config.in_channels
            && size[2..].iter().all(|&s| s >= MIN_SPATIAL);
        if ok {
            Ok(())
        } else {
            Err(Error::Shape {
                what: "BasicUNet input".to_string(),
                expected: format!(
                    "(N, {}, D, H, W) with D, H, W >= {MIN_SPATIAL}",
                    self.config.in_channels
                ),
                got: size,
            })
        }
    }

    /// Runs the network. `train` is accepted for symmetry with tch's `ModuleT`: this network has
    /// no dropout and its instance norm uses the input's own statistics in both modes.
    pub fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        // Each map is moved into its last reader, so that without autograd it is freed there.
        let x0 = self.conv_0.forward(vec![x.shallow_clone()])?;
        let x1 = self.down_1.forward(&x0)?;
        let x2 = self.down_2.forward(&x1)?;
        let x3 = self.down_3.forward(&x2)?;
        let x4 = self.down_4.forward(&x3)?;
        let u4 = self.upcat_4.forward(x4, x3)?;
        let u3 = self.upcat_3.forward(u4, x2)?;
        let u2 = self.upcat_2.forward(u3, x1)?;
        let u1 = self.upcat_1.forward(u2, x0)?;
        u1.f_conv3d(
            &self.final_weight,
            Some(&self.final_bias),
            [1, 1, 1],
            [0, 0, 0],
            [1, 1, 1],
            1,
        )
        .context(|| "final 1x1x1 convolution".to_string())
    }
}
