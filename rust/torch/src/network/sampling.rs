//! BasicUNet's `Down` (max pooling, then `TwoConv`) and `UpCat` (transposed convolution, replicate
//! pad to the skip's size, concatenate, `TwoConv`).

use tch::{nn, Tensor};

use super::convolution::{conv_params, records_autograd, TwoConv, SLAB_DEPTH};
use crate::error::{Result, TorchContext};

/// `max_pooling` (MaxPool3d(2), no parameters) then `convs`.
#[derive(Debug)]
pub struct Down {
    convs: TwoConv,
}

impl Down {
    pub fn new(p: nn::Path, in_channels: i64, out_channels: i64) -> Result<Self> {
        Ok(Self {
            convs: TwoConv::new(&p / "convs", in_channels, out_channels)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = x
            .f_max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false)
            .context(|| format!("max pooling of shape {:?}", x.size()))?;
        self.convs.forward(vec![pooled])
    }
}

/// MONAI's `UpCat` with `upsample="deconv"`: `upsample.deconv` is a ConvTranspose3d with kernel and
/// stride 2 from `in_channels` to `up_channels` (half of `in_channels` unless `halves` is false).
#[derive(Debug)]
pub struct UpCat {
    deconv_weight: Tensor,
    deconv_bias: Tensor,
    convs: TwoConv,
}

impl UpCat {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        cat_channels: i64,
        out_channels: i64,
        halves: bool,
    ) -> Result<Self> {
        let up_channels = if halves { in_channels / 2 } else { in_channels };
        let (deconv_weight, deconv_bias) = conv_params(
            &(&p / "upsample" / "deconv"),
            &[in_channels, up_channels, 2, 2, 2],
            up_channels,
        )?;
        Ok(Self {
            deconv_weight,
            deconv_bias,
            convs: TwoConv::new(&p / "convs", cat_channels + up_channels, out_channels)?,
        })
    }

    /// `x`: the coarser map to upsample; `skip`: the encoder map it is concatenated after. Both
    /// are taken, so that without autograd their memory is freed as soon as it has been read.
    pub fn forward(&self, x: Tensor, skip: Tensor) -> Result<Tensor> {
        let up = self.upsample(&x)?;
        drop(x);
        let up = pad_to_skip(up, &skip)?;
        self.convs.forward(vec![skip, up])
    }

    /// The transposed convolution. Its kernel equals its stride, so output slices 2i and 2i+1
    /// depend on input slice i alone; without autograd it runs [`SLAB_DEPTH`]/2 input slices at
    /// a time, which bounds libtorch's CPU column buffer (eight times the input) to a slab.
    fn upsample(&self, x: &Tensor) -> Result<Tensor> {
        let deconv = |x: &Tensor| {
            x.f_conv_transpose3d(
                &self.deconv_weight,
                Some(&self.deconv_bias),
                [2, 2, 2],
                [0, 0, 0],
                [0, 0, 0],
                1,
                [1, 1, 1],
            )
            .context(|| format!("transposed conv of shape {:?}", x.size()))
        };
        let size = x.size();
        let step = SLAB_DEPTH / 2;
        if records_autograd(&self.deconv_bias) || size[2] <= step {
            return deconv(x);
        }
        let out = Tensor::f_empty(
            [
                size[0],
                self.deconv_weight.size()[1],
                2 * size[2],
                2 * size[3],
                2 * size[4],
            ],
            (x.kind(), x.device()),
        )?;
        for start in (0..size[2]).step_by(step as usize) {
            let len = step.min(size[2] - start);
            let y = deconv(&x.f_narrow(2, start, len)?)?;
            out.f_narrow(2, 2 * start, 2 * len)?.f_copy_(&y)?;
        }
        Ok(out)
    }
}

/// MONAI's `is_pad`: where pooling dropped a voxel (odd size), the upsampled map is one voxel
/// short; replicate-pad one voxel at the end of each such axis. Larger gaps are left for `cat`
/// to report, as in MONAI.
fn pad_to_skip(up: Tensor, skip: &Tensor) -> Result<Tensor> {
    let (up_size, skip_size) = (up.size(), skip.size());
    // F.pad order: (W_before, W_after, H_before, H_after, D_before, D_after).
    let mut pad = [0i64; 6];
    let mut any = false;
    for i in 0..3 {
        let axis = up_size.len() - 1 - i;
        if skip_size.get(axis) != up_size.get(axis) {
            pad[2 * i + 1] = 1;
            any = true;
        }
    }
    if !any {
        return Ok(up);
    }
    up.f_pad(pad, "replicate", None)
        .context(|| format!("replicate padding of shape {up_size:?} to {skip_size:?}"))
}
