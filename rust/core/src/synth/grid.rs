//! Boxes of voxels shared by the synthesis steps (affine math: [`crate::affine`]).

use crate::affine::{bounding_box, Affine};

/// A box of voxels `[lo, hi)` on a grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl Region {
    pub fn whole(shape: [usize; 3]) -> Region {
        Region {
            lo: [0; 3],
            hi: shape,
        }
    }

    pub fn shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.hi[a].saturating_sub(self.lo[a]))
    }

    pub fn is_empty(&self) -> bool {
        self.shape().contains(&0)
    }

    pub fn union(&self, other: &Region) -> Region {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        Region {
            lo: [0, 1, 2].map(|a| self.lo[a].min(other.lo[a])),
            hi: [0, 1, 2].map(|a| self.hi[a].max(other.hi[a])),
        }
    }

    /// Grown by `pad` voxels on each side, kept inside a grid of `shape`.
    pub fn padded(&self, pad: [usize; 3], shape: [usize; 3]) -> Region {
        Region {
            lo: [0, 1, 2].map(|a| self.lo[a].saturating_sub(pad[a])),
            hi: [0, 1, 2].map(|a| (self.hi[a] + pad[a]).min(shape[a])),
        }
    }

    /// The voxels of a box given by (possibly out-of-grid) signed bounds, kept inside the grid.
    pub fn clipped(lo: [i64; 3], hi: [i64; 3], shape: [usize; 3]) -> Region {
        Region {
            lo: [0, 1, 2].map(|a| lo[a].clamp(0, shape[a] as i64) as usize),
            hi: [0, 1, 2].map(|a| hi[a].clamp(0, shape[a] as i64) as usize),
        }
    }
}

/// The world (RAS) axis-aligned box around the centres of the voxels `[lo, hi)`.
pub fn world_box(a: &Affine, region: &Region) -> ([f64; 3], [f64; 3]) {
    let lo = region.lo.map(|v| v as f64);
    let hi = region.hi.map(|v| v.saturating_sub(1) as f64);
    bounding_box(a, lo, hi)
}

/// Index in `[0, n)` of position `i` under scipy's "reflect" mode (d c b a | a b c d | d c b a).
pub fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m >= n { period - 1 - m } else { m }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_scipy() {
        let got: Vec<usize> = (-4..7).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, vec![2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]);
        assert_eq!(reflect(-1, 1), 0);
        assert_eq!(reflect(5, 1), 0);
    }

    #[test]
    fn boxes() {
        let r = Region {
            lo: [2, 2, 2],
            hi: [4, 5, 6],
        };
        assert_eq!(r.shape(), [2, 3, 4]);
        assert_eq!(r.padded([3, 0, 1], [5, 5, 6]).lo, [0, 2, 1]);
        assert_eq!(
            Region::clipped([-3, 1, 2], [2, 9, 3], [4, 4, 4]).hi,
            [2, 4, 3]
        );
    }
}
