//! [`MultiHeadAttention`] against its definition in f64 ([`mha_f64`]) on every ISA the host has and
//! both kinds of threading: self-attention with and without the causal mask, RoPE in both styles,
//! biases (b_O included, and a part of the fused QKV bias missing), multi-head, grouped and
//! multi-query heads, value_dim ≠ head_dim, an odd head_dim, one-token sequences, batch > 1.
//! Then the identities between the entry points: self-attention ≡ cross-attention over the same
//! tokens; decoding through a [`KvCache`] token by token, in chunks, and after a rollback that
//! leaves the sequences at different lengths ≡ one causal forward. Then RoPE against its formula,
//! and every error, with the promise of `Error` that an `Err` leaves the output (and the cache)
//! as it was; calls with no tokens must return (`Ok` or `Err`) rather than panic.
//!
//! ## Tolerance
//! Beside the f64 reference, [`mha_f32_naive`] computes the same definition in f32
//! in the obvious order, and per output element (b, t, col)
//! `|layer − exact| ≤ 2·|naive − exact| + FLOOR·mag`, with
//! `mag = Σᵢ max|V_h(i)|·|W_O[i, col]| + |b_O[col]|` (i over the `heads·value_dim` concatenated
//! head outputs, `h(i)` the K/V head that i reads, the max over that head's values of the
//! sequence). Why this scale: head output i is a convex combination of the values of `h(i)`, so
//! `|cᵢ| ≤ max|V_h(i)|`, and an error of ρ·max|V_h(i)| in every cᵢ moves the output by at most ρ·mag.
//! ρ collects the f32 errors before the output projection, each a few tens of ε here (d_model ≤ 96,
//! head_dim ≤ 32, logits of order 1): the V projection (a sum of d_model products, error about
//! √d_model·ε·Σ|x·w|, with Σ|x·w| a few max|V|), the softmax weights (a few ulps of `exp`, the
//! online rescales `e^(m−m')`, `1/l`) and the logit errors δ from the Q and K projections and
//! RoPE (a weight `e^(s+δ) ≈ e^s·(1 + δ)`, so 2δ on the output); the output projection adds its
//! own sum of `heads·value_dim ≤ 256` products, √256·ε·mag-ish. The kernel sums in another order
//! than the naive loops (blocked FMA matmuls, an online softmax), so per element its error is not
//! bounded by the naive one; FLOOR = 1e-5 (≈ 84 ε) takes up that difference. (Measured on these
//! shapes, layer and naive errors both stay below 0.5 ε·mag: mag is a pessimistic scale.) Real
//! bugs move some element by far more: applied to the f64 reference, dropping b_Q, b_K (with
//! RoPE; without it b_K only shifts all of a query's logits alike, which softmax ignores) or b_O,
//! the other RoPE style, no RoPE, or no causal mask each move some output element by at least
//! 1.4e-3·mag, ≥ 140 × the floor.
//!
//! The identities between entry points compare two f32 computations of the same definition; their
//! tolerances are stated at each test.

use super::{MhaConfig, MhaWeights, MultiHeadAttention};
use crate::reference::{mha_f64, rope_f64};
use crate::tests::Rng;
use crate::{
    AttentionParams, CausalAlign, Error, IsaKind, KvCache, KvCacheConfig, KvDtype, Parallelism, Rope,
    RopeStyle, available_isas,
};

const EPS: f64 = f32::EPSILON as f64;
/// Relative floor of the reference comparison (see the module documentation).
const FLOOR: f64 = 1e-5;
/// Output gaps hold this; an `Err` must leave it in place.
const SENTINEL: f32 = 1234.5;

/// A layer's dimensions and the tokens it runs on.
#[derive(Clone, Copy, Debug)]
struct Shape {
    d_model: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    value_dim: usize,
    batch: usize,
    seq: usize,
}

impl Shape {
    fn config(&self, rope: Option<Rope>) -> MhaConfig {
        MhaConfig {
            d_model: self.d_model,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            value_dim: self.value_dim,
            rope,
        }
    }
}

const fn shape(
    (d_model, heads, kv_heads, head_dim, value_dim): (usize, usize, usize, usize, usize),
    batch: usize,
    seq: usize,
) -> Shape {
    Shape { d_model, heads, kv_heads, head_dim, value_dim, batch, seq }
}

/// Multi-head, grouped-query (value_dim ≠ head_dim), multi-query, a wider model, an odd head_dim
/// (no RoPE then) with value_dim < head_dim, and one-token sequences.
const SHAPES: [Shape; 6] = [
    shape((32, 4, 4, 8, 8), 1, 7),
    shape((64, 8, 2, 16, 24), 2, 19),
    shape((48, 6, 1, 12, 12), 1, 33),
    shape((96, 8, 4, 32, 16), 1, 40),
    shape((40, 4, 2, 9, 5), 3, 11),
    shape((32, 2, 1, 16, 32), 2, 1),
];

/// No RoPE, and both styles (with a long-context base for the interleaved one).
const ROPES: [Option<Rope>; 3] = [
    None,
    Some(Rope { style: RopeStyle::HalfSplit, base: 10_000.0 }),
    Some(Rope { style: RopeStyle::Interleaved, base: 500_000.0 }),
];

/// Which of b_Q, b_K, b_V, b_O are present: none, all, and only b_K and b_O (so that the fused
/// QKV bias has zero parts).
const BIASES: [[bool; 4]; 3] = [[false; 4], [true; 4], [false, true, false, true]];

/// `MhaWeights::random` plus the chosen biases, uniform in `[−0.5, 0.5)`.
fn weights(cfg: &MhaConfig, biases: [bool; 4], seed: u64) -> MhaWeights {
    let mut w = MhaWeights::random(cfg, seed).expect("a valid configuration");
    let mut rng = Rng::new(seed ^ 0xB1A5);
    let widths = [cfg.q_width(), cfg.k_width(), cfg.kv_heads * cfg.value_dim, cfg.d_model];
    let mut bias = |i: usize| biases[i].then(|| rng.vec(widths[i], 0.5));
    (w.b_q, w.b_k, w.b_v, w.b_o) = (bias(0), bias(1), bias(2), bias(3));
    w
}

/// A layer whose calls all run on one ISA and kind of threading (set in each call's params).
struct Layer {
    inner: MultiHeadAttention,
    isa: IsaKind,
    parallelism: Parallelism,
}

