//! `exp` and `pow` for the per-voxel steps of synthesis, from plain multiplies, adds and bit
//! operations.
//!
//! Written here rather than taken from libm or a SIMD crate, for two reasons:
//! - **The same bits on every CPU.** glibc's `expf` and `powf` pick an FMA variant at run time,
//!   and SIMD crates such as `wide` fuse multiplies when the build enables FMA; either can move
//!   the last bit of a voxel between machines. These functions round every operation as IEEE
//!   single precision does, without fused multiply-adds, so scalar and vector code, any
//!   instruction set and any build flags give the same result.
//! - **They vectorise.** No branch and no call: a loop over a slice becomes SIMD code (4 lanes on
//!   baseline x86-64), where a libm call per voxel does not.
//!
//! The polynomials are Cephes' `expf` and `logf` (S. L. Moshier, public domain): relative error
//! about 2e-7 for `exp` and a few 1e-7 for `pow` at the exponents synthesis draws (0.5 to 2).

/// `e^x`, saturating: 0 below -87.3 (where `e^x` is below the smallest normal float) and
/// 1.65e38 above 88.0. NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to the nearest integer, and its low bits hold that integer.
    const ROUND: f32 = 12_582_912.0;
    let tiny = x < -87.3;
    let x = x.clamp(-87.3, 88.0);
    let rounded = x * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let k = rounded.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    // x - n ln 2 in two parts (Cody and Waite): n * 0.693359375 is exact.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2^k for k in -126..=127 (the clamp keeps it there).
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    if tiny {
        0.0
    } else {
        y * scale
    }
}

/// `ln x` for positive normal `x` (0 and subnormals give garbage; the caller filters them).
#[inline(always)]
fn ln(x: f32) -> f32 {
    const SQRT_2: f32 = std::f32::consts::SQRT_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 127) as f32;
    // The mantissa as a number in [1, 2), then in [sqrt(1/2), sqrt(2)).
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let high = m > SQRT_2;
    m = if high { m * 0.5 } else { m };
    e += if high { 1.0 } else { 0.0 };
    let t = m - 1.0;
    let z = t * t;
    let p = (((((((7.037_683_6e-2 * t - 1.151_461e-1) * t + 1.167_699_9e-1) * t
        - 1.242_014_1e-1)
        * t
        + 1.424_932_3e-1)
        * t
        - 1.666_805_8e-1)
        * t
        + 2.000_071_5e-1)
        * t
        - 2.499_999_4e-1)
        * t
        + 0.333_333_3;
    let y = p * t * z + e * -2.121_944_4e-4 - 0.5 * z;
    t + y + e * 0.693_359_4
}

/// `x^g` for `x >= 0`: 0 for `x` below the smallest normal float (1.2e-38).
#[inline(always)]
pub fn pow(x: f32, g: f32) -> f32 {
    let tiny = x < f32::MIN_POSITIVE;
    let y = exp(g * ln(x));
    if tiny {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b).abs()
    }

    #[test]
    fn exp_is_close_to_the_true_value_everywhere() {
        let mut worst: f64 = 0.0;
        for i in 0..=200_000 {
            let x = -87.3 + 175.3 * i as f64 / 200_000.0;
            worst = worst.max(relative(exp(x as f32), (x as f32 as f64).exp()));
        }
        assert!(worst < 4e-7, "{worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(100.0) > 1e38 && exp(100.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn pow_is_close_to_the_true_value() {
        let mut worst: f64 = 0.0;
        for g in [0.5f32, 0.7, 1.0, 1.3, 1.5, 2.0] {
            for i in 0..=20_000 {
                // From 1e-6 to 1e6, the range of a voxel over its foreground mean.
                let x = 10f64.powf(-6.0 + 12.0 * i as f64 / 20_000.0) as f32;
                worst = worst.max(relative(pow(x, g), (x as f64).powf(g as f64)));
            }
        }
        assert!(worst < 2e-6, "{worst}");
        assert_eq!(pow(0.0, 0.7), 0.0);
        assert_eq!(pow(1.0, 1.5), 1.0);
    }

    #[test]
    fn a_vectorised_loop_gives_the_scalar_bits() {
        // The loop below is what the acquisition does per run of voxels; `black_box` keeps the
        // scalar calls from being vectorised or folded.
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        let mut looped = xs.clone();
        for v in looped.iter_mut() {
            *v = exp(*v) + pow(v.abs(), 1.3);
        }
        for (x, v) in xs.iter().zip(&looped) {
            let x = std::hint::black_box(*x);
            assert_eq!((exp(x) + pow(x.abs(), 1.3)).to_bits(), v.to_bits());
        }
    }
}
