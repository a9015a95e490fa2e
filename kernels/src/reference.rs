//! The naive oracle: plain loops, no blocking, no SIMD, no code shared with the fast paths.
//!
//! Downstream property-test suites may use these functions as ground truth. Each is written once,
//! generic over the float it accumulates in: in f64 it is the oracle; in f32 it is "what a plain
//! f32 loop gets", the baseline that flashcpu states its tolerances against (a kernel may be at
//! most about twice as far from the f64 result as the naive f32 loop, plus a small floor).

use crate::view::{MatRef, View4};
use core::ops::{Add, Div, Mul, Sub};

/// The float arithmetic the reference needs (f32 and f64).
pub trait Real:
    Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// 0.
    const ZERO: Self;
    /// −∞.
    const NEG_INFINITY: Self;
    /// Widens (or keeps) an f32 input.
    fn of(x: f32) -> Self;
    /// e^x.
    fn exp(self) -> Self;
    /// ln x.
    fn ln(self) -> Self;
    /// tanh x.
    fn tanh(self) -> Self;
    /// Whether x is NaN.
    fn is_nan(self) -> bool;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn of(x: f32) -> Self {
                x as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
real!(f32);
real!(f64);

/// `A·B`, row-major `m × n`, accumulated in `R` in the obvious order. Panics if `A.cols ≠ B.rows`.
pub fn matmul<R: Real>(a: MatRef<'_>, b: MatRef<'_>) -> Vec<R> {
    assert_eq!(a.cols(), b.rows(), "reference matmul: inner dimensions differ");
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut c = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            c.push((0..k).fold(R::ZERO, |s, p| s + R::of(a.at(i, p)) * R::of(b.at(p, j))));
        }
    }
    c
}

/// `A·B` in f64, row-major `m × n`.
pub fn matmul_f64(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
    matmul(a, b)
}

/// `A·B` in f32 in the obvious loop order, row-major `m × n`.
pub fn matmul_f32_naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    matmul(a, b)
}

/// Causal alignment: which diagonal a query row's last visible key sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CausalAlign {
    /// Query i sees keys `j ≤ i` (PyTorch `is_causal`).
    TopLeft,
    /// Query i sees keys `j ≤ i + key_len − q_len` (FlashAttention, KV caches).
    BottomRight,
}

/// Everything besides Q, K and V that defines an attention result, written as the definition.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionSpec<'a> {
    /// Multiplies Q·Kᵀ.
    pub scale: f32,
    /// Causal masking, if any.
    pub causal: Option<CausalAlign>,
    /// Sliding window `(left, right)` around the bottom-right diagonal: query i sees keys with
    /// `i + off − left ≤ j ≤ i + off + right`, `off = key_len − q_len`; `None` is unbounded.
    pub window: Option<(Option<usize>, Option<usize>)>,
    /// Valid keys per batch entry (padding beyond); bottom-right alignment uses these lengths.
    pub key_lengths: Option<&'a [usize]>,
    /// Additive bias `[1|B, 1|H, q_len, kv_len]`; −∞ hides a key.
    pub bias: Option<View4<'a>>,
    /// Boolean mask `[1|B, 1|H, q_len, kv_len]`; `false` hides a key.
    pub mask: Option<View4<'a, bool>>,
    /// ALiBi slope per query head: adds `−slope·|i + off − j|`.
    pub alibi_slopes: Option<&'a [f32]>,
    /// Soft-cap c: scores become `c·tanh(s/c)` before ALiBi, bias and masks.
    pub softcap: Option<f32>,
    /// Per-query-head sink logit in the softmax denominator.
    pub sinks: Option<&'a [f32]>,
}

/// Output `[B, H, q_len, dv]` and log-sum-exp `[B, H, q_len]`, both dense row-major.
#[derive(Clone, Debug)]
pub struct AttentionOutput<R> {
    /// `softmax(S)·V` per row; 0 for a row that sees no key.
    pub out: Vec<R>,
    /// `ln Σ e^s` per row (sink included); −∞ for a row that sees no key.
    pub lse: Vec<R>,
}

