//! Noise sources: simplex fBm over directions (the tumour surface) and counter-based uniform
//! and normal noise (Hu's texture, the acquisition's noise), all independent of the thread
//! count.

use noise::{Fbm, MultiFractal, NoiseFn, Simplex};
use rayon::prelude::*;

/// Nodes per cube-face edge. The paper's icosphere has 2562 vertices (about 4 degrees apart);
/// 32 cells per face edge give about 2.8 degrees.
const FACE_CELLS: usize = 32;

/// fBm sampled on the six faces of a cube around the unit sphere, looked up bilinearly. Like the
/// paper's mesh, the surface noise is only known at nodes and interpolated between them, but a
/// lookup costs a few multiplies instead of a noise evaluation per voxel.
pub struct DirectionTable {
    /// 6 faces of `(FACE_CELLS + 1)^2` nodes.
    values: Vec<f32>,
    pub min: f32,
    pub max: f32,
}

/// Face index and the two in-face axes for a direction whose largest component is on `axis`.
fn face(axis: usize, positive: bool) -> (usize, usize, usize) {
    let (b, c) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    (axis * 2 + positive as usize, b, c)
}

impl DirectionTable {
    /// fBm of simplex noise at `u + offset` for unit vectors u: `octaves` octaves, amplitude
    /// falling by `persistence` and frequency rising by `lacunarity`, normalised to about [-1, 1].
    pub fn fbm(octaves: u32, persistence: f64, lacunarity: f64, offset: f64) -> DirectionTable {
        let fbm: Fbm<Simplex> = Fbm::new(0)
            .set_octaves(octaves as usize)
            .set_frequency(1.0)
            .set_persistence(persistence)
            .set_lacunarity(lacunarity);
        let m = FACE_CELLS + 1;
        let values: Vec<f32> = (0..6 * m * m)
            .into_par_iter()
            .map(|idx| {
                let (f, rest) = (idx / (m * m), idx % (m * m));
                let (i, j) = (rest / m, rest % m);
                let axis = f / 2;
                let (_, b, c) = face(axis, f % 2 == 1);
                let mut q = [0.0f64; 3];
                q[axis] = if f % 2 == 1 { 1.0 } else { -1.0 };
                q[b] = -1.0 + 2.0 * i as f64 / FACE_CELLS as f64;
                q[c] = -1.0 + 2.0 * j as f64 / FACE_CELLS as f64;
                let norm = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
                let p = q.map(|v| v / norm + offset);
                fbm.get(p) as f32
            })
            .collect();
        let min = values.iter().copied().fold(f32::INFINITY, f32::min);
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        DirectionTable { values, min, max }
    }

