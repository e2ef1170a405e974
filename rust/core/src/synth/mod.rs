//! Tumour synthesis: blend synthetic tumours into a healthy scan.
//!
//! "Sample, then synthesise": [`sample`] draws a case's [`SynthParams`] from a profile, a seed
//! and the inputs; [`synthesize`] is a pure function of those parameters and the inputs. The
//! parameters are saved as JSON, so any case can be regenerated. Every loop is rayon-parallel
//! over independent voxels, and sums are combined in a fixed order, so the outputs are
//! byte-identical for any thread count.
//!
//! Steps (method.md section 3; Hu et al. for `liver-ct`):
//! 1. shapes ([`shape`]): star-shaped fBm around a rotated ellipsoid, or an elastically
//!    deformed ellipsoid, placed by [`placement`] and clipped to the organ;
//! 2. texture ([`texture`]): another scan deformed by a B-spline field ([`elastic`]) and
//!    blurred ([`blur`]), or smoothed noise ([`noise`]);
//! 3. intensity rule and blend ([`blend`]);
//! 4. the acquisition, when the profile randomises it ([`acquisition`]): thick slices, bias,
//!    contrast, noise and partial coverage, on the blended image and the healthy layer alike.

pub mod acquisition;
pub mod blend;
pub mod blur;
pub mod context;
pub mod draw;
pub mod elastic;
pub mod grid;
pub mod math;
pub mod noise;
pub mod params;
pub mod placement;
pub mod sample;
pub mod shape;
pub mod texture;

use ndarray::{s, Array3, Zip};

pub use blend::Synthesized;
pub use context::Inputs;
pub use params::SynthParams;

use crate::affine::affines_close;
use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::volume::bounds;
use context::Context;
use grid::Region;
use params::TextureParams;

/// The inputs checked and summarised once, for drawing and making many cases from them.
pub struct Synthesizer<'a> {
    ctx: Context<'a>,
}

impl<'a> Synthesizer<'a> {
    pub fn new(inputs: Inputs<'a>) -> Result<Synthesizer<'a>> {
        Ok(Synthesizer {
            ctx: Context::new(inputs)?,
        })
    }

    pub fn sample(&self, profile: &Profile, seed: u64) -> Result<SynthParams> {
        sample::sample_with(profile, &self.ctx, seed)
    }

    pub fn synthesize(&self, params: &SynthParams) -> Result<Synthesized> {
        synthesize_with(params, &self.ctx)
    }

    pub fn generate(&self, profile: &Profile, seed: u64) -> Result<(SynthParams, Synthesized)> {
        let params = self.sample(profile, seed)?;
        let out = self.synthesize(&params)?;
        Ok((params, out))
    }
}

/// Draw the parameters of one case.
pub fn sample(profile: &Profile, inputs: Inputs<'_>, seed: u64) -> Result<SynthParams> {
    let ctx = Context::new(inputs)?;
    sample::sample_with(profile, &ctx, seed)
}

/// Make the case that `params` describes. Pure: the same parameters and inputs give the same
/// bytes.
pub fn synthesize(params: &SynthParams, inputs: Inputs<'_>) -> Result<Synthesized> {
    let ctx = Context::new(inputs)?;
    synthesize_with(params, &ctx)
}

/// [`sample`] then [`synthesize`], checking the inputs once.
pub fn generate(
    profile: &Profile,
    inputs: Inputs<'_>,
    seed: u64,
) -> Result<(SynthParams, Synthesized)> {
    Synthesizer::new(inputs)?.generate(profile, seed)
}

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: "synthesis parameters".into(),
        reason: reason.into(),
    }
}

fn synthesize_with(params: &SynthParams, ctx: &Context<'_>) -> Result<Synthesized> {
    let (out, changed) = blend_with(params, ctx)?;
    match &params.acquisition {
        Some(a) => acquisition::apply(ctx, a, changed.as_ref(), out),
        None => Ok(out),
    }
}

