//! Segmentation: preprocess, sliding-window network, postprocess, back on the scan's own grid.
//!
//! The windows, the Gaussian weighting and the stitching are MONAI's
//! (`sliding_window_inference`, planned in `layerseg_core::sliding_window`), so the two agree to
//! numerical precision on the same weights.

use ndarray::{Array3, Array4, ArrayView3};
use tch::{Device, Kind, Tensor};

use layerseg_core::preprocess::{preprocess, Prepared};
use layerseg_core::segmentation::{check_settings, finish, MaskOptions};
pub use layerseg_core::segmentation::{median_inside, Segmentation};
use layerseg_core::sliding_window::{gaussian_importance, plan_windows};
use layerseg_core::{Image, LabelMap, Profile, Progress};

use crate::error::{Error, Result};
use crate::network::Model;

/// MONAI's default `sigma_scale` for Gaussian window weighting.
pub const SIGMA_SCALE: f64 = 0.125;

#[derive(Clone, Debug)]
pub struct WindowOptions {
    pub roi: [usize; 3],
    pub overlap: f64,
    /// Windows per forward pass (MONAI `sw_batch_size`).
    pub batch_size: usize,
    /// Also run on the volume mirrored along each axis and average (4 passes).
    pub flip_tta: bool,
}

/// Settings for [`segment`]; `None` means the profile's value.
#[derive(Clone, Debug, Default)]
pub struct SegmentOptions {
    pub threshold: Option<f64>,
    pub overlap: Option<f64>,
    pub batch_size: Option<usize>,
    pub flip_tta: bool,
    /// Drop connected components smaller than this (mm^3); 0 keeps everything.
    pub min_component_mm3: f64,
    /// Also map the healthy and tumour layers back to the input grid.
    pub layers: bool,
    /// The network's own mask, without the profile's layer rule.
    pub raw_mask: bool,
}

impl SegmentOptions {
    /// Refuses settings that cannot mean anything, before any work: the threshold is a
    /// probability in [0, 1], the overlap a fraction of a window in [0, 1), the smallest
    /// component a volume >= 0. Both faces (CLI and Python) call this, and [`segment`] again.
    pub fn validate(&self) -> Result<()> {
        check_settings(self.threshold, self.overlap, self.min_component_mm3).map_err(Error::Config)
    }
}

/// Segment one scan. `organ` (on the scan's grid) restricts the search, as the profile says.
pub fn segment(
    image: &Image,
    organ: Option<&LabelMap>,
    profile: &Profile,
    model: &Model,
    opts: &SegmentOptions,
    progress: &dyn Progress,
) -> Result<Segmentation> {
    opts.validate()?;
    let prepared = preprocess(image, organ, profile)?;
    segment_prepared(image, &prepared, profile, model, opts, progress)
}

/// [`segment`] of a scan already preprocessed (`prepared` from `preprocess(image, ...)`), e.g.
/// one validated again and again during training.
pub fn segment_prepared(
    image: &Image,
    prepared: &Prepared,
    profile: &Profile,
    model: &Model,
    opts: &SegmentOptions,
    progress: &dyn Progress,
) -> Result<Segmentation> {
    let window = WindowOptions {
        roi: profile.inference.patch_size,
        overlap: opts.overlap.unwrap_or(profile.inference.overlap),
        batch_size: opts.batch_size.unwrap_or(1).max(1),
        flip_tta: opts.flip_tta,
    };
    let outputs = sliding_window(model, prepared.input.view(), &window, progress)?;
    let mask = MaskOptions {
        threshold: opts.threshold,
        min_component_mm3: opts.min_component_mm3,
        layers: opts.layers,
        raw_mask: opts.raw_mask,
    };
    Ok(finish(image, prepared, outputs.view(), profile, &mask)?)
}

/// Run the network over `input` in Gaussian-weighted windows and stitch the raw outputs
/// (channels first), exactly as MONAI's `sliding_window_inference` with `mode="gaussian"`.
pub fn sliding_window(
    model: &Model,
    input: ArrayView3<'_, f32>,
    opts: &WindowOptions,
    progress: &dyn Progress,
) -> Result<Array4<f32>> {
    let flips: &[&[i64]] = if opts.flip_tta {
        &[&[], &[2], &[3], &[4]]
    } else {
        &[&[]]
    };
    let device = model.vs.device();
    let volume = to_tensor(input, device)?;
    let mut total: Option<Tensor> = None;
    for dims in flips {
        let x = if dims.is_empty() {
            volume.shallow_clone()
        } else {
            volume.f_flip(*dims)?
        };
        let mut y = stitch(model, &x, opts, progress)?;
        if !dims.is_empty() {
            y = y.f_flip(*dims)?;
        }
        total = Some(match total {
            Some(t) => t.f_add(&y)?,
            None => y,
        });
    }
    let mean = total
        .expect("at least one pass")
        .f_div_scalar(flips.len() as f64)?;
    to_array4(&mean.f_squeeze_dim(0)?)
}

