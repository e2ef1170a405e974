//! The bias field of an acquisition: a smooth multiplicative field `exp(f)`, with `f` a sum of
//! products of cosines (a DCT basis up to `order` along each axis, the constant term left out).

use rayon::prelude::*;

use crate::synth::params::BiasFieldParams;

/// The number of bias-field coefficients for `order`: every `(l, m, n)` up to it but the
/// constant term.
pub(super) fn bias_terms(order: u32) -> usize {
    (order as usize + 1).pow(3) - 1
}

/// `cos(pi l (i + 0.5) / n)` for l in 0..=order, i in 0..n, as `table[l * n + i]`.
pub(super) fn cosines(order: u32, n: usize) -> Vec<f32> {
    (0..=order as usize)
        .flat_map(|l| {
            (0..n).map(move |i| {
                (std::f64::consts::PI * l as f64 * (i as f64 + 0.5) / n as f64).cos() as f32
            })
        })
        .collect()
}

/// The largest |f| of the bias field's exponent over a 17^3 lattice of voxel centres spread
/// over the grid (the field is smooth, so this is its maximum to within a few per cent).
pub(super) fn bias_peak(order: u32, coefficients: &[f64], shape: [usize; 3]) -> f64 {
    let o = order as usize + 1;
    // The basis along each axis at its lattice points, `[point][l]`, so that each lattice point
    // costs multiply-adds only (the same values and sums as evaluating the cosines there).
    let basis_at = |n: usize| -> Vec<Vec<f64>> {
        let m = n.min(17);
        (0..m)
            .map(|q| {
                let x = if m > 1 {
                    q as f64 * (n - 1) as f64 / (m - 1) as f64
                } else {
                    0.0
                };
                (0..o)
                    .map(|l| (std::f64::consts::PI * l as f64 * (x + 0.5) / n as f64).cos())
                    .collect()
            })
            .collect()
    };
    let (b0, b1, b2) = (basis_at(shape[0]), basis_at(shape[1]), basis_at(shape[2]));
    let mut peak: f64 = 0.0;
    for x in &b0 {
        for y in &b1 {
            for z in &b2 {
                // Coefficient `(l * o + m) * o + n - 1` for every (l, m, n) but (0, 0, 0).
                let mut coefficient = coefficients.iter();
                let mut f = 0.0;
                for (l, xl) in x.iter().enumerate() {
                    for (m, ym) in y.iter().enumerate() {
                        for (n, zn) in z.iter().enumerate() {
                            if l + m + n > 0 {
                                let c = coefficient.next().expect("one coefficient per term");
                                f += c * xl * ym * zn;
                            }
                        }
                    }
                }
                peak = peak.max(f.abs());
            }
        }
    }
    peak
}

/// What every voxel needs of the field: its exponent's partial sums over the first two axes,
/// `[(i * n1 + j) * o + n]`, and the cosines along the third, `[n * n2 + k]`, with `o` the
/// number of cosines per axis.
pub(super) fn partial_sums(b: &BiasFieldParams, shape: [usize; 3]) -> (usize, Vec<f32>, Vec<f32>) {
    let o = b.order as usize + 1;
    let (c0, c1, c2) = (
        cosines(b.order, shape[0]),
        cosines(b.order, shape[1]),
        cosines(b.order, shape[2]),
    );
    let mut partial = vec![0.0f32; shape[0] * shape[1] * o];
    partial
        .par_chunks_mut(shape[1] * o)
        .enumerate()
        .for_each(|(i, row)| {
            for j in 0..shape[1] {
                for n in 0..o {
                    let mut acc = 0.0f64;
                    for l in 0..o {
                        for m in 0..o {
                            let idx = (l * o + m) * o + n;
                            if idx > 0 {
                                acc += b.coefficients[idx - 1]
                                    * c0[l * shape[0] + i] as f64
                                    * c1[m * shape[1] + j] as f64;
                            }
                        }
                    }
                    row[j * o + n] = acc as f32;
                }
            }
        });
    (o, partial, c2)
}
