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

/// The reference's reading of `params` (same defaults as [`crate::attention()`]).
fn spec<'a>(q: View4<'_>, p: &AttentionParams<'a>) -> AttentionSpec<'a> {
    let d = q.shape()[3];
    AttentionSpec {
        scale: p.scale.unwrap_or(if d == 0 { 1.0 } else { 1.0 / (d as f32).sqrt() }),
        causal: p.causal.map(|c| match c {
            crate::CausalAlign::TopLeft => kr::CausalAlign::TopLeft,
            crate::CausalAlign::BottomRight => kr::CausalAlign::BottomRight,
        }),
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
/// Inputs must satisfy the checks of [`crate::attention()`] (the reference does not repeat them).
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

/// RoPE by its formula in f64: pair `(a, b)` of head vector `x` rotated by `pos·base^(−2i/d)`.
pub fn rope_f64(x: &mut [f64], pos: usize, rope: &crate::rope::Rope) {
    let d = x.len();
    for i in 0..d / 2 {
        let theta = pos as f64 * f64::from(rope.base).powf(-2.0 * i as f64 / d as f64);
        let (a, b) = match rope.style {
            crate::rope::RopeStyle::HalfSplit => (i, i + d / 2),
            crate::rope::RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        };
        let (xa, xb) = (x[a], x[b]);
        x[a] = xa * theta.cos() - xb * theta.sin();
        x[b] = xa * theta.sin() + xb * theta.cos();
    }
}

/// A multi-head attention layer by its definition, in f64: outputs of the token `rows` of every
/// sequence (`[batch, rows.len(), d_model]`) for self-attention over `x` (`[batch, seq, d_model]`),
/// causal (query t sees keys ≤ t) or not, with RoPE at positions `0..seq` if configured.
pub fn mha_f64(
    cfg: &crate::mha::MhaConfig,
    w: &crate::mha::MhaWeights,
    x: &[f32],
    (batch, seq): (usize, usize),
    causal: bool,
    rows: &[usize],
) -> Vec<f64> {
    let (dm, hd, vd) = (cfg.d_model, cfg.head_dim, cfg.value_dim);
    // y = x_t · W[:, col] + b[col] for one token and column.
    let proj = |xt: &[f32], wm: &[f32], b: &Option<Vec<f32>>, width: usize, col: usize| -> f64 {
        let dot: f64 = (0..dm).map(|i| f64::from(xt[i]) * f64::from(wm[i * width + col])).sum();
        dot + b.as_ref().map_or(0.0, |b| f64::from(b[col]))
    };
    let project = |xt: &[f32], wm: &[f32], b: &Option<Vec<f32>>, width: usize| -> Vec<f64> {
        (0..width).map(|col| proj(xt, wm, b, width, col)).collect()
    };
    let rotate_heads = |v: &mut [f64], dim: usize, pos: usize| {
        if let Some(rope) = &cfg.rope {
            v.chunks_exact_mut(dim).for_each(|h| rope_f64(h, pos, rope));
        }
    };
    let group = cfg.heads / cfg.kv_heads;
    let mut out = Vec::with_capacity(batch * rows.len() * dm);
    for b in 0..batch {
        let token = |t: usize| &x[(b * seq + t) * dm..][..dm];
        let keys: Vec<Vec<f64>> = (0..seq)
            .map(|t| {
                let mut k = project(token(t), &w.w_k, &w.b_k, cfg.kv_heads * hd);
                rotate_heads(&mut k, hd, t);
                k
            })
            .collect();
        let values: Vec<Vec<f64>> =
            (0..seq).map(|t| project(token(t), &w.w_v, &w.b_v, cfg.kv_heads * vd)).collect();
        for &t in rows {
            let mut q = project(token(t), &w.w_q, &w.b_q, cfg.heads * hd);
            rotate_heads(&mut q, hd, t);
            let mut concat = vec![0.0f64; cfg.heads * vd];
            for h in 0..cfg.heads {
                let kvh = h / group;
                let visible = if causal { t + 1 } else { seq };
                let scores: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..hd).map(|i| q[h * hd + i] * keys[j][kvh * hd + i]).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let l: f64 = weights.iter().sum();
                for c in 0..vd {
                    concat[h * vd + c] =
                        (0..visible).map(|j| weights[j] * values[j][kvh * vd + c]).sum::<f64>() / l;
                }
            }
            for col in 0..dm {
                let y: f64 = (0..cfg.heads * vd).map(|i| concat[i] * f64::from(w.w_o[i * dm + col])).sum();
                out.push(y + w.b_o.as_ref().map_or(0.0, |b| f64::from(b[col])));
            }
        }
    }
    out
}
