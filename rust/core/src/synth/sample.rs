//! Drawing a case's parameters from a profile and a seed ("sample, then synthesise").

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::context::Context;
use super::draw::{normal, uniform, uniform_u32, weighted};
use super::params::*;
use super::placement::Placer;
use crate::error::Result;
use crate::profile::{Aspect, Intensity, Profile, Shape, Size, Texture};

pub fn sample_with(profile: &Profile, ctx: &Context<'_>, seed: u64) -> Result<SynthParams> {
    let syn = &profile.synthesis;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut placer = Placer::new(ctx);

    let class_weights: Vec<f64> = syn.size.iter().map(|c| c.weight).collect();
    let class = &syn.size[weighted(&mut rng, &class_weights)];
    let mut tumours = Vec::new();
    for comp in &class.components {
        for _ in 0..uniform_u32(&mut rng, &comp.count) {
            let base_radius_mm = match &comp.size {
                Size::VolumeMm3 { volume_mm3 } => {
                    let v = uniform(&mut rng, volume_mm3);
                    (3.0 * v / (4.0 * std::f64::consts::PI)).cbrt()
                }
                Size::RadiusMm { radius_mm } => uniform(&mut rng, radius_mm),
            };
            let r = base_radius_mm;
            let radii_mm = match &syn.aspect {
                Aspect::Paper { q } => {
                    let q = uniform(&mut rng, q);
                    [r * q, r / q, r]
                }
                Aspect::PerAxis { scale } => [0; 3].map(|_| r * uniform(&mut rng, scale)),
            };
            let rotation_deg = [0; 3].map(|_| uniform(&mut rng, &syn.rotation_deg));
            let centre_mm = placer.centre(&mut rng, &syn.placement)?;
            let shape = match &syn.shape {
                Shape::StarFbm {
                    octaves,
                    amplitude,
                    offset,
                    persistence,
                    lacunarity,
                } => ShapeParams::StarFbm {
                    octaves: uniform_u32(&mut rng, octaves),
                    amplitude: uniform(&mut rng, amplitude),
                    offset: uniform(&mut rng, offset),
                    persistence: *persistence,
                    lacunarity: *lacunarity,
                },
                Shape::ElasticEllipsoid { control_points } => {
                    let sigma = comp
                        .shape_elastic_sigma_mm
                        .as_ref()
                        .map_or(0.0, |s| uniform(&mut rng, s));
                    let n = *control_points as usize;
                    let displacements_mm = (0..n * n * n)
                        .map(|_| [0; 3].map(|_| sigma * normal(&mut rng)))
                        .collect();
                    ShapeParams::ElasticEllipsoid {
                        control_points: *control_points,
                        displacements_mm,
                    }
                }
            };
            tumours.push(TumourParams {
                centre_mm,
                base_radius_mm,
                radii_mm,
                rotation_deg,
                shape,
            });
        }
    }

    let texture = match &syn.texture {
        Texture::Scan {
            elastic,
            blur_sigma_mm,
        } => {
            let n_tex = ctx.inputs.textures.len();
            let source = (n_tex > 0).then(|| rng.random_range(0..n_tex));
            let max = uniform(&mut rng, &elastic.max_displacement_mm);
            let n = elastic.control_points as usize;
            let lb = elastic.locked_borders as usize;
            let free = |i: usize| i >= lb && i < n - lb;
            let mut displacements_mm = Vec::with_capacity(n * n * n);
            for a in 0..n {
                for b in 0..n {
                    for c in 0..n {
                        displacements_mm.push(if free(a) && free(b) && free(c) && max > 0.0 {
                            [0; 3].map(|_| rng.random_range(-max..=max))
                        } else {
                            [0.0; 3]
                        });
                    }
                }
            }
            TextureParams::Scan {
                source,
                control_points: elastic.control_points,
                displacements_mm,
                blur_sigma_mm: [0; 3].map(|_| uniform(&mut rng, blur_sigma_mm)),
            }
        }
        Texture::Noise {
            sigma_a_mm,
            sigma_b_mm,
            scale,
            base,
            mean_level,
            threshold,
        } => TextureParams::Noise {
            seed: rng.random(),
            sigma_a_mm: uniform(&mut rng, sigma_a_mm),
            sigma_b_mm: uniform(&mut rng, sigma_b_mm),
            scale: uniform(&mut rng, scale),
            base: uniform(&mut rng, base),
            mean_level: uniform(&mut rng, mean_level),
            threshold: *threshold,
        },
    };

    let intensity = match &syn.intensity {
        Intensity::RatioToHealthyMean { modes } => {
            let weights: Vec<f64> = modes.iter().map(|m| m.weight).collect();
            let mode = &modes[weighted(&mut rng, &weights)];
            IntensityParams::RatioToHealthyMean {
                ratio: uniform(&mut rng, &mode.ratio),
                core: mode.core.as_ref().map(|c| CoreParams {
                    fraction: uniform(&mut rng, &c.fraction),
                    ratio: uniform(&mut rng, &c.ratio),
                }),
            }
        }
        Intensity::HuDrop { drop_hu } => IntensityParams::HuDrop {
            drop_hu: uniform(&mut rng, drop_hu),
        },
    };

    // The acquisition draws from its own stream of the same seed, so that turning it on or off
    // leaves every tumour parameter above as it was.
    let acquisition = syn.acquisition.as_ref().map(|a| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        super::acquisition::sample(a, ctx, &tumours, &mut rng)
    });
    Ok(SynthParams {
        format: FORMAT,
        profile: profile.name.clone(),
        seed,
        grid: Grid {
            shape: ctx.shape,
            affine: ctx.inputs.healthy.affine,
        },
        size_class: class.name.clone(),
        tumours,
        clip_to_organ: syn.clip_to_organ,
        texture,
        intensity,
        opacity: uniform(&mut rng, &syn.opacity),
        edge_blur_sigma_mm: uniform(&mut rng, &syn.edge_blur_sigma_mm),
        acquisition,
    })
}
