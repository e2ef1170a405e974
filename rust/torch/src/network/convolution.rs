//! MONAI's `Convolution` (conv + ADN) and `TwoConv`, as BasicUNet builds them: 3x3x3 convolution
//! with padding 1 and bias, then `adn` in "NDA" order: InstanceNorm3d(affine=True), Dropout(0),
//! LeakyReLU(0.1).

use tch::{nn, Tensor};

use crate::error::{Result, TorchContext};

/// LeakyReLU negative slope of MONAI's BasicUNet default `act`.
pub const NEGATIVE_SLOPE: f64 = 0.1;
/// `torch.nn.InstanceNorm3d` default eps.
pub const INSTANCE_NORM_EPS: f64 = 1e-5;

/// A weight and a bias with PyTorch's default `_ConvNd` initialisation: both uniform in
/// ±1/sqrt(fan_in), where PyTorch takes fan_in from dimension 1 of the weight (for a transposed
/// convolution that is the output channel count).
pub(crate) fn conv_params(
    p: &nn::Path,
    weight_shape: &[i64],
    out_channels: i64,
) -> Result<(Tensor, Tensor)> {
    let fan_in: i64 = weight_shape[1..].iter().product();
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let weight = p
        .f_var("weight", weight_shape, init)
        .context(|| format!("creating {}", p.path("weight")))?;
    let bias = p
        .f_var("bias", &[out_channels], init)
        .context(|| format!("creating {}", p.path("bias")))?;
    Ok((weight, bias))
}

/// LeakyReLU with MONAI's slope. tch 0.26 only binds `leaky_relu` with the default slope 0.01,
/// so this evaluates `leaky_relu_backward(grad_output = x, self = x, slope)`, which is
/// `x > 0 ? x : slope * x` in one kernel. `self` is detached so autograd only differentiates the
/// `grad_output` argument, whose derivative is exactly LeakyReLU's.
///
/// Without autograd (inference) it writes into `x` itself, as MONAI's in-place LeakyReLU does,
/// which saves one activation-sized allocation per convolution.
pub(crate) fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    let result = if x.requires_grad() {
        x.detach().f_leaky_relu_backward(x, NEGATIVE_SLOPE, false)
    } else {
        x.f_leaky_relu_backward_grad_input(x, x, NEGATIVE_SLOPE, false)
    };
    result.context(|| "LeakyReLU".to_string())
}

/// Conv3d(k=3, padding=1, bias) then instance norm (affine, batch statistics always) then
/// LeakyReLU(0.1). State-dict names: `conv.{weight,bias}`, `adn.N.{weight,bias}`.
#[derive(Debug)]
pub struct Convolution {
    conv_weight: Tensor,
    conv_bias: Tensor,
    norm_weight: Tensor,
    norm_bias: Tensor,
}

impl Convolution {
    pub fn new(p: nn::Path, in_channels: i64, out_channels: i64) -> Result<Self> {
        let (conv_weight, conv_bias) = conv_params(
            &(&p / "conv"),
            &[out_channels, in_channels, 3, 3, 3],
            out_channels,
        )?;
        let norm = &p / "adn" / "N";
        let norm_weight = norm
            .f_ones("weight", &[out_channels])
            .context(|| format!("creating {}", norm.path("weight")))?;
        let norm_bias = norm
            .f_zeros("bias", &[out_channels])
            .context(|| format!("creating {}", norm.path("bias")))?;
        Ok(Self {
            conv_weight,
            conv_bias,
            norm_weight,
            norm_bias,
        })
    }

    /// `x`: (N, in_channels, D, H, W) → (N, out_channels, D, H, W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x
            .f_conv3d(
                &self.conv_weight,
                Some(&self.conv_bias),
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
                1,
            )
            .context(|| format!("conv3d of an input of shape {:?}", x.size()))?;
        // InstanceNorm3d without running stats always normalises with the input's statistics,
        // in training and in eval alike.
        let y = y
            .f_instance_norm(
                Some(&self.norm_weight),
                Some(&self.norm_bias),
                None::<&Tensor>,
                None::<&Tensor>,
                true,
                0.1,
                INSTANCE_NORM_EPS,
                true,
            )
            .context(|| "instance norm".to_string())?;
        leaky_relu(&y)
    }
}

/// Two `Convolution`s, named `conv_0` and `conv_1`.
#[derive(Debug)]
pub struct TwoConv {
    conv_0: Convolution,
    conv_1: Convolution,
}

impl TwoConv {
    pub fn new(p: nn::Path, in_channels: i64, out_channels: i64) -> Result<Self> {
        Ok(Self {
            conv_0: Convolution::new(&p / "conv_0", in_channels, out_channels)?,
            conv_1: Convolution::new(&p / "conv_1", out_channels, out_channels)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv_1.forward(&self.conv_0.forward(x)?)
    }
}
