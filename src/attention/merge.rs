//! Combining partial attention results over disjoint key sets.
//!
//! With `lse = ln Σ e^s` over each part: `lse = ln(e^lse₁ + e^lse₂)` and
//! `O = (e^(lse₁−lse) · O₁ + e^(lse₂−lse) · O₂)`, computed around `max(lse₁, lse₂)` so nothing
//! overflows. A part that saw no key has lse = −∞ and weight 0; two such parts give O = 0, lse = −∞.

use crate::error::{Error, Result};

/// Merges `(out_b, lse_b)` into `(out_a, lse_a)`: rows of `dv` floats, one lse per row, from
/// attention over two disjoint sets of keys (a split KV cache, a chunked prefill, a shared prefix).
///
/// ```
/// // One row, dv = 2: part A saw one key with value [1, 0], part B one key with value [0, 1],
/// // both with score 0, so each has lse = 0 and the merged row averages them.
/// let (mut out_a, mut lse_a) = (vec![1.0, 0.0], vec![0.0]);
/// flashcpu::merge(&mut out_a, &mut lse_a, &[0.0, 1.0], &[0.0], 2)?;
/// assert_eq!(out_a, [0.5, 0.5]);
/// assert!((lse_a[0] - 2f32.ln()).abs() < 1e-6);
/// # Ok::<(), flashcpu::Error>(())
/// ```
pub fn merge(out_a: &mut [f32], lse_a: &mut [f32], out_b: &[f32], lse_b: &[f32], dv: usize) -> Result<()> {
    let rows = lse_a.len();
    if lse_b.len() != rows || rows.checked_mul(dv).is_none_or(|n| out_a.len() != n || out_b.len() != n) {
        return Err(Error::ShapeMismatch(format!(
            "merge: lse {} and {}, outputs {} and {} floats, dv {dv}",
            rows,
            lse_b.len(),
            out_a.len(),
            out_b.len()
        )));
    }
    for r in 0..rows {
        let (la, lb) = (lse_a[r], lse_b[r]);
        let m = la.max(lb);
        let row_a = &mut out_a[r * dv..][..dv];
        if m == f32::NEG_INFINITY {
            row_a.fill(0.0);
            continue;
        }
        let (wa, wb) = ((la - m).exp(), (lb - m).exp());
        let total = wa + wb;
        let (fa, fb) = (wa / total, wb / total);
        for (a, &b) in row_a.iter_mut().zip(&out_b[r * dv..][..dv]) {
            // A part with weight 0 contributes nothing, even where its output is not finite.
            *a = if fb == 0.0 {
                *a
            } else if fa == 0.0 {
                b
            } else {
                fa * *a + fb * b
            };
        }
        lse_a[r] = m + total.ln();
    }
    Ok(())
}
