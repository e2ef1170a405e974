//! Where tumour centres go: a fraction of the organ's bounding box (the paper's rule, with its
//! hemisphere split on x) or a voxel of the organ mask.

use rand::Rng;

use super::context::Context;
use super::draw::uniform;
use crate::affine::apply;
use crate::error::{Error, Result};
use crate::profile::{Placement, Range};

pub struct Placer<'c, 'a> {
    ctx: &'c Context<'a>,
    /// Linear indices of the organ voxels in logical (C) order, gathered on first use.
    organ_voxels: Option<Vec<u32>>,
}

fn pick_interval<R: Rng>(rng: &mut R, list: &[Range]) -> f64 {
    let i = if list.len() > 1 {
        rng.random_range(0..list.len())
    } else {
        0
    };
    uniform(rng, &list[i])
}

impl<'c, 'a> Placer<'c, 'a> {
    pub fn new(ctx: &'c Context<'a>) -> Self {
        Placer {
            ctx,
            organ_voxels: None,
        }
    }

    /// A centre in RAS mm.
    pub fn centre<R: Rng>(&mut self, rng: &mut R, rule: &Placement) -> Result<[f64; 3]> {
        match rule {
            Placement::BboxFraction { x, y, z } => {
                let (lo, hi) = self.ctx.fg_world;
                let f = [
                    pick_interval(rng, x),
                    pick_interval(rng, y),
                    pick_interval(rng, z),
                ];
                Ok([0, 1, 2].map(|a| lo[a] + f[a] * (hi[a] - lo[a])))
            }
            Placement::InsideMask => {
                if self.ctx.inputs.organ_mask.is_none() {
                    return Err(Error::InvalidInput {
                        what: "organ mask".into(),
                        reason: "this profile places tumours inside an organ mask; pass one (CLI --organ-mask, Python organ_mask=)".into(),
                    });
                }
                let [_, n1, n2] = self.ctx.shape;
                let voxels = self.organ_voxels.get_or_insert_with(|| {
                    let mask = self.ctx.inputs.organ_mask.map(|m| &m.data);
                    mask.into_iter()
                        .flat_map(|m| m.indexed_iter())
                        .filter(|(_, &v)| v != 0)
                        .map(|((i, j, k), _)| ((i * n1 + j) * n2 + k) as u32)
                        .collect::<Vec<_>>()
                });
                let lin = voxels[rng.random_range(0..voxels.len())] as usize;
                let idx = [lin / (n1 * n2), lin / n2 % n1, lin % n2];
                Ok(apply(
                    &self.ctx.inputs.healthy.affine,
                    idx.map(|v| v as f64),
                ))
            }
        }
    }
}
