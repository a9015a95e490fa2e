//! The naive oracle that every kernel is tested against: plain loops accumulating in f64, sharing
//! no code with the fast paths. Downstream property-test suites may use it as ground truth.
//!
//! Each function also has a naive f32 twin; flashcpu states its tolerances as "no worse than about
//! twice the naive f32 error against the f64 result, plus a small floor".

use crate::view::MatRef;
use flashcpu_kernels::reference as kr;

/// `A·B` in f64, row-major `m × n`. Panics if the inner dimensions differ.
pub fn matmul_f64(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
    kr::matmul_f64(a.0, b.0)
}

/// `A·B` in f32 in the obvious loop order, row-major `m × n`: the baseline error.
pub fn matmul_f32_naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    kr::matmul_f32_naive(a.0, b.0)
}