    /// The value for direction `q` (any non-zero length).
    #[inline]
    pub fn lookup(&self, q: [f64; 3]) -> f32 {
        let a = q.map(f64::abs);
        let axis = if a[0] >= a[1] && a[0] >= a[2] {
            0
        } else if a[1] >= a[2] {
            1
        } else {
            2
        };
        let (f, b, c) = face(axis, q[axis] >= 0.0);
        let scale = FACE_CELLS as f64 * 0.5 / a[axis];
        let s = ((q[b] * scale) + FACE_CELLS as f64 * 0.5).clamp(0.0, FACE_CELLS as f64);
        let t = ((q[c] * scale) + FACE_CELLS as f64 * 0.5).clamp(0.0, FACE_CELLS as f64);
        let (i, j) = (
            (s as usize).min(FACE_CELLS - 1),
            (t as usize).min(FACE_CELLS - 1),
        );
        let (fs, ft) = ((s - i as f64) as f32, (t - j as f64) as f32);
        let m = FACE_CELLS + 1;
        let at = |i: usize, j: usize| self.values[f * m * m + i * m + j];
        let top = at(i, j) * (1.0 - ft) + at(i, j + 1) * ft;
        let bottom = at(i + 1, j) * (1.0 - ft) + at(i + 1, j + 1) * ft;
        top * (1.0 - fs) + bottom * fs
    }
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One random stream of a seed: numbers that depend only on (seed, stream, voxel index), the
/// same whichever thread computes them and whatever part of the grid is computed. The seed and
/// stream are hashed once here, not at every voxel.
#[derive(Clone, Copy, Debug)]
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64, stream: u64) -> Stream {
        Stream(mix(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)))
    }

    /// A uniform number in [0, 1).
    #[inline]
    pub fn uniform(self, index: u64) -> f32 {
        (mix(self.0 ^ index) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// An approximately standard normal number: the sum of the four bytes of one 32-bit hash,
    /// centred and scaled to unit variance (Irwin-Hall, n = 4; it has the exact mean and
    /// variance, tails cut at about 3.5 sigma, steps of 0.007 sigma). Written here for speed: no
    /// logarithm or cosine per voxel (Box-Muller costs several times more), and 32-bit
    /// multiplies, which vectorise on baseline x86-64 where 64-bit ones must be emulated.
    #[inline]
    pub fn normal(self, index: u64) -> f32 {
        let folded = (index as u32) ^ ((index >> 32) as u32).wrapping_mul(0x9E37_79B9);
        let h = mix32(folded ^ self.0 as u32);
        let sum = (h & 0xff) + ((h >> 8) & 0xff) + ((h >> 16) & 0xff) + (h >> 24);
        // Each byte is (u + 0.5) / 256 with u uniform on 0..256: mean 1/2, variance ~1/12.
        const SCALE: f32 = 1.732_050_8 / 256.0; // sqrt(3) / 2^8
        (sum as f32 + 2.0 - 2.0 * 256.0) * SCALE
    }
}

/// Chris Wellons' `lowbias32`: a well-mixed 32-bit hash of two multiplies.
#[inline]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_matches_nodes_and_is_continuous() {
        let t = DirectionTable::fbm(5, 0.5, 2.0, 17.0);
        assert!(t.min < 0.0 && t.max > 0.0 && t.max <= 1.0 && t.min >= -1.0);
        // Scale does not matter, and the face seam is continuous.
        assert_eq!(t.lookup([0.3, 0.2, 1.0]), t.lookup([0.6, 0.4, 2.0]));
        let a = t.lookup([1.0, 0.999_999, 0.3]);
        let b = t.lookup([0.999_999, 1.0, 0.3]);
        assert!((a - b).abs() < 1e-3, "{a} {b}");
    }

    #[test]
    fn uniform_is_uniform_and_deterministic() {
        let v: Vec<f32> = (0..100_000).map(|i| Stream::new(7, 1).uniform(i)).collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 0.5).abs() < 0.01);
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert_eq!(Stream::new(7, 1).uniform(99), v[99]);
        assert_ne!(Stream::new(8, 1).uniform(99), v[99]);
    }

    #[test]
    fn normal_has_unit_variance() {
        let v: Vec<f64> = (0..200_000)
            .map(|i| Stream::new(3, 2).normal(i) as f64)
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        assert!(v.iter().all(|x| x.abs() < 3.5));
        assert_eq!(Stream::new(3, 2).normal(7) as f64, v[7]);
    }

    #[test]
    fn normals_are_uncorrelated_across_streams_and_neighbours() {
        let n = 200_000u64;
        let (a, b) = (Stream::new(9, 0), Stream::new(9, 1));
        let corr = |x: &dyn Fn(u64) -> f32, y: &dyn Fn(u64) -> f32| {
            (0..n).map(|i| (x(i) * y(i)) as f64).sum::<f64>() / n as f64
        };
        // The real and imaginary parts of one voxel, and two voxels side by side or a row
        // (128 voxels) apart; 0.01 is over four standard errors at this n.
        for c in [
            corr(&|i| a.normal(i), &|i| b.normal(i)),
            corr(&|i| a.normal(i), &|i| a.normal(i + 1)),
            corr(&|i| a.normal(i), &|i| a.normal(i + 128)),
            corr(&|i| a.normal(i), &|i| a.normal(i + (1 << 32))),
        ] {
            assert!(c.abs() < 0.01, "{c}");
        }
    }
}