impl Layer {
    fn params<'a>(&self, p: &AttentionParams<'a>) -> AttentionParams<'a> {
        AttentionParams { isa: Some(self.isa), parallelism: self.parallelism, ..*p }
    }

    fn forward(
        &mut self,
        x: &[f32],
        batch: usize,
        seq: usize,
        out: &mut [f32],
        p: &AttentionParams<'_>,
    ) -> crate::Result<()> {
        let p = self.params(p);
        self.inner.forward(x, batch, seq, out, &p)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_cross(
        &mut self,
        x_q: &[f32],
        x_kv: &[f32],
        batch: usize,
        q_seq: usize,
        kv_seq: usize,
        out: &mut [f32],
        p: &AttentionParams<'_>,
    ) -> crate::Result<()> {
        let p = self.params(p);
        self.inner.forward_cross(x_q, x_kv, batch, q_seq, kv_seq, out, &p)
    }

    fn step(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        cache: &mut KvCache,
        out: &mut [f32],
        p: &AttentionParams<'_>,
    ) -> crate::Result<()> {
        let p = self.params(p);
        self.inner.step(x, batch, n, cache, out, &p)
    }
}

fn layer(cfg: MhaConfig, w: &MhaWeights, isa: IsaKind, parallelism: Parallelism) -> Layer {
    Layer { inner: MultiHeadAttention::new(cfg, w.clone()).expect("valid layer"), isa, parallelism }
}

fn causal_params(causal: Option<CausalAlign>) -> AttentionParams<'static> {
    AttentionParams { causal, ..Default::default() }
}

/// RoPE in f32 the obvious way: angles in f64 rounded once (as any table holds them), the
/// rotation in f32.
fn rope_f32(x: &mut [f32], pos: usize, rope: &Rope) {
    let d = x.len();
    for i in 0..d / 2 {
        let theta = pos as f64 * f64::from(rope.base).powf(-2.0 * i as f64 / d as f64);
        let (s, c) = (theta.sin() as f32, theta.cos() as f32);
        let (a, b) = match rope.style {
            RopeStyle::HalfSplit => (i, i + d / 2),
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        };
        let (xa, xb) = (x[a], x[b]);
        x[a] = xa * c - xb * s;
        x[b] = xa * s + xb * c;
    }
}

/// The definition of [`mha_f64`] accumulated in f32 in the obvious order, over every row: the
/// baseline error. Beside each output element, its scale `mag` (module documentation).
fn mha_f32_naive(
    cfg: &MhaConfig,
    w: &MhaWeights,
    x: &[f32],
    (batch, seq): (usize, usize),
    causal: bool,
) -> (Vec<f32>, Vec<f64>) {
    let (dm, hd, vd) = (cfg.d_model, cfg.head_dim, cfg.value_dim);
    let project = |xt: &[f32], wm: &[f32], b: &Option<Vec<f32>>, width: usize| -> Vec<f32> {
        (0..width)
            .map(|col| {
                let dot = (0..dm).fold(0.0f32, |acc, i| acc + xt[i] * wm[i * width + col]);
                dot + b.as_ref().map_or(0.0, |b| b[col])
            })
            .collect()
    };
    let rotate_heads = |v: &mut [f32], pos: usize| {
        if let Some(rope) = &cfg.rope {
            v.chunks_exact_mut(hd).for_each(|h| rope_f32(h, pos, rope));
        }
    };
    let group = cfg.heads / cfg.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (mut out, mut mag) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let token = |t: usize| &x[(b * seq + t) * dm..][..dm];
        let keys: Vec<Vec<f32>> = (0..seq)
            .map(|t| {
                let mut k = project(token(t), &w.w_k, &w.b_k, cfg.k_width());
                rotate_heads(&mut k, t);
                k
            })
            .collect();
        let values: Vec<Vec<f32>> =
            (0..seq).map(|t| project(token(t), &w.w_v, &w.b_v, cfg.kv_heads * vd)).collect();
        let v_max: Vec<f64> = (0..cfg.kv_heads)
            .map(|g| {
                values.iter().flat_map(|v| &v[g * vd..][..vd]).fold(0.0f64, |m, v| m.max(f64::from(v.abs())))
            })
            .collect();
        for t in 0..seq {
            let mut q = project(token(t), &w.w_q, &w.b_q, cfg.q_width());
            rotate_heads(&mut q, t);
            let visible = if causal { t + 1 } else { seq };
            let mut concat = vec![0.0f32; cfg.attn_width()];
            for h in 0..cfg.heads {
                let g = h / group;
                let scores: Vec<f32> = (0..visible)
                    .map(|j| scale * (0..hd).fold(0.0f32, |acc, i| acc + q[h * hd + i] * keys[j][g * hd + i]))
                    .collect();
                let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let p: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let l: f32 = p.iter().sum();
                for c in 0..vd {
                    concat[h * vd + c] =
                        (0..visible).fold(0.0f32, |acc, j| acc + p[j] * values[j][g * vd + c]) / l;
                }
            }
            for col in 0..dm {
                let y = (0..cfg.attn_width()).fold(0.0f32, |acc, i| acc + concat[i] * w.w_o[i * dm + col]);
                let b_o = w.b_o.as_ref().map_or(0.0, |b| b[col]);
                out.push(y + b_o);
                let m: f64 = (0..cfg.attn_width())
                    .map(|i| v_max[i / vd / group] * f64::from(w.w_o[i * dm + col].abs()))
                    .sum();
                mag.push(m + f64::from(b_o.abs()));
            }
        }
    }
    (out, mag)
}

/// Asserts `|got − exact| ≤ 2·|naive − exact| + FLOOR·mag` element by element; returns the largest
/// ratio of error to bound.
fn assert_matches_reference(what: &str, got: &[f32], exact: &[f64], naive: &[f32], mag: &[f64]) -> f64 {
    assert_eq!(got.len(), exact.len(), "{what}: output length");
    let mut worst: f64 = 0.0;
    for (i, (((&g, &e), &n), &m)) in got.iter().zip(exact).zip(naive).zip(mag).enumerate() {
        let bound = 2.0 * (f64::from(n) - e).abs() + FLOOR * m;
        let err = (f64::from(g) - e).abs();
        assert!(
            err <= bound,
            "{what}: element {i}: got {g}, exact {e}, naive {n}, error {err:e} > bound {bound:e}"
        );
        worst = worst.max(err / bound);
    }
    worst
}