/// Index `(b, h)` of a broadcastable `[1|B, 1|H, ..]` tensor.
fn broadcast(shape: [usize; 4], b: usize, h: usize) -> (usize, usize) {
    (if shape[0] == 1 { 0 } else { b }, if shape[1] == 1 { 0 } else { h })
}

/// Attention by its definition, accumulated in `R`: Q `[B, H, Lq, d]`, K `[B, Hkv, Lk, d]`,
/// V `[B, Hkv, Lk, dv]`, query head h reading KV head `h / (H / Hkv)`.
pub fn attention<R: Real>(
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    spec: &AttentionSpec<'_>,
) -> AttentionOutput<R> {
    let [batch, heads, lq, d] = q.shape();
    let [_, kv_heads, lk, dv] = [k.shape()[0], k.shape()[1], k.shape()[2], v.shape()[3]];
    let group = heads / kv_heads.max(1);
    let mut out = Vec::with_capacity(batch * heads * lq * dv);
    let mut lse = Vec::with_capacity(batch * heads * lq);
    for b in 0..batch {
        let kl = spec.key_lengths.map_or(lk, |l| l[b]);
        let off = kl as i64 - lq as i64;
        for h in 0..heads {
            let (qm, km, vm) = (q.matrix(b, h), k.matrix(b, h / group), v.matrix(b, h / group));
            for i in 0..lq {
                let ii = i as i64;
                let mut logits: Vec<(usize, R)> = Vec::new();
                for j in 0..kl {
                    let jj = j as i64;
                    let causal_ok = match spec.causal {
                        None => true,
                        Some(CausalAlign::TopLeft) => jj <= ii,
                        Some(CausalAlign::BottomRight) => jj <= ii + off,
                    };
                    let window_ok = spec.window.is_none_or(|(left, right)| {
                        left.is_none_or(|w| jj >= ii + off - w as i64)
                            && right.is_none_or(|w| jj <= ii + off + w as i64)
                    });
                    let mask_ok = spec.mask.is_none_or(|m| {
                        let (mb, mh) = broadcast(m.shape(), b, h);
                        m.matrix(mb, mh).at(i, j)
                    });
                    if !(causal_ok && window_ok && mask_ok) {
                        continue;
                    }
                    let dot = (0..d).fold(R::ZERO, |s, p| s + R::of(qm.at(i, p)) * R::of(km.at(j, p)));
                    let mut s = R::of(spec.scale) * dot;
                    if let Some(c) = spec.softcap {
                        s = R::of(c) * (s / R::of(c)).tanh();
                    }
                    if let Some(slopes) = spec.alibi_slopes {
                        s = s - R::of(slopes[h]) * R::of((ii + off - jj).unsigned_abs() as f32);
                    }
                    if let Some(bias) = spec.bias {
                        let (bb, bh) = broadcast(bias.shape(), b, h);
                        let x = bias.matrix(bb, bh).at(i, j);
                        if x == f32::NEG_INFINITY {
                            continue; // hidden, exactly like a false mask bit
                        }
                        s = s + R::of(x);
                    }
                    logits.push((j, s));
                }
                let sink = spec.sinks.map(|s| R::of(s[h]));
                let m = logits.iter().map(|&(_, s)| s).chain(sink).fold(R::NEG_INFINITY, |m, s| {
                    if s.is_nan() || m.is_nan() {
                        if s.is_nan() { s } else { m }
                    } else if s > m {
                        s
                    } else {
                        m
                    }
                });
                if m == R::NEG_INFINITY {
                    out.extend((0..dv).map(|_| R::ZERO));
                    lse.push(R::NEG_INFINITY);
                    continue;
                }
                let weights: Vec<(usize, R)> = logits.iter().map(|&(j, s)| (j, (s - m).exp())).collect();
                let l = weights.iter().fold(R::ZERO, |acc, &(_, p)| acc + p)
                    + sink.map_or(R::ZERO, |s| (s - m).exp());
                for c in 0..dv {
                    let acc = weights.iter().fold(R::ZERO, |acc, &(j, p)| acc + p * R::of(vm.at(j, c)));
                    out.push(acc / l);
                }
                lse.push(m + l.ln());
            }
        }
    }
    AttentionOutput { out, lse }
}
