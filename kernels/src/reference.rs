//! The naive oracle: plain loops, f64 accumulation, no code shared with the fast paths.
//!
//! Downstream property-test suites may use these functions as ground truth. They are slow on
//! purpose (O(m·n·k), no blocking, no SIMD) and obviously right. Each also has a naive *f32*
//! twin where the tolerance of a fast kernel is stated relative to it: "no worse than about twice
//! the error that a plain f32 loop makes".

use crate::view::MatRef;

/// `A·B` in f64, row-major `m × n`.
pub fn matmul_f64(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
    assert_eq!(
        a.cols(),
        b.rows(),
        "reference matmul: inner dimensions differ"
    );
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| f64::from(a.at(i, p)) * f64::from(b.at(p, j)))
                .sum();
        }
    }
    c
}

/// `A·B` accumulated in f32 in the obvious order, row-major `m × n`: the baseline error that an
/// f32 kernel is allowed to match.
pub fn matmul_f32_naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    assert_eq!(
        a.cols(),
        b.rows(),
        "reference matmul: inner dimensions differ"
    );
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).fold(0.0f32, |s, p| s + a.at(i, p) * b.at(p, j));
        }
    }
    c
}