/// Asserts `|a − b| ≤ rel·mag` element by element.
fn assert_close(what: &str, a: &[f32], b: &[f32], mag: &[f64], rel: f64) {
    assert_eq!(a.len(), b.len(), "{what}: output length");
    for (i, ((&x, &y), &m)) in a.iter().zip(b).zip(mag).enumerate() {
        let diff = (f64::from(x) - f64::from(y)).abs();
        assert!(diff <= rel * m, "{what}: element {i}: {x} vs {y}, difference {diff:e} > {:e}", rel * m);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. forward against the f64 definition
// ---------------------------------------------------------------------------------------------

#[test]
fn forward_matches_reference_on_every_isa() {
    let mut worst: f64 = 0.0;
    for (si, s) in SHAPES.iter().enumerate() {
        for rope in ROPES {
            if rope.is_some() && s.head_dim % 2 == 1 {
                continue;
            }
            let cfg = s.config(rope);
            for (bi, biases) in BIASES.into_iter().enumerate() {
                let seed = (si * 31 + bi) as u64;
                let w = weights(&cfg, biases, seed);
                let x = Rng::new(seed + 1000).vec(s.batch * s.seq * s.d_model, 1.0);
                let rows: Vec<usize> = (0..s.seq).collect();
                for causal in [false, true] {
                    let exact = mha_f64(&cfg, &w, &x, (s.batch, s.seq), causal, &rows);
                    let (naive, mag) = mha_f32_naive(&cfg, &w, &x, (s.batch, s.seq), causal);
                    let params = causal_params(causal.then_some(CausalAlign::TopLeft));
                    for isa in available_isas() {
                        for par in [Parallelism::Sequential, Parallelism::Rayon] {
                            let mut out = vec![f32::NAN; x.len()];
                            layer(cfg, &w, isa, par).forward(&x, s.batch, s.seq, &mut out, &params).unwrap();
                            let what =
                                format!("{s:?} {rope:?} biases {biases:?} causal {causal} {isa:?} {par:?}");
                            worst = worst.max(assert_matches_reference(&what, &out, &exact, &naive, &mag));
                        }
                    }
                }
            }
        }
    }
    eprintln!("forward vs reference: worst error/bound {worst:.3}");
}

/// A layer reused across calls of different shapes keeps no stale state in its scratch.
#[test]
fn reused_layer_matches_fresh_layer() {
    let s = SHAPES[1];
    let cfg = s.config(ROPES[1]);
    let w = weights(&cfg, [true; 4], 7);
    for isa in available_isas() {
        let mut reused = layer(cfg, &w, isa, Parallelism::Sequential);
        for (batch, seq) in [(2, 19), (1, 3), (2, 5), (1, 19)] {
            let x = Rng::new((batch * 100 + seq) as u64).vec(batch * seq * s.d_model, 1.0);
            let (mut a, mut b) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let p = causal_params(Some(CausalAlign::TopLeft));
            reused.forward(&x, batch, seq, &mut a, &p).unwrap();
            layer(cfg, &w, isa, Parallelism::Sequential).forward(&x, batch, seq, &mut b, &p).unwrap();
            assert_eq!(a, b, "{isa:?} batch {batch} seq {seq}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. self-attention ≡ cross-attention over the same tokens
// ---------------------------------------------------------------------------------------------

/// `forward(x)` and `forward_cross(x, x)` compute the same products over the same operands; only
/// the projection widths differ (fused `[Q|K|V]` against `Q` and `[K|V]`), so the matmul may tile
/// the columns differently, and the attention reads Q, K and V through other strides. A few ulps
/// of the output scale (8ε·mag) allow for that; any real difference (a position, a head, a mask)
/// is ≥ 1.4e-3·mag (module documentation). Measured: ≤ 0.11ε·mag.
#[test]
fn self_attention_equals_cross_attention_on_the_same_tokens() {
    for (si, s) in SHAPES.iter().enumerate().skip(1) {
        for rope in ROPES {
            if rope.is_some() && s.head_dim % 2 == 1 {
                continue;
            }
            let cfg = s.config(rope);
            let w = weights(&cfg, [true; 4], 40 + si as u64);
            let x = Rng::new(50 + si as u64).vec(s.batch * s.seq * s.d_model, 1.0);
            for causal in [false, true] {
                let (_, mag) = mha_f32_naive(&cfg, &w, &x, (s.batch, s.seq), causal);
                for isa in available_isas() {
                    let mut l = layer(cfg, &w, isa, Parallelism::Rayon);
                    let mut fwd = vec![0.0; x.len()];
                    l.forward(
                        &x,
                        s.batch,
                        s.seq,
                        &mut fwd,
                        &causal_params(causal.then_some(CausalAlign::TopLeft)),
                    )
                    .unwrap();
                    // Equal lengths: both alignments of the causal mask are the same diagonal.
                    for align in [CausalAlign::BottomRight, CausalAlign::TopLeft] {
                        let p = causal_params(causal.then_some(align));
                        let mut cross = vec![0.0; x.len()];
                        l.forward_cross(&x, &x, s.batch, s.seq, s.seq, &mut cross, &p).unwrap();
                        let what = format!("{s:?} {rope:?} causal {causal} {align:?} {isa:?}");
                        assert_close(&what, &cross, &fwd, &mag, 8.0 * EPS);
                    }
                }
            }
        }
    }
}

/// Cross-attention with different query and key lengths, checked on its own terms: queries that
/// are the last `q_seq` tokens of the key sequence, causal bottom-right, are rows of the causal
/// self-attention over the whole sequence (with RoPE the query positions would differ, so none).
#[test]
fn cross_attention_suffix_queries_match_causal_self_attention() {
    let s = SHAPES[3];
    let Baseline { cfg, w, x, mag } = baseline(s, None, 1, 61);
    let dm = s.d_model;
    for isa in available_isas() {
        let mut l = layer(cfg, &w, isa, Parallelism::Sequential);
        let full = causal_forward(&mut l, &x, 1, s.seq);
        for q_seq in [1, 5, s.seq] {
            let first = s.seq - q_seq;
            let mut out = vec![0.0; q_seq * dm];
            let p = causal_params(Some(CausalAlign::BottomRight));
            l.forward_cross(&x[first * dm..], &x, 1, q_seq, s.seq, &mut out, &p).unwrap();
            let what = format!("{isa:?} q_seq {q_seq}");
            assert_close(&what, &out, &full[first * dm..], &mag[first * dm..], 8.0 * EPS);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. decoding through a KV cache ≡ one causal forward
// ---------------------------------------------------------------------------------------------

/// What the decoding and cross-attention tests compare against: a layer's config, weights and
/// input (`batch` sequences of `s.seq` tokens, weights from `seed`, input from `seed + 1`) and
/// the magnitudes that scale the causal output's tolerance.
struct Baseline {
    cfg: MhaConfig,
    w: MhaWeights,
    x: Vec<f32>,
    mag: Vec<f64>,
}

fn baseline(s: Shape, rope: Option<Rope>, batch: usize, seed: u64) -> Baseline {
    let cfg = s.config(rope);
    let w = weights(&cfg, [true; 4], seed);
    let x = Rng::new(seed + 1).vec(batch * s.seq * s.d_model, 1.0);
    let (_, mag) = mha_f32_naive(&cfg, &w, &x, (batch, s.seq), true);
    Baseline { cfg, w, x, mag }
}

/// The layer's causal (top-left) forward pass over `x`.
fn causal_forward(l: &mut Layer, x: &[f32], batch: usize, seq: usize) -> Vec<f32> {
    let mut full = vec![0.0; x.len()];
    l.forward(x, batch, seq, &mut full, &causal_params(Some(CausalAlign::TopLeft))).unwrap();
    full
}

fn f32_cache(cfg: &MhaConfig, batch: usize, capacity: usize) -> KvCache {
    KvCache::new(KvCacheConfig {
        batch,
        kv_heads: cfg.kv_heads,
        head_dim: cfg.head_dim,
        value_dim: cfg.value_dim,
        capacity,
        dtype: KvDtype::F32,
        window: None,
    })
    .expect("valid cache")
}

/// Rows `starts[b]..starts[b] + n` of every sequence of a `[batch, seq, d_model]` buffer, as
/// `[batch, n, d_model]`.
fn gather<T: Copy>(buf: &[T], seq: usize, dm: usize, starts: &[usize], n: usize) -> Vec<T> {
    starts.iter().enumerate().flat_map(|(b, &t)| &buf[(b * seq + t) * dm..][..n * dm]).copied().collect()
}

/// Tolerance of step ≡ forward: both compute the same definition in f32 from the same weights, each
/// within the reference bound; they differ in the matmul's row count (tokens of one step against
/// all) and in how the attention splits the keys (the cache's key length and padding against the
/// causal mask), so their sums round in a different order. Each side's error is a few tens of ε
/// of mag (module documentation), so 2·FLOOR·mag bounds the difference; a key missing from the
/// cache, a wrong RoPE position or a stale row is ≥ 1.4e-3·mag, 70 × this. Measured: ≤ 0.41ε·mag.
const STEP_REL: f64 = 2.0 * FLOOR;

/// Feeds every sequence through `step` in chunks of the given sizes and compares every output row
/// with one causal forward over the whole sequence.
fn check_decoding(s: Shape, rope: Option<Rope>, chunks: &[usize], seed: u64) {
    assert_eq!(chunks.iter().sum::<usize>(), s.seq);
    let Baseline { cfg, w, x, mag } = baseline(s, rope, s.batch, seed);
    let dm = s.d_model;
    for isa in available_isas() {
        let mut l = layer(cfg, &w, isa, Parallelism::Rayon);
        let full = causal_forward(&mut l, &x, s.batch, s.seq);
        let mut cache = f32_cache(&cfg, s.batch, s.seq + 3);
        let mut t = 0;
        for (ci, &n) in chunks.iter().enumerate() {
            let starts = vec![t; s.batch];
            let mut out = vec![f32::NAN; s.batch * n * dm];
            // Alternate the default (which step makes bottom-right causal) and an explicit mask.
            let p = causal_params((ci % 2 == 1).then_some(CausalAlign::BottomRight));
            l.step(&gather(&x, s.seq, dm, &starts, n), s.batch, n, &mut cache, &mut out, &p).unwrap();
            let what = format!("{s:?} {rope:?} chunks {chunks:?} {isa:?}: tokens {t}..{}", t + n);
            let want = gather(&full, s.seq, dm, &starts, n);
            assert_close(&what, &out, &want, &gather(&mag, s.seq, dm, &starts, n), STEP_REL);
            t += n;
            assert!((0..s.batch).all(|b| cache.len(b) == Ok(t)), "{what}: cache lengths");
        }
    }
}

#[test]
fn token_by_token_decoding_matches_causal_forward() {
    for (si, s) in [SHAPES[1], SHAPES[3]].into_iter().enumerate() {
        for rope in ROPES {
            check_decoding(s, rope, &vec![1; s.seq], 70 + si as u64);
        }
    }
}

#[test]
fn chunked_decoding_matches_causal_forward() {
    // Batch 2, GQA: a prefill chunk then ragged chunks; multi-query; batch 3 with an odd head_dim.
    check_decoding(SHAPES[1], ROPES[1], &[7, 1, 3, 1, 5, 2], 80);
    check_decoding(SHAPES[1], ROPES[2], &[2, 17], 81);
    check_decoding(SHAPES[2], ROPES[2], &[1, 4, 16, 1, 1, 10], 82);
    check_decoding(SHAPES[4], None, &[3, 1, 1, 6], 83);
    check_decoding(SHAPES[0], ROPES[1], &[7], 84);
}

/// Speculative decoding: after rolling the sequences back to different lengths, each step rotates
/// every sequence's tokens at its own position and attends over its own keys only.
#[test]
fn decoding_after_rollback_to_different_lengths_matches_causal_forward() {
    let s = shape((64, 8, 2, 16, 24), 3, 24);
    let Baseline { cfg, w, x, mag } = baseline(s, ROPES[1], s.batch, 90);
    let dm = s.d_model;
    for isa in available_isas() {
        let mut l = layer(cfg, &w, isa, Parallelism::Sequential);
        let full = causal_forward(&mut l, &x, s.batch, s.seq);
        let mut cache = f32_cache(&cfg, s.batch, s.seq);
        let mut out = vec![0.0; s.batch * 12 * dm];
        l.step(&gather(&x, s.seq, dm, &[0; 3], 12), s.batch, 12, &mut cache, &mut out, &Default::default())
            .unwrap();
        // Reject drafts: the sequences fall back to 12, 9 and 4 positions.
        for (b, len) in [(1, 9), (2, 4)] {
            cache.truncate(b, len).unwrap();
        }
        for n in [1, 3, 1, 2, 4] {
            let starts: Vec<usize> = (0..s.batch).map(|b| cache.len(b).unwrap()).collect();
            let mut out = vec![f32::NAN; s.batch * n * dm];
            l.step(&gather(&x, s.seq, dm, &starts, n), s.batch, n, &mut cache, &mut out, &Default::default())
                .unwrap();
            let what = format!("{isa:?}: positions {starts:?} + {n}");
            let want = gather(&full, s.seq, dm, &starts, n);
            assert_close(&what, &out, &want, &gather(&mag, s.seq, dm, &starts, n), STEP_REL);
            assert!((0..s.batch).all(|b| cache.len(b) == Ok(starts[b] + n)), "{what}: cache lengths");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. RoPE against its formula
// ---------------------------------------------------------------------------------------------

const POSITIONS: [usize; 5] = [0, 1, 7, 1000, 100_000];

/// The dimensions of the pair that dimension `j` belongs to.
fn pair(style: RopeStyle, d: usize, j: usize) -> (usize, usize) {
    match style {
        RopeStyle::HalfSplit => (j % (d / 2), j % (d / 2) + d / 2),
        RopeStyle::Interleaved => (j & !1, j | 1),
    }
}

fn rope_f32_lib(rope: &Rope, x: &[f32], pos: usize) -> Vec<f32> {
    let half = x.len() / 2;
    let (mut cos, mut sin) = (vec![f32::NAN; half], vec![f32::NAN; half]);
    rope.angles(pos, &mut cos, &mut sin);
    let mut y = x.to_vec();
    rope.rotate(&mut y, &cos, &sin);
    y
}

/// Tolerance: `Rope::angles` rounds cos θ and sin θ once from f64 (error ≤ ε/2 each, at any
/// position), and `rotate` rounds two products and a sum, so each output of pair (a, b) is within
/// `(ε/2·2 + ε/2·2 + ε/2)·(|x_a| + |x_b|) ≤ 2ε·(|x_a| + |x_b|)` of the exact rotation. An angle
/// formed in f32 would be off by ~1e5·ε ≈ 1e-2 rad at position 100 000, far outside it.
#[test]
fn rope_matches_formula_at_every_position() {
    let mut rng = Rng::new(100);
    for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
        for base in [10_000.0, 1_000_000.0, 1.5] {
            let rope = Rope { style, base };
            for d in [2, 8, 16, 64] {
                let x = rng.vec(d, 2.0);
                for pos in POSITIONS {
                    let got = rope_f32_lib(&rope, &x, pos);
                    let mut exact: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                    rope_f64(&mut exact, pos, &rope);
                    for j in 0..d {
                        let (a, b) = pair(style, d, j);
                        let bound = 2.0 * EPS * f64::from(x[a].abs() + x[b].abs());
                        let err = (f64::from(got[j]) - exact[j]).abs();
                        assert!(
                            err <= bound,
                            "{rope:?} d {d} pos {pos} dim {j}: {} vs {}, error {err:e} > {bound:e}",
                            got[j],
                            exact[j]
                        );
                    }
                }
            }
        }
    }
}

/// A rotation keeps the norm: from the per-element bound above, `‖rotate(x) − R·x‖ ≤ 4ε·‖x‖`
/// (`Σ (2ε(|x_a| + |x_b|))²` over both elements of every pair is ≤ 16ε²·‖x‖²), so
/// `|‖rotate(x)‖ − ‖x‖| ≤ 4ε·‖x‖` (norms taken in f64). Position 0 is the identity, exactly.
#[test]
fn rope_preserves_norm_and_is_identity_at_position_zero() {
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let mut rng = Rng::new(110);
    for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
        let rope = Rope { style, base: 10_000.0 };
        for d in [2, 8, 32, 128] {
            let x = rng.vec(d, 3.0);
            for pos in POSITIONS {
                let y = rope_f32_lib(&rope, &x, pos);
                let (ny, nx) = (norm(&y), norm(&x));
                assert!((ny - nx).abs() <= 4.0 * EPS * nx, "{rope:?} d {d} pos {pos}: norm {nx} → {ny}");
            }
            assert_eq!(rope_f32_lib(&rope, &x, 0), x, "{rope:?} d {d}: position 0");
        }
    }
}

/// The point of RoPE: `⟨R_m·q, R_n·k⟩` depends only on `m − n`. Each rotated vector is within
/// `4ε·‖·‖` of the exact rotation (previous test), so two dot products of the same exact value
/// differ by at most `2·(4ε + 4ε)·‖q‖·‖k‖` (dots taken in f64).
#[test]
fn rope_scores_depend_only_on_relative_position() {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum::<f64>();
    let mut rng = Rng::new(120);
    for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
        let rope = Rope { style, base: 10_000.0 };
        let (q, k) = (rng.vec(32, 1.0), rng.vec(32, 1.0));
        let bound = 16.0 * EPS * dot(&q, &q).sqrt() * dot(&k, &k).sqrt();
        for (m, n) in [(3, 10), (10, 3), (0, 0), (5, 5)] {
            let base = dot(&rope_f32_lib(&rope, &q, m), &rope_f32_lib(&rope, &k, n));
            for shift in [1, 7, 1000, 100_000] {
                let shifted = dot(&rope_f32_lib(&rope, &q, m + shift), &rope_f32_lib(&rope, &k, n + shift));
                assert!(
                    (shifted - base).abs() <= bound,
                    "{style:?} ({m}, {n}) + {shift}: {base} vs {shifted}"
                );
            }
        }
    }
}

/// A one-token sequence sits at position 0, where RoPE is the identity: the layer's output is
/// bit-identical to the same layer without RoPE.
#[test]
fn rope_layer_on_one_token_equals_layer_without_rope() {
    let s = SHAPES[5];
    let w = weights(&s.config(None), [true; 4], 130);
    let x = Rng::new(131).vec(s.batch * s.d_model, 1.0);
    for isa in available_isas() {
        let mut plain = vec![0.0; x.len()];
        layer(s.config(None), &w, isa, Parallelism::Sequential)
            .forward(&x, s.batch, 1, &mut plain, &Default::default())
            .unwrap();
        for rope in ROPES.into_iter().flatten() {
            let mut rotated = vec![0.0; x.len()];
            layer(s.config(Some(rope)), &w, isa, Parallelism::Sequential)
                .forward(&x, s.batch, 1, &mut rotated, &Default::default())
                .unwrap();
            assert_eq!(rotated, plain, "{rope:?} {isa:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. errors
// ---------------------------------------------------------------------------------------------

fn is_shape_mismatch<T>(r: &crate::Result<T>) -> bool {
    matches!(r, Err(Error::ShapeMismatch(_)))
}

fn is_invalid<T>(r: &crate::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidParameter(_)))
}

/// GQA with RoPE and value_dim ≠ head_dim: every weight and bias has its own length.
const ERR_SHAPE: Shape = shape((32, 4, 2, 8, 6), 2, 5);

#[test]
fn weights_of_the_wrong_size_are_rejected() {
    let cfg = ERR_SHAPE.config(ROPES[1]);
    let good = weights(&cfg, [true; 4], 140);
    assert!(MultiHeadAttention::new(cfg, good.clone()).is_ok());
    type Field = fn(&mut MhaWeights) -> &mut Vec<f32>;
    let fields: [(&str, Field); 8] = [
        ("w_q", |w| &mut w.w_q),
        ("w_k", |w| &mut w.w_k),
        ("w_v", |w| &mut w.w_v),
        ("w_o", |w| &mut w.w_o),
        ("b_q", |w| w.b_q.as_mut().expect("present")),
        ("b_k", |w| w.b_k.as_mut().expect("present")),
        ("b_v", |w| w.b_v.as_mut().expect("present")),
        ("b_o", |w| w.b_o.as_mut().expect("present")),
    ];
    type Change = fn(&mut Vec<f32>);
    let changes: [(&str, Change); 3] =
        [("one short", |v| _ = v.pop()), ("one long", |v| v.push(0.0)), ("empty", |v| v.clear())];
    for (name, field) in fields {
        for (change, apply) in changes {
            let mut w = good.clone();
            apply(field(&mut w));
            let r = MultiHeadAttention::new(cfg, w);
            assert!(is_shape_mismatch(&r), "{name} {change}: {r:?}");
        }
    }
}

#[test]
fn bad_configurations_are_rejected() {
    let good = ERR_SHAPE.config(ROPES[1]);
    let check = |cfg: MhaConfig, want_shape: bool| {
        for r in [MultiHeadAttention::random(cfg, 1), MultiHeadAttention::new(cfg, MhaWeights::default())] {
            let ok = if want_shape { is_shape_mismatch(&r) } else { is_invalid(&r) };
            assert!(ok, "{cfg:?}: {r:?}");
        }
    };
    // Heads not a multiple of the K/V heads (including more K/V heads than heads).
    check(MhaConfig { heads: 6, kv_heads: 4, ..good }, true);
    check(MhaConfig { heads: 2, kv_heads: 4, ..good }, true);
    // Every zero dimension.
    check(MhaConfig { d_model: 0, ..good }, false);
    check(MhaConfig { heads: 0, ..good }, false);
    check(MhaConfig { kv_heads: 0, ..good }, false);
    check(MhaConfig { head_dim: 0, ..good }, false);
    check(MhaConfig { value_dim: 0, ..good }, false);
    // An odd head dimension cannot be split into pairs, in either style; without RoPE it is fine.
    for rope in ROPES.into_iter().flatten() {
        check(MhaConfig { head_dim: 7, rope: Some(rope), ..good }, false);
    }
    assert!(MultiHeadAttention::random(MhaConfig { head_dim: 7, rope: None, ..good }, 1).is_ok());
    // Bases whose angles do not decrease, or are not numbers.
    for base in [1.0, 0.5, 0.0, -10_000.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
            let rope = Rope { style, base };
            assert!(is_invalid(&rope.validate(8)), "{rope:?}");
            check(MhaConfig { rope: Some(rope), ..good }, false);
        }
    }
    assert!(
        MultiHeadAttention::random(
            MhaConfig { rope: Some(Rope { base: 1.001, ..ROPES[1].unwrap() }), ..good },
            1
        )
        .is_ok()
    );
}

#[test]
fn inputs_and_outputs_of_the_wrong_length_are_rejected_and_output_untouched() {
    let s = ERR_SHAPE;
    let cfg = s.config(ROPES[1]);
    let n = s.batch * s.seq * s.d_model;
    let mut l = MultiHeadAttention::random(cfg, 150).unwrap();
    let x = Rng::new(151).vec(n + 1, 1.0);
    let p = AttentionParams::default();
    let (s_b, s_l) = (s.batch, s.seq);
    for (x_len, out_len) in [(n - 1, n), (n + 1, n), (0, n), (n, n - 1), (n, n + 1), (n, 0)] {
        let mut out = vec![SENTINEL; out_len];
        let r = l.forward(&x[..x_len], s_b, s_l, &mut out, &p);
        assert!(is_shape_mismatch(&r), "forward x {x_len} out {out_len}: {r:?}");
        assert!(out.iter().all(|&v| v == SENTINEL), "forward wrote into out on Err");
        let mut out = vec![SENTINEL; out_len];
        let r = l.forward_cross(&x[..x_len], &x[..n], s_b, s_l, s_l, &mut out, &p);
        assert!(is_shape_mismatch(&r), "forward_cross x_q {x_len} out {out_len}: {r:?}");
        assert!(out.iter().all(|&v| v == SENTINEL), "forward_cross wrote into out on Err");
    }
    for kv_len in [n - 1, n + 1, 0] {
        let mut out = vec![SENTINEL; n];
        let r = l.forward_cross(&x[..n], &x[..kv_len], s_b, s_l, s_l, &mut out, &p);
        assert!(is_shape_mismatch(&r), "forward_cross x_kv {kv_len}: {r:?}");
        assert!(out.iter().all(|&v| v == SENTINEL), "forward_cross wrote into out on Err");
    }
    // batch·seq overflowing usize.
    let mut out = vec![SENTINEL; n];
    assert!(is_shape_mismatch(&l.forward(&x[..n], usize::MAX, 2, &mut out, &p)));
    // A parameter the attention refuses, found after the projections: out stays untouched.
    for scale in [f32::NAN, -1.0, 0.0] {
        let bad = AttentionParams { scale: Some(scale), ..Default::default() };
        let mut out = vec![SENTINEL; n];
        assert!(is_invalid(&l.forward(&x[..n], s_b, s_l, &mut out, &bad)), "scale {scale}");
        assert!(out.iter().all(|&v| v == SENTINEL), "forward wrote into out on Err (scale {scale})");
    }
}

/// Every failed `step` leaves the cache as it was: its lengths, and its contents (decoding goes
/// on afterwards and still matches one causal forward).
#[test]
fn failed_steps_leave_the_cache_unchanged() {
    let s = ERR_SHAPE;
    let Baseline { cfg, w, x, mag } = baseline(s, ROPES[2], s.batch, 160);
    let dm = s.d_model;
    for isa in available_isas() {
        let mut l = layer(cfg, &w, isa, Parallelism::Sequential);
        let full = causal_forward(&mut l, &x, s.batch, s.seq);
        let mut cache = f32_cache(&cfg, s.batch, s.seq);
        let mut out = vec![0.0; s.batch * 2 * dm];
        let p = AttentionParams::default();
        l.step(&gather(&x, s.seq, dm, &[0, 0], 2), s.batch, 2, &mut cache, &mut out, &p).unwrap();

        let next = gather(&x, s.seq, dm, &[2, 2], 1);
        let mut failures: Vec<(String, crate::Result<()>)> = Vec::new();
        let mut step = |what: &str,
                        l: &mut Layer,
                        cache: &mut KvCache,
                        x: &[f32],
                        n: usize,
                        out_len: usize,
                        p: &AttentionParams<'_>| {
            let mut out = vec![SENTINEL; out_len];
            let r = l.step(x, s.batch, n, cache, &mut out, p);
            assert!(out.iter().all(|&v| v == SENTINEL), "{what}: step wrote into out on Err");
            failures.push((what.to_string(), r));
        };
        step("x too short", &mut l, &mut cache, &next[1..], 1, s.batch * dm, &p);
        step("x too long", &mut l, &mut cache, &x[..s.batch * dm + 1], 1, s.batch * dm, &p);
        step("out too short", &mut l, &mut cache, &next, 1, s.batch * dm - 1, &p);
        step("out too long", &mut l, &mut cache, &next, 1, s.batch * dm + 1, &p);
        // More tokens than the cache has room for (seq − 2 left).
        let too_many = s.seq - 1;
        let chunk = gather(&x, s.seq, dm, &[0, 0], too_many);
        step("past capacity", &mut l, &mut cache, &chunk, too_many, s.batch * too_many * dm, &p);
        // Refused by the attention's own checks, which run before the cache changes.
        for scale in [f32::NAN, -1.0] {
            let bad = AttentionParams { scale: Some(scale), ..Default::default() };
            step(&format!("scale {scale}"), &mut l, &mut cache, &next, 1, s.batch * dm, &bad);
        }
        for (what, r) in &failures {
            assert!(r.is_err(), "{isa:?} {what}: {r:?}");
        }
        // Caches that do not fit the layer.
        let base = *cache.config();
        for other in [
            KvCacheConfig { batch: 1, ..base },
            KvCacheConfig { batch: 3, ..base },
            KvCacheConfig { kv_heads: 4, ..base },
            KvCacheConfig { head_dim: 6, ..base },
            KvCacheConfig { value_dim: 8, ..base },
        ] {
            let mut wrong = KvCache::new(other).unwrap();
            let mut out = vec![SENTINEL; s.batch * dm];
            let r = l.step(&next, s.batch, 1, &mut wrong, &mut out, &p);
            assert!(is_shape_mismatch(&r), "{isa:?} cache {other:?}: {r:?}");
            assert!(wrong.is_empty(), "{isa:?} cache {other:?} changed");
            assert!(out.iter().all(|&v| v == SENTINEL), "{isa:?} cache {other:?}: out written");
        }
        assert!((0..s.batch).all(|b| cache.len(b) == Ok(2)), "{isa:?}: cache lengths after failures");

        // Decoding goes on as if nothing had failed.
        let mut out = vec![0.0; s.batch * dm];
        for t in 2..s.seq {
            let starts = [t, t];
            l.step(&gather(&x, s.seq, dm, &starts, 1), s.batch, 1, &mut cache, &mut out, &p).unwrap();
            let want = gather(&full, s.seq, dm, &starts, 1);
            assert_close(
                &format!("{isa:?} token {t}"),
                &out,
                &want,
                &gather(&mag, s.seq, dm, &starts, 1),
                STEP_REL,
            );
        }
    }
}

/// Calls with no tokens (an empty batch, empty sequences, no keys, a step of no tokens) return,
/// `Ok` or `Err`, without panicking, and leave the cache as it was. (Which of the two is the
/// contract's choice; a panic from safe, validated code is not.)
#[test]
fn calls_with_no_tokens_return_without_panicking() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let cfg = SHAPES[1].config(ROPES[1]);
    let dm = cfg.d_model;
    let w = weights(&cfg, [true; 4], 170);
    let x = Rng::new(171).vec(2 * 3 * dm, 1.0);
    let p = AttentionParams::default();
    let mut out = vec![0.0; 2 * 3 * dm];
    type Call<'a> = &'a dyn Fn(&mut MultiHeadAttention, &mut KvCache, &mut [f32]) -> crate::Result<()>;
    let cases: [(&str, Call<'_>); 7] = [
        ("forward, seq 0", &|l, _, _| l.forward(&[], 2, 0, &mut [], &p)),
        ("forward, batch 0", &|l, _, _| l.forward(&[], 0, 3, &mut [], &p)),
        ("forward_cross, q_seq 0", &|l, _, _| l.forward_cross(&[], &x, 2, 0, 3, &mut [], &p)),
        ("forward_cross, kv_seq 0", &|l, _, out| l.forward_cross(&x, &[], 2, 3, 0, out, &p)),
        ("step, n 0", &|l, c, _| l.step(&[], 2, 0, c, &mut [], &p)),
        ("step, n 0 after tokens", &|l, c, out| {
            l.step(&x, 2, 3, c, out, &p)?;
            l.step(&[], 2, 0, c, &mut [], &p)
        }),
        ("step, batch 0", &|l, _, _| {
            l.step(
                &[],
                0,
                1,
                &mut KvCache::new(KvCacheConfig { batch: 0, ..*f32_cache(&cfg, 2, 8).config() })?,
                &mut [],
                &p,
            )
        }),
    ];
    let mut panicked = Vec::new();
    for (name, call) in cases {
        let mut l = MultiHeadAttention::new(cfg, w.clone()).unwrap();
        let mut cache = f32_cache(&cfg, 2, 8);
        match catch_unwind(AssertUnwindSafe(|| call(&mut l, &mut cache, &mut out))) {
            Ok(_) => {
                let want = if name.ends_with("after tokens") { 3 } else { 0 };
                assert!((0..2).all(|b| cache.len(b) == Ok(want)), "{name}: cache lengths changed");
            }
            Err(e) => panicked.push(format!(
                "{name}: {}",
                e.downcast_ref::<String>().map_or("(no message)", String::as_str)
            )),
        }
    }
    assert!(panicked.is_empty(), "panicked:\n{}", panicked.join("\n"));
}

/// A sequence's length, held positions and rollback floor.
type Held = (usize, std::ops::Range<usize>, usize);

/// A refused step leaves no trace on a ring cache either (window 4, capacity 6: full, and wrapped
/// with the sequences at different positions): afterwards the cache decodes, rolls back and decodes
/// again bit for bit as a twin that never saw the refused steps.
#[test]
fn refused_steps_on_a_ring_leave_no_trace() {
    let s = shape((32, 4, 2, 8, 6), 2, 16);
    let Baseline { cfg, w, x, .. } = baseline(s, ROPES[1], s.batch, 180);
    let dm = s.d_model;
    let ring = KvCacheConfig { capacity: 6, window: Some(4), ..*f32_cache(&cfg, s.batch, 6).config() };
    for isa in available_isas() {
        let mut l = layer(cfg, &w, isa, Parallelism::Sequential);
        for (prefix, offset) in [(6usize, 0usize), (9, 2)] {
            let mut cache = KvCache::new(ring).unwrap();
            let mut out = vec![0.0; s.batch * dm];
            for t in 0..prefix {
                let starts = [t, t.saturating_sub(offset)];
                if t < offset {
                    // Only sequence 0 moves: step both, then roll sequence 1 back.
                    l.step(
                        &gather(&x, s.seq, dm, &[t, 0], 1),
                        s.batch,
                        1,
                        &mut cache,
                        &mut out,
                        &Default::default(),
                    )
                    .unwrap();
                    cache.truncate(1, 0).unwrap();
                    continue;
                }
                l.step(
                    &gather(&x, s.seq, dm, &starts, 1),
                    s.batch,
                    1,
                    &mut cache,
                    &mut out,
                    &Default::default(),
                )
                .unwrap();
            }
            let twin = cache.clone();
            let starts: Vec<usize> = (0..s.batch).map(|b| cache.len(b).unwrap()).collect();
            let wide = AttentionParams {
                window: Some(crate::Window { left: Some(4), right: Some(0) }),
                ..Default::default()
            };
            let lens = [1, 1];
            let given_lengths = AttentionParams { key_lengths: Some(&lens), ..Default::default() };
            let bias = vec![0.0; s.batch * 7];
            let wrong_bias = AttentionParams {
                bias: Some(crate::View4::bhld(&bias, [s.batch, 1, 1, 7]).unwrap()),
                ..Default::default()
            };
            let nan = AttentionParams { scale: Some(f32::NAN), ..Default::default() };
            for n in 1..=3 {
                for (what, p) in [("window 5", &wide), ("key lengths", &given_lengths), ("NaN scale", &nan)] {
                    let mut out = vec![SENTINEL; s.batch * n * dm];
                    let r = l.step(&gather(&x, s.seq, dm, &starts, n), s.batch, n, &mut cache, &mut out, p);
                    assert!(is_invalid(&r), "{isa:?} prefix {prefix}, {n} tokens, {what}: {r:?}");
                    assert!(out.iter().all(|&v| v == SENTINEL), "{what}: out written");
                }
            }
            let mut out = vec![SENTINEL; s.batch * dm];
            let r = l.step(&gather(&x, s.seq, dm, &starts, 1), s.batch, 1, &mut cache, &mut out, &wrong_bias);
            assert!(is_shape_mismatch(&r), "{isa:?} prefix {prefix}, a bias of 7 columns: {r:?}");

            // Both go on: three tokens, a rollback to the floor, three more.
            let mut run = |mut c: KvCache| -> (Vec<u32>, Vec<Held>) {
                let mut bits = Vec::new();
                let decode = |c: &mut KvCache, l: &mut Layer, bits: &mut Vec<u32>| {
                    for _ in 0..3 {
                        let at: Vec<usize> = (0..s.batch).map(|b| c.len(b).unwrap()).collect();
                        let mut out = vec![0.0; s.batch * dm];
                        l.step(&gather(&x, s.seq, dm, &at, 1), s.batch, 1, c, &mut out, &Default::default())
                            .unwrap();
                        bits.extend(out.iter().map(|v| v.to_bits()));
                    }
                };
                decode(&mut c, &mut l, &mut bits);
                for b in 0..s.batch {
                    let floor = c.rollback_floor(b).unwrap();
                    c.truncate(b, floor).unwrap();
                }
                decode(&mut c, &mut l, &mut bits);
                let held = (0..s.batch)
                    .map(|b| (c.len(b).unwrap(), c.positions(b).unwrap(), c.rollback_floor(b).unwrap()))
                    .collect();
                (bits, held)
            };
            let (after_refusals, seen) = run(cache);
            let (never_refused, twin_seen) = run(twin);
            assert_eq!(seen, twin_seen, "{isa:?} prefix {prefix}: cache state");
            assert!(
                after_refusals == never_refused,
                "{isa:?} prefix {prefix}: decoding differs from the twin"
            );
        }
    }
}
