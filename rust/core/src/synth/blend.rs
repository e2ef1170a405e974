//! The intensity rule and the blend `X = N + alpha * w * (S - N)`, where S is the tumour
//! intensity and w the (optionally edge-blurred) mask. With alpha = 1 and `S = N - drop * t`
//! this is Hu et al.'s `N - t * blur(mask) * drop`; with a hard edge it is the paper's
//! `alpha M S + (1 - alpha M) N`.

use ndarray::{s, Array3, ShapeBuilder, Zip};
use rayon::prelude::*;

use super::context::Context;
use super::grid::Region;
use super::params::{IntensityParams, SynthParams};
use crate::volume::{par_copy, par_like, Image, LabelMap};

/// The outputs, on the healthy scan's grid.
#[derive(Clone, Debug)]
pub struct Synthesized {
    pub image: Image,
    pub tumour: Image,
    pub mask: LabelMap,
    /// The healthy layer when the acquisition randomisation changed it; `None`: it is the
    /// healthy scan itself (`Inputs::healthy`), so it is not copied. See [`Self::healthy_or`].
    pub healthy: Option<Image>,
}

impl Synthesized {
    /// The healthy layer: the degraded one, else `input` (the healthy scan synthesised from).
    pub fn healthy_or<'a>(&'a self, input: &'a Image) -> &'a Image {
        self.healthy.as_ref().unwrap_or(input)
    }
}

/// Sum and count of `f(flat index)` over the voxels where it is `Some`, in a fixed order
/// (planes in parallel, added up in plane order).
fn ordered_sum(shape: [usize; 3], f: impl Fn(usize) -> Option<f64> + Sync) -> (f64, u64) {
    let plane = shape[1] * shape[2];
    let parts: Vec<(f64, u64)> = (0..shape[0])
        .into_par_iter()
        .map(|i| {
            let mut acc = (0.0, 0u64);
            for x in i * plane..(i + 1) * plane {
                if let Some(v) = f(x) {
                    acc.0 += v;
                    acc.1 += 1;
                }
            }
            acc
        })
        .collect();
    parts
        .iter()
        .fold((0.0, 0), |(s, c), (ps, pc)| (s + ps, c + pc))
}

/// The contiguous voxels of an array this module allocated (always C-ordered).
fn flat<T>(a: &Array3<T>) -> &[T] {
    a.as_slice()
        .expect("region arrays are allocated in standard order")
}

fn mean_or(sum_count: (f64, u64), fallback: f64) -> f64 {
    match sum_count {
        (s, c) if c > 0 => s / c as f64,
        _ => fallback,
    }
}

// Zeros with the shape and memory order of `like` (NIfTI volumes are Fortran-ordered).
// `zeros` asks the allocator for zeroed memory, so untouched pages cost nothing; only the
// tumour's box is ever written.
fn zeros_f32(like: &Array3<f32>) -> Array3<f32> {
    if like.is_standard_layout() {
        Array3::zeros(like.raw_dim())
    } else {
        Array3::zeros(like.raw_dim().f())
    }
}

fn zeros_u8(like: &Array3<f32>) -> Array3<u8> {
    if like.is_standard_layout() {
        Array3::zeros(like.raw_dim())
    } else {
        Array3::zeros(like.raw_dim().f())
    }
}

fn par_filled<T: Send + Sync + Copy>(like: &Array3<f32>, value: T) -> Option<Array3<T>> {
    par_like(like.view(), |_, dst| {
        for d in dst {
            d.write(value);
        }
    })
}

/// The outputs with no tumour at all (every shape fell outside the grid).
pub fn untouched(ctx: &Context<'_>) -> Synthesized {
    let healthy = ctx.inputs.healthy;
    let data = &healthy.data;
    Synthesized {
        image: healthy.with_data(par_copy(data.view())),
        tumour: healthy.with_data(par_filled(data, 0.0).unwrap_or_else(|| zeros_f32(data))),
        mask: healthy.with_data(par_filled(data, 0).unwrap_or_else(|| zeros_u8(data))),
        healthy: None,
    }
}