/// The blended case, and the box outside which its image is the healthy scan (`None`: no
/// tumour voxel at all).
fn blend_with(params: &SynthParams, ctx: &Context<'_>) -> Result<(Synthesized, Option<Region>)> {
    if params.format != params::FORMAT {
        return Err(bad(format!(
            "format {} is not the supported {}",
            params.format,
            params::FORMAT
        )));
    }
    let healthy = ctx.inputs.healthy;
    if params.grid.shape != ctx.shape || !affines_close(&params.grid.affine, &healthy.affine, 1e-4)
    {
        return Err(Error::Mismatch {
            what: "healthy scan".into(),
            reason: format!(
                "the parameters were drawn for a {:?} grid, the scan is {:?} (or its affine differs)",
                params.grid.shape, ctx.shape
            ),
        });
    }
    if !(0.0..=1.0).contains(&params.opacity) {
        return Err(bad("opacity must be in [0, 1]"));
    }
    if !(params.edge_blur_sigma_mm.is_finite() && params.edge_blur_sigma_mm >= 0.0) {
        return Err(bad("edge_blur_sigma_mm must be finite and >= 0"));
    }
    let shapes = params
        .tumours
        .iter()
        .enumerate()
        .map(|(i, t)| shape::TumourShape::new(i, t, ctx))
        .collect::<Result<Vec<_>>>()?;
    let union = shapes.iter().fold(
        Region {
            lo: [0; 3],
            hi: [0; 3],
        },
        |acc, s| acc.union(&s.bbox),
    );
    if union.is_empty() {
        return Ok((blend::untouched(ctx), None));
    }
    // Pad the box so that blurs see the same neighbourhood as on the whole grid.
    let sp = ctx.spacing;
    let mut sigmas_mm = vec![params.edge_blur_sigma_mm; 3];
    if let TextureParams::Scan { blur_sigma_mm, .. } = &params.texture {
        sigmas_mm.extend(blur_sigma_mm);
    }
    let pad = [0, 1, 2].map(|a| {
        sigmas_mm
            .iter()
            .map(|s| blur::radius(s / sp[a]))
            .max()
            .unwrap_or(0)
    });
    // Rasterise over the shapes' boxes, then work only around the voxels actually inside.
    let exact = matches!(
        params.intensity,
        params::IntensityParams::RatioToHealthyMean { core: Some(_), .. }
    );
    let mut level = Array3::from_elem(union.shape(), f32::INFINITY);
    for s in &shapes {
        s.rasterize(&mut level, &union, exact);
    }
    let organ = ctx.organ_region(&union, params.clip_to_organ);
    let mut mask = Array3::<u8>::zeros(union.shape());
    Zip::from(&mut mask)
        .and(&level)
        .and(&organ)
        .par_for_each(|m, &l, &o| *m = u8::from(l <= 1.0 && o != 0));
    let Some((lo, hi)) = bounds(&mask, |&m| m != 0) else {
        return Ok((blend::untouched(ctx), None));
    };
    let tight = Region {
        lo: [0, 1, 2].map(|a| lo[a] + union.lo[a]),
        hi: [0, 1, 2].map(|a| hi[a] + union.lo[a]),
    };
    let region = tight.padded(pad, ctx.shape);
    // Level and mask over the working region (outside the shapes' boxes: no tumour).
    let mut sub_level = Array3::from_elem(region.shape(), f32::INFINITY);
    let mut sub_mask = Array3::<u8>::zeros(region.shape());
    let both = Region {
        lo: [0, 1, 2].map(|a| region.lo[a].max(union.lo[a])),
        hi: [0, 1, 2].map(|a| region.hi[a].min(union.hi[a])),
    };
    let in_region = s![
        both.lo[0] - region.lo[0]..both.hi[0] - region.lo[0],
        both.lo[1] - region.lo[1]..both.hi[1] - region.lo[1],
        both.lo[2] - region.lo[2]..both.hi[2] - region.lo[2]
    ];
    let in_union = s![
        both.lo[0] - union.lo[0]..both.hi[0] - union.lo[0],
        both.lo[1] - union.lo[1]..both.hi[1] - union.lo[1],
        both.lo[2] - union.lo[2]..both.hi[2] - union.lo[2]
    ];
    sub_level
        .slice_mut(in_region)
        .assign(&level.slice(in_union));
    sub_mask.slice_mut(in_region).assign(&mask.slice(in_union));
    let (level, mask) = (sub_level, sub_mask);
    let organ = ctx.organ_region(&region, params.clip_to_organ);

    let (tex, noise_texture) = match &params.texture {
        TextureParams::Scan {
            source,
            control_points,
            displacements_mm,
            blur_sigma_mm,
        } => (
            texture::scan(
                ctx,
                &region,
                *source,
                *control_points,
                displacements_mm,
                *blur_sigma_mm,
            )?,
            false,
        ),
        TextureParams::Noise {
            seed,
            sigma_a_mm,
            sigma_b_mm,
            scale,
            base,
            mean_level,
            threshold,
        } => {
            let spec = texture::NoiseSpec {
                seed: *seed,
                sigma_a_mm: *sigma_a_mm,
                sigma_b_mm: *sigma_b_mm,
                scale: *scale,
                base: *base,
                mean_level: *mean_level,
                threshold: *threshold,
            };
            if [*sigma_a_mm, *sigma_b_mm]
                .iter()
                .any(|s| !(s.is_finite() && *s >= 0.0))
            {
                return Err(bad("noise sigmas must be finite and >= 0"));
            }
            (texture::noise(ctx, &region, &spec), true)
        }
    };

    let mut weight = mask.mapv(f32::from);
    if params.edge_blur_sigma_mm > 0.0 {
        blur::gaussian(
            &mut weight,
            texture::sigma_voxels([params.edge_blur_sigma_mm; 3], sp),
        );
        Zip::from(&mut weight).and(&organ).par_for_each(|w, &o| {
            if o == 0 {
                *w = 0.0;
            }
        });
    }
    let out = blend::compose(
        ctx,
        params,
        &region,
        &level,
        &mask,
        &tex,
        &weight,
        noise_texture,
    );
    Ok((out, Some(region)))
}
