//! MONAI's `Convolution` (conv + ADN) and `TwoConv`, as BasicUNet builds them: 3x3x3 convolution
//! with padding 1 and bias, then `adn` in "NDA" order: InstanceNorm3d(affine=True), Dropout(0),
//! LeakyReLU(0.1).
//!
//! Without autograd (inference) the same arithmetic runs in less memory: the convolution goes
//! through the volume in slabs of [`SLAB_DEPTH`] slices into one preallocated output, the
//! concatenated inputs of an `UpCat` are never concatenated whole, and the instance norm and the
//! LeakyReLU write into that output. A default-width network on a 128^3 window then holds about
//! four full-resolution activations at its peak instead of seven (1.0 GB instead of 1.9 GB).

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

/// Output slices each inference-time convolution computes at a time. Small enough that its
/// working copies (the slab of the concatenated input, oneDNN's reordered slab) stay far below
/// one full-resolution activation, large enough that the kernels stay efficient.
pub(crate) const SLAB_DEPTH: i64 = 16;

/// Whether autograd records operations on the parameter `bias` now: grad mode is on and `bias`
/// is trainable. tch does not expose the grad mode, but the result of an operation on `bias`
/// requires grad exactly then (a view would not do: it inherits the flag in either mode). Pass
/// a small parameter, as the operation copies it.
pub(crate) fn records_autograd(bias: &Tensor) -> bool {
    bias.f_neg().map_or(true, |t| t.requires_grad())
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

    /// `parts`: (N, C_i, D, H, W) maps whose channels, concatenated in order, are the
    /// `in_channels`; → (N, out_channels, D, H, W).
    pub fn forward(&self, parts: &[&Tensor]) -> Result<Tensor> {
        if !records_autograd(&self.conv_bias) {
            return self.forward_without_autograd(parts);
        }
        let x = concatenate(parts)?;
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

    /// [`Self::forward`] in place, slab by slab (module docs).
    fn forward_without_autograd(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let mut y = conv3d_in_slabs(parts, &self.conv_weight, &self.conv_bias)?;
        let (var, mean) = y
            .f_var_mean_dim([2i64, 3, 4].as_slice(), false, true)
            .context(|| "instance norm statistics".to_string())?;
        let channels = [1, -1, 1, 1, 1];
        let scale = (var + INSTANCE_NORM_EPS).rsqrt() * self.norm_weight.view(channels);
        let shift = self.norm_bias.view(channels) - mean * &scale;
        let _ = y.f_mul_(&scale).context(|| "instance norm".to_string())?;
        let _ = y.f_add_(&shift).context(|| "instance norm".to_string())?;
        leaky_relu(&y)
    }
}

/// `parts` concatenated along the channels (the tensor itself when there is one).
fn concatenate(parts: &[&Tensor]) -> Result<Tensor> {
    match parts {
        [one] => Ok(one.shallow_clone()),
        _ => Tensor::f_cat(parts, 1).context(|| {
            let shapes: Vec<_> = parts.iter().map(|p| p.size()).collect();
            format!("concatenating {shapes:?}")
        }),
    }
}

/// The 3x3x3 convolution (padding 1) of `parts` concatenated, [`SLAB_DEPTH`] output slices at a
/// time: each slab reads one slice more on each side, zero-padded only at the volume's ends, so
/// the result is the whole-volume convolution's.
fn conv3d_in_slabs(parts: &[&Tensor], weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let size = parts[0].size();
    let depth = size[2];
    let out = Tensor::f_empty(
        [size[0], weight.size()[0], size[2], size[3], size[4]],
        (parts[0].kind(), parts[0].device()),
    )?;
    for start in (0..depth).step_by(SLAB_DEPTH as usize) {
        let end = (start + SLAB_DEPTH).min(depth);
        let (lo, hi) = ((start - 1).max(0), (end + 1).min(depth));
        let slabs: Vec<Tensor> = parts
            .iter()
            .map(|p| p.f_narrow(2, lo, hi - lo))
            .collect::<std::result::Result<_, _>>()?;
        let slab = concatenate(&slabs.iter().collect::<Vec<_>>())?;
        let slab =
            slab.f_constant_pad_nd([0, 0, 0, 0, i64::from(start == 0), i64::from(end == depth)])?;
        let y = slab
            .f_conv3d(weight, Some(bias), [1, 1, 1], [0, 1, 1], [1, 1, 1], 1)
            .context(|| format!("conv3d of a slab of shape {:?}", slab.size()))?;
        out.f_narrow(2, start, end - start)?.f_copy_(&y)?;
    }
    Ok(out)
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

    /// `parts` as for [`Convolution::forward`]; they are dropped as soon as the first
    /// convolution has read them, so that without autograd their memory is reused.
    pub fn forward(&self, parts: Vec<Tensor>) -> Result<Tensor> {
        let first = self.conv_0.forward(&parts.iter().collect::<Vec<_>>())?;
        drop(parts);
        self.conv_1.forward(&[&first])
    }
}