/// One pass of windows over a [1, 1, D, H, W] tensor; returns [1, C, D, H, W].
fn stitch(
    model: &Model,
    volume: &Tensor,
    opts: &WindowOptions,
    progress: &dyn Progress,
) -> Result<Tensor> {
    let dims = volume.size();
    let shape = [dims[2] as usize, dims[3] as usize, dims[4] as usize];
    let plan = plan_windows(shape, opts.roi, opts.overlap);
    let device = volume.device();
    let mut pad = Vec::with_capacity(6);
    for d in (0..3).rev() {
        let before = plan.pad_before[d] as i64;
        pad.extend([before, (plan.padded_shape[d] - shape[d]) as i64 - before]);
    }
    let padded = volume.f_constant_pad_nd(pad.as_slice())?;
    let weight = to_tensor(gaussian_importance(opts.roi, SIGMA_SCALE).view(), device)?;
    let [pd, ph, pw] = plan.padded_shape.map(|v| v as i64);
    let out_channels = model.net.config().out_channels;
    let sum = Tensor::f_zeros([1, out_channels, pd, ph, pw], (Kind::Float, device))?;
    let count = Tensor::f_zeros([1, 1, pd, ph, pw], (Kind::Float, device))?;
    let roi = opts.roi.map(|v| v as i64);
    progress.start("windows", plan.starts.len() as u64);
    let _guard = tch::no_grad_guard();
    for batch in plan.starts.chunks(opts.batch_size) {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let crops: Vec<Tensor> = batch
            .iter()
            .map(|s| window(&padded, *s, roi))
            .collect::<Result<_>>()?;
        let pred = model.net.forward_t(&Tensor::f_cat(&crops, 0)?, false)?;
        for (b, start) in batch.iter().enumerate() {
            let p = pred.f_narrow(0, b as i64, 1)?.f_mul(&weight)?;
            let _ = window(&sum, *start, roi)?.f_add_(&p)?;
            let _ = window(&count, *start, roi)?.f_add_(&weight)?;
        }
        progress.advance(batch.len() as u64);
    }
    progress.finish();
    let stitched = sum.f_div(&count)?;
    let [bd, bh, bw] = plan.pad_before.map(|v| v as i64);
    Ok(stitched
        .f_narrow(2, bd, shape[0] as i64)?
        .f_narrow(3, bh, shape[1] as i64)?
        .f_narrow(4, bw, shape[2] as i64)?)
}

/// A view of `t` ([B, C, D, H, W]) at `start` with size `roi`.
fn window(t: &Tensor, start: [usize; 3], roi: [i64; 3]) -> Result<Tensor> {
    Ok(t.f_narrow(2, start[0] as i64, roi[0])?
        .f_narrow(3, start[1] as i64, roi[1])?
        .f_narrow(4, start[2] as i64, roi[2])?)
}

/// [D, H, W] array to a [1, 1, D, H, W] float tensor on `device`.
pub fn to_tensor(a: ArrayView3<'_, f32>, device: Device) -> Result<Tensor> {
    let owned: Array3<f32> = a.as_standard_layout().into_owned();
    let shape: Vec<i64> = owned.shape().iter().map(|&s| s as i64).collect();
    let (values, _) = owned.into_raw_vec_and_offset();
    Ok(Tensor::f_from_slice(&values)?
        .f_reshape([1, 1, shape[0], shape[1], shape[2]])?
        .f_to_device(device)?)
}

/// [C, D, H, W] float tensor to an array on the CPU.
pub fn to_array4(t: &Tensor) -> Result<Array4<f32>> {
    let t = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let size: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let values = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
    Array4::from_shape_vec((size[0], size[1], size[2], size[3]), values).map_err(|_| Error::Shape {
        what: "network output".into(),
        expected: "[C, D, H, W]".into(),
        got: size.iter().map(|&s| s as i64).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::BasicUNetConfig;
    use layerseg_core::NoProgress;

    fn small_model() -> Model {
        tch::manual_seed(0);
        let config = BasicUNetConfig {
            features: [4, 4, 8, 8, 16, 4],
            ..Default::default()
        };
        Model::new(&config, Device::Cpu).unwrap()
    }

    #[test]
    fn the_median_is_taken_inside_the_region_only() {
        let values = Array3::from_shape_fn((4, 4, 4), |(i, j, k)| (i * 16 + j * 4 + k) as f32);
        let region = Array3::from_shape_fn((4, 4, 4), |(i, _, _)| i == 3);
        assert_eq!(median_inside(&values, &region), 56.0);
        assert_eq!(
            median_inside(&values, &Array3::from_elem((4, 4, 4), false)),
            0.0
        );
    }

    #[test]
    fn one_window_equals_a_plain_forward_pass() {
        let model = small_model();
        let input = Array3::from_shape_fn((16, 16, 16), |(i, j, k)| {
            ((i * 7 + j * 3 + k) % 11) as f32 / 11.0
        });
        let opts = WindowOptions {
            roi: [16, 16, 16],
            overlap: 0.25,
            batch_size: 1,
            flip_tta: false,
        };
        let stitched = sliding_window(&model, input.view(), &opts, &NoProgress).unwrap();
        let direct = {
            let _g = tch::no_grad_guard();
            let x = to_tensor(input.view(), Device::Cpu).unwrap();
            to_array4(&model.net.forward_t(&x, false).unwrap().squeeze_dim(0)).unwrap()
        };
        let diff = (&stitched - &direct)
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn overlapping_windows_and_padding_give_full_size_finite_output() {
        let model = small_model();
        let input = Array3::from_shape_fn((40, 20, 12), |(i, j, k)| (i + j + k) as f32 / 72.0);
        for batch_size in [1, 3] {
            let opts = WindowOptions {
                roi: [16, 16, 16],
                overlap: 0.5,
                batch_size,
                flip_tta: batch_size == 3,
            };
            let out = sliding_window(&model, input.view(), &opts, &NoProgress).unwrap();
            assert_eq!(out.shape(), &[3, 40, 20, 12]);
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}
