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

use crate::attention::AttentionParams;
use crate::view::View4;
pub use flashcpu_kernels::reference::AttentionOutput;
use flashcpu_kernels::reference::AttentionSpec;

/// The reference's reading of `params` (same defaults as [`crate::attention`]).
fn spec<'a>(q: View4<'_>, p: &AttentionParams<'a>) -> AttentionSpec<'a> {
    let d = q.shape()[3];
    AttentionSpec {
        scale: p
            .scale
            .unwrap_or(if d == 0 { 1.0 } else { 1.0 / (d as f32).sqrt() }),
        causal: p.causal,
        window: p.window.map(|w| (w.left, w.right)),
        key_lengths: p.key_lengths,
        bias: p.bias.map(|b| b.0),
        mask: p.mask.map(|m| m.0),
        alibi_slopes: p.alibi_slopes,
        softcap: p.softcap,
        sinks: p.sinks,
    }
}

/// Attention by its definition in f64: output `[B, H, q_len, dv]` and lse `[B, H, q_len]`, dense.
/// Inputs must satisfy the checks of [`crate::attention`] (the reference does not repeat them).
pub fn attention_f64(
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    params: &AttentionParams<'_>,
) -> AttentionOutput<f64> {
    kr::attention(q.0, k.0, v.0, &spec(q, params))
}

/// Attention by its definition in f32, in the obvious order: the baseline error.
pub fn attention_f32_naive(
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    params: &AttentionParams<'_>,
) -> AttentionOutput<f32> {
    kr::attention(q.0, k.0, v.0, &spec(q, params))
}
