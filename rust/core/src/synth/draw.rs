//! The random draws that sampling a case's parameters is made of, on the case's seeded
//! generator; used by [`super::sample`], [`super::placement`] and [`super::acquisition`].

use rand::Rng;

use crate::profile::Range;

/// A draw from `[min, max]`; `min` when the range is a single value.
pub fn uniform<R: Rng>(rng: &mut R, r: &Range) -> f64 {
    if r.min < r.max {
        rng.random_range(r.min..=r.max)
    } else {
        r.min
    }
}

pub fn uniform_u32<R: Rng>(rng: &mut R, r: &Range<u32>) -> u32 {
    if r.min < r.max {
        rng.random_range(r.min..=r.max)
    } else {
        r.min
    }
}

/// An index drawn with the given (non-negative, not all zero) weights.
pub fn weighted<R: Rng>(rng: &mut R, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// A standard normal draw (Box-Muller).
pub fn normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