/// Per-voxel tumour intensity S over the region.
fn intensity(
    ctx: &Context<'_>,
    params: &SynthParams,
    region: &Region,
    level: &Array3<f32>,
    mask: &Array3<u8>,
    tex: &Array3<f32>,
    noise_texture: bool,
) -> Array3<f32> {
    let healthy = ctx.inputs.healthy.data.slice(s![
        region.lo[0]..region.hi[0],
        region.lo[1]..region.hi[1],
        region.lo[2]..region.hi[2]
    ]);
    let mut out = Array3::<f32>::zeros(region.shape());
    let (tex_a, level_a) = (tex, level);
    match &params.intensity {
        IntensityParams::RatioToHealthyMean { ratio, core } => {
            let core_fraction = core.map_or(-1.0, |c| c.fraction as f32);
            let target = |r: f64| r * ctx.fg.mean;
            // The paper rescales the texture by its non-zero mean inside the mask.
            let (mask, tex, level) = (flat(mask), flat(tex), flat(level));
            let mean_in = |in_core: bool| {
                mean_or(
                    ordered_sum(region.shape(), |i| {
                        let hit = mask[i] != 0 && tex[i] != 0.0;
                        (hit && (level[i] < core_fraction) == in_core).then_some(tex[i] as f64)
                    }),
                    0.0,
                )
            };
            let scale = |r: f64, m: f64| (m.abs() > 1e-12).then(|| (target(r) / m) as f32);
            let rim = scale(*ratio, mean_in(false));
            let inner = core.map(|c| scale(c.ratio, mean_in(true)));
            let (rim_target, core_target) = (
                target(*ratio) as f32,
                core.map_or(0.0, |c| target(c.ratio) as f32),
            );
            Zip::from(&mut out)
                .and(tex_a)
                .and(level_a)
                .par_for_each(|o, &t, &l| {
                    *o = match (l < core_fraction, inner) {
                        (true, Some(Some(s))) => s * t,
                        (true, Some(None)) => core_target,
                        _ => rim.map_or(rim_target, |s| s * t),
                    };
                });
        }
        IntensityParams::HuDrop { drop_hu } => {
            // Hu's noise texture is already a [0, 1] modulation; a scan texture is scaled to
            // mean 1 inside the mask, so the mean drop there is `drop_hu`.
            let norm = if noise_texture {
                1.0
            } else {
                let (mask, tex) = (flat(mask), flat(tex));
                let m = mean_or(
                    ordered_sum(region.shape(), |i| {
                        (mask[i] != 0 && tex[i] != 0.0).then_some(tex[i] as f64)
                    }),
                    0.0,
                );
                if m.abs() > 1e-12 {
                    1.0 / m as f32
                } else {
                    0.0
                }
            };
            let drop = *drop_hu as f32;
            Zip::from(&mut out)
                .and(tex_a)
                .and(&healthy)
                .par_for_each(|o, &t, &n| {
                    let t = if norm == 0.0 { 1.0 } else { t * norm };
                    *o = n - drop * t;
                });
        }
    }
    out
}

/// Blend over the region and write the four full-grid outputs.
#[allow(clippy::too_many_arguments)]
pub fn compose(
    ctx: &Context<'_>,
    params: &SynthParams,
    region: &Region,
    level: &Array3<f32>,
    mask: &Array3<u8>,
    tex: &Array3<f32>,
    weight: &Array3<f32>,
    noise_texture: bool,
) -> Synthesized {
    let target = intensity(ctx, params, region, level, mask, tex, noise_texture);
    let mut out = untouched(ctx);
    let sl = s![
        region.lo[0]..region.hi[0],
        region.lo[1]..region.hi[1],
        region.lo[2]..region.hi[2]
    ];
    let alpha = params.opacity as f32;
    // Every voxel is computed on its own, so any thread count gives the same bytes.
    Zip::from(out.image.data.slice_mut(sl))
        .and(out.tumour.data.slice_mut(sl))
        .and(out.mask.data.slice_mut(sl))
        .and(weight)
        .and(&target)
        .and(mask)
        .par_for_each(|x, t, m, &w, &s, &inside| {
            let w = alpha * w;
            if w != 0.0 {
                *x += w * (s - *x);
            }
            if inside != 0 {
                *m = 1;
                *t = *x;
            }
        });
    out
}
