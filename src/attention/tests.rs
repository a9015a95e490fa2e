//! `attention_with_lse` against the f64 reference on every ISA the host has: shapes around the
//! tile sizes (several Q tiles per item, several K/V tiles per row, ragged edges), grouped-query
//! heads, every layout of Q, K, V and the output, and every parameter (causal in both alignments,
//! windows, key lengths, broadcast bias with −∞ entries, broadcast bool masks, ALiBi, softcap,
//! sinks, explicit scales), with uniform values and with logits of ±1e4. Then the contract's
//! properties, each as its own test: permutation invariance, hidden keys never read (even NaN and
//! ∞ garbage), NaN containment, mask ≡ −∞ bias, fully masked rows, bit-identical results for every
//! thread count, `merge` over a split key set; and every error, one by one.
//!
//! ## Tolerance
//! Per element `|kernel − exact| ≤ 2·|naive_f32 − exact| + floor`, where `exact` is
//! [`attention_f64`] and `naive_f32` is [`attention_f32_naive`] (the same definition accumulated in
//! f32 in the obvious order). The kernel sums in another order (blocked FMA dot products, an online
//! softmax that rescales partial sums, a vector `exp`), so on a given element its error is not
//! bounded by the naive error alone; the floor takes up that difference:
//! - `1e-5·max|V|`: the output is a convex combination of V rows, so a relative error ρ in the
//!   softmax weights (a few ulps of `exp`, the rescales `e^(m−m')`, the final `1/l`) moves it by at
//!   most `2ρ·max|V|`; 1e-5 is ~80 ulps of headroom for that and for the P·V sums;
//! - `2δ·max|V|` with `δ = (2 + √d)·ε·M`, where `M` bounds the row's logit magnitudes
//!   (`scale·Σ_p|q_p·k_p| + softcap + ALiBi + |bias|` over the row's keys): a logit is a sum of d
//!   products, scaled, capped and shifted, whose rounding error grows like `√d·ε·Σ|terms|`
//!   (Higham's probabilistic bound) plus a few ε for the other steps, in a different order than in
//!   the naive loop. An absolute logit error δ multiplies the weight `e^s` by `e^δ ≈ 1 + δ`, and
//!   relative weight errors move the output by at most `2δ·max|V|`. For uniform data `M` is a few
//!   units and this term stays near 1e-5·max|V|; at |s| = 1e4 a relative logit error of ε is an
//!   absolute error of ~1e4·ε ≈ 1e-3, and the floor grows with it, as it must for any f32 kernel.
//!
//! lse likewise: `2·|naive − exact| + 1e-5·(1 + |lse|) + δ` (lse moves by at most the largest
//! logit error). A missing, doubled or unmasked key changes the result by a fraction of `max|V|`,
//! far outside these floors for uniform data. A row the reference marks fully masked (lse = −∞)
//! must be exactly 0 with lse exactly −∞.

use crate::reference::{AttentionOutput, attention_f32_naive, attention_f64};
use crate::tests::Rng;
use crate::{
    AttentionParams, CausalAlign, Error, IsaKind, Parallelism, View4, View4Mut, Window, attention,
    attention_with_lse, available_isas, merge, parse_isa,
};
use proptest::prelude::*;
use proptest::sample::select;
use std::sync::OnceLock;

/// Query and key lengths: 1 and tiny, around the Q tile (64 rows per item, `64 / group` per head)
/// and just past the K/V tile (384 keys for d ≤ 64, 192 to 128, 96 above), and ragged values.
/// [`Shape::fit`] shortens the longest ones for wide heads and long queries.
const LENS: [usize; 12] = [1, 2, 3, 5, 17, 63, 64, 65, 129, 150, 193, 385];
/// Head dimensions: 1, odd, around the SIMD widths, the common 64/80/96/128, and 256 (which
/// halves the K/V tile).
const DIMS: [usize; 8] = [1, 8, 31, 64, 80, 96, 128, 256];
/// Largest `B·H·q_len·kv_len·(d + dv)` of a case: the f64 reference costs about that many flops,
/// so a case stays in the low milliseconds; wide heads get short sequences.
const BUDGET: usize = 1 << 21;

/// `cases` per property, without failure persistence: a failing seed is printed, not written
/// into the source tree; fewer when `PROPTEST_CASES` asks (CI's unoptimised run).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .map_or(cases, |n: u32| n.min(cases));
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases) }
}

/// How a 4-D tensor sits in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Through `View4::bhld`.
    Bhld,
    /// Through `View4::blhd`.
    Blhd,
    /// Explicit strides with gaps after every row, head and batch entry.
    Padded,
    /// Explicit strides, dim-major (`len` stride 1): no unit column stride anywhere.
    DimMajor,
}

const LAYOUTS: [Layout; 4] = [Layout::Bhld, Layout::Blhd, Layout::Padded, Layout::DimMajor];

/// Output gaps and slack hold this; a kernel that writes outside its view changes them.
const SENTINEL: f32 = 1234.5;
/// Elements after the last one a view reaches.
const SLACK: usize = 3;

/// A `[batch, heads, len, dim]` tensor in a buffer with a [`Layout`].
#[derive(Clone, Debug)]
struct Tensor {
    data: Vec<f32>,
    shape: [usize; 4],
    strides: [usize; 4],
    layout: Layout,
}

impl Tensor {
    /// A tensor whose gaps and slack hold `gap`; its elements too, until filled.
    fn new(layout: Layout, shape: [usize; 4], gap: f32) -> Tensor {
        let [_, h, l, d] = shape;
        let strides = match layout {
            Layout::Bhld => [h * l * d, l * d, d, 1],
            Layout::Blhd => [l * h * d, d, h * d, 1],
            Layout::Padded => {
                let (rs, hs) = (d + 2, l * (d + 2) + 3);
                [h * hs + 5, hs, rs, 1]
            }
            Layout::DimMajor => {
                let (cs, hs) = (l + 1, d * (l + 1) + 2);
                [h * hs + 1, hs, 1, cs]
            }
        };
        let extent = if shape.contains(&0) {
            0
        } else {
            1 + (0..4).map(|x| (shape[x] - 1) * strides[x]).sum::<usize>()
        };
        Tensor { data: vec![gap; extent + SLACK], shape, strides, layout }
    }

    fn offset(&self, idx: [usize; 4]) -> usize {
        (0..4).map(|x| idx[x] * self.strides[x]).sum()
    }

    fn at(&self, idx: [usize; 4]) -> f32 {
        self.data[self.offset(idx)]
    }

    fn set(&mut self, idx: [usize; 4], x: f32) {
        let o = self.offset(idx);
        self.data[o] = x;
    }

    /// Every index, in `[b, h, l, d]` order (the order of the reference's dense results).
    fn indices(&self) -> impl Iterator<Item = [usize; 4]> + use<> {
        let [b, h, l, d] = self.shape;
        (0..b).flat_map(move |bi| {
            (0..h).flat_map(move |hi| (0..l).flat_map(move |li| (0..d).map(move |di| [bi, hi, li, di])))
        })
    }

    fn fill(&mut self, mut value: impl FnMut() -> f32) {
        for idx in self.indices() {
            self.set(idx, value());
        }
    }

    /// The same values in a buffer of another layout.
    fn relaid(&self, layout: Layout) -> Tensor {
        let mut t = Tensor::new(layout, self.shape, f32::NAN);
        for idx in self.indices() {
            t.set(idx, self.at(idx));
        }
        t
    }

    /// Sets row `l` of `(b, h)` to `x`.
    fn set_row(&mut self, b: usize, h: usize, l: usize, x: f32) {
        for c in 0..self.shape[3] {
            self.set([b, h, l, c], x);
        }
    }

    fn view(&self) -> View4<'_> {
        match self.layout {
            Layout::Bhld => View4::bhld(&self.data, self.shape),
            Layout::Blhd => View4::blhd(&self.data, self.shape),
            _ => View4::new(&self.data, self.shape, self.strides),
        }
        .unwrap_or_else(|e| panic!("{:?} {:?} input view: {e}", self.layout, self.shape))
    }

    /// The view of rows `l0..l0 + len` of every `(b, h)`.
    fn rows_view(&self, l0: usize, len: usize) -> View4<'_> {
        let [b, h, _, d] = self.shape;
        let start = if len == 0 { 0 } else { l0 * self.strides[2] };
        View4::new(&self.data[start..], [b, h, len, d], self.strides)
            .unwrap_or_else(|e| panic!("rows {l0}..+{len} of {:?}: {e}", self.shape))
    }

    fn view_mut(&mut self) -> View4Mut<'_> {
        let (layout, shape, strides) = (self.layout, self.shape, self.strides);
        match layout {
            Layout::Bhld => View4Mut::bhld(&mut self.data, shape),
            Layout::Blhd => View4Mut::blhd(&mut self.data, shape),
            _ => View4Mut::new(&mut self.data, shape, strides),
        }
        .unwrap_or_else(|e| panic!("{layout:?} {shape:?} output view: {e}"))
    }

    /// The elements, dense in `[b, h, l, d]` order.
    fn dense(&self) -> Vec<f32> {
        self.indices().map(|idx| self.at(idx)).collect()
    }

    /// Whether every element outside the view still holds [`SENTINEL`].
    fn outside_untouched(&self) -> bool {
        let mut inside = vec![false; self.data.len()];
        for idx in self.indices() {
            inside[self.offset(idx)] = true;
        }
        self.data.iter().zip(&inside).all(|(&x, &inside)| inside || x.to_bits() == SENTINEL.to_bits())
    }
}

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    kv_heads: usize,
    /// Query heads per KV head.
    group: usize,
    q_len: usize,
    kv_len: usize,
    d: usize,
    dv: usize,
}

impl Shape {
    fn heads(&self) -> usize {
        self.kv_heads * self.group
    }

    fn cost(&self) -> usize {
        self.batch * self.heads() * self.q_len * self.kv_len * (self.d + self.dv)
    }

    /// Shrinks the longer sequence (then the heads, then the batch) until the case fits `budget`.
    fn fit(mut self, budget: usize) -> Shape {
        let shorter = |len: usize| LENS.iter().rev().copied().find(|&x| x < len).unwrap_or(1);
        while self.cost() > budget {
            if self.q_len.max(self.kv_len) > 1 {
                if self.q_len >= self.kv_len {
                    self.q_len = shorter(self.q_len);
                } else {
                    self.kv_len = shorter(self.kv_len);
                }
            } else if self.group > 1 {
                self.group -= 1;
            } else if self.kv_heads > 1 {
                self.kv_heads -= 1;
            } else if self.batch > 1 {
                self.batch -= 1;
            } else {
                break;
            }
        }
        self
    }
}

/// Everything besides the shapes, as choices; [`Inputs::new`] turns them into data.
#[derive(Clone, Debug, Default)]
struct Extras {
    causal: Option<CausalAlign>,
    window: Option<Window>,
    /// Per batch entry a pick among `0, 1, kv_len/2, kv_len − 1, kv_len` (byte % 5).
    key_lengths: Option<[u8; 2]>,
    /// Broadcast over `[batch, heads]`: `true` keeps the full dimension, `false` makes it 1.
    bias: Option<[bool; 2]>,
    /// Broadcast as for `bias`, and the share of visible bits: 0 → 1/2, 1 → 7/8, 2 → 1/8.
    mask: Option<([bool; 2], u8)>,
    alibi: bool,
    softcap: Option<f32>,
    sinks: bool,
    scale: Option<f32>,
}

/// One property-test case.
#[derive(Clone, Debug)]
struct Case {
    shape: Shape,
    /// Layouts of Q, K, V and the output.
    layouts: [Layout; 4],
    extras: Extras,
    seed: u64,
    /// Q scaled so that logits reach about ±1e4.
    extreme: bool,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        1..=2usize,
        1..=3usize,
        1..=4usize,
        select(LENS.to_vec()),
        select(LENS.to_vec()),
        select(DIMS.to_vec()),
        prop::option::weighted(0.3, select(DIMS.to_vec())),
    )
        .prop_map(|(batch, kv_heads, group, q_len, kv_len, d, dv)| {
            Shape { batch, kv_heads, group, q_len, kv_len, d, dv: dv.unwrap_or(d) }.fit(BUDGET)
        })
}

/// A window side: unbounded, a few keys, or up to about half the longest sequence.
fn window_side() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), (0usize..4).prop_map(Some), (0usize..80).prop_map(Some)]
}

fn extras() -> impl Strategy<Value = Extras> {
    (
        select(vec![None, Some(CausalAlign::TopLeft), Some(CausalAlign::BottomRight)]),
        prop::option::weighted(
            0.3,
            (window_side(), window_side()).prop_map(|(left, right)| Window { left, right }),
        ),
        prop::option::weighted(0.3, any::<[u8; 2]>()),
        prop::option::weighted(0.3, any::<[bool; 2]>()),
        prop::option::weighted(0.3, (any::<[bool; 2]>(), 0u8..3)),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.25, select(vec![1.0f32, 5.0, 30.0])),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.3, select(vec![0.02f32, 0.125, 0.7, 1.5])),
    )
        .prop_map(|(causal, window, key_lengths, bias, mask, alibi, softcap, sinks, scale)| Extras {
            causal,
            window,
            key_lengths,
            bias,
            mask,
            alibi,
            softcap,
            sinks,
            scale,
        })
}

fn cases(extreme: bool) -> impl Strategy<Value = Case> {
    cases_of(shapes(), extreme)
}

/// For the properties: mostly prefill shapes, sometimes decoding ones (the key-split path).
fn any_cases() -> impl Strategy<Value = Case> {
    prop_oneof![4 => cases(false), 1 => cases_of(decode_shapes(), false)]
}

fn cases_of(shapes: impl Strategy<Value = Shape>, extreme: bool) -> impl Strategy<Value = Case> {
    let layout = || select(LAYOUTS.to_vec());
    (shapes, (layout(), layout(), layout(), layout()), extras(), any::<u64>()).prop_map(
        move |(shape, (q, k, v, o), extras, seed)| Case {
            shape,
            layouts: [q, k, v, o],
            extras,
            seed,
            extreme,
        },
    )
}

/// Decoding shapes: at most 16 queries against more than 1024 keys, where the call splits the
/// keys (flash-decoding) and merges the partial results; 1000 and 1024 stay unsplit.
fn decode_shapes() -> impl Strategy<Value = Shape> {
    (
        1..=2usize,
        1..=2usize,
        1..=4usize,
        select(vec![1usize, 2, 5, 16]),
        select(vec![1000usize, 1024, 1025, 2100]),
        select(vec![1usize, 8, 31, 64]),
        prop::option::weighted(0.3, select(vec![1usize, 8, 40])),
    )
        .prop_map(|(batch, kv_heads, group, q_len, kv_len, d, dv)| {
            let mut s = Shape { batch, kv_heads, group, q_len, kv_len, d, dv: dv.unwrap_or(d) };
            // Fewer heads, then fewer queries; the keys stay long.
            while s.cost() > 4 * BUDGET && s.heads() * s.batch > 1 {
                if s.group > 1 {
                    s.group -= 1;
                } else if s.kv_heads > 1 {
                    s.kv_heads -= 1;
                } else {
                    s.batch -= 1;
                }
            }
            while s.cost() > 4 * BUDGET && s.q_len > 1 {
                s.q_len /= 2;
            }
            s
        })
}

/// A broadcastable `[1|B, 1|H, q_len, kv_len]` tensor, dense.
#[derive(Clone, Debug)]
struct Broadcast<T> {
    data: Vec<T>,
    shape: [usize; 4],
}

impl<T: Copy> Broadcast<T> {
    fn new(full: [bool; 2], s: &Shape, mut value: impl FnMut() -> T) -> Broadcast<T> {
        let shape =
            [if full[0] { s.batch } else { 1 }, if full[1] { s.heads() } else { 1 }, s.q_len, s.kv_len];
        Broadcast { data: (0..shape.iter().product::<usize>()).map(|_| value()).collect(), shape }
    }

    fn index(&self, b: usize, h: usize, i: usize, j: usize) -> usize {
        let [sb, sh, lq, lk] = self.shape;
        let (b, h) = (if sb == 1 { 0 } else { b }, if sh == 1 { 0 } else { h });
        ((b * sh + h) * lq + i) * lk + j
    }

    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> T {
        self.data[self.index(b, h, i, j)]
    }

    fn view(&self) -> View4<'_, T> {
        View4::bhld(&self.data, self.shape).expect("a dense broadcast tensor")
    }

    /// The view of key columns `j0..j0 + len`.
    fn cols_view(&self, j0: usize, len: usize) -> View4<'_, T> {
        let [sb, sh, lq, lk] = self.shape;
        let start = if len == 0 { 0 } else { j0 };
        View4::new(&self.data[start..], [sb, sh, lq, len], [sh * lq * lk, lq * lk, lk, 1])
            .expect("a column block of a dense tensor")
    }
}

/// The data of one call, built from a [`Case`] (or by hand).
#[derive(Clone, Debug)]
struct Inputs {
    shape: Shape,
    out_layout: Layout,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: Option<CausalAlign>,
    window: Option<Window>,
    key_lengths: Option<Vec<usize>>,
    bias: Option<Broadcast<f32>>,
    mask: Option<Broadcast<bool>>,
    slopes: Option<Vec<f32>>,
    softcap: Option<f32>,
    sinks: Option<Vec<f32>>,
    scale: Option<f32>,
}

impl Inputs {
    fn new(case: &Case) -> Inputs {
        let s = case.shape;
        let e = &case.extras;
        let mut rng = Rng::new(case.seed);
        let [lq, lk, lv, lo] = case.layouts;
        // Input gaps hold NaN: a kernel that reads outside its view poisons its result.
        let mut q = Tensor::new(lq, [s.batch, s.heads(), s.q_len, s.d], f32::NAN);
        let mut k = Tensor::new(lk, [s.batch, s.kv_heads, s.kv_len, s.d], f32::NAN);
        let mut v = Tensor::new(lv, [s.batch, s.kv_heads, s.kv_len, s.dv], f32::NAN);
        // Extreme: with K uniform, a logit is scale·a·Σ u·u', whose largest values over a row are
        // about a·scale·√d; a = 1e4 / (scale·√d) puts them near ±1e4.
        let scale = e.scale.unwrap_or(1.0 / (s.d as f32).sqrt());
        let a = if case.extreme { 1e4 / (scale * (s.d as f32).sqrt()) } else { 1.0 };
        q.fill(|| a * rng.uniform());
        k.fill(|| rng.uniform());
        v.fill(|| rng.uniform());
        let key_lengths = e.key_lengths.map(|picks| {
            (0..s.batch)
                .map(|b| {
                    let kl = s.kv_len;
                    [0, 1.min(kl), kl / 2, kl.saturating_sub(1), kl][usize::from(picks[b % 2]) % 5]
                })
                .collect()
        });
        let bias = e.bias.map(|full| {
            Broadcast::new(full, &s, || {
                if rng.next_u64().is_multiple_of(8) { f32::NEG_INFINITY } else { rng.uniform() }
            })
        });
        let mask = e.mask.map(|(full, density)| {
            let visible_in_8 = [4, 7, 1][usize::from(density)];
            Broadcast::new(full, &s, || rng.next_u64() % 8 < visible_in_8)
        });
        let slopes = e.alibi.then(|| (0..s.heads()).map(|_| 0.25 + 0.25 * rng.uniform()).collect());
        let sinks = e.sinks.then(|| (0..s.heads()).map(|_| 2.0 * rng.uniform()).collect());
        Inputs {
            shape: s,
            out_layout: lo,
            q,
            k,
            v,
            causal: e.causal,
            window: e.window,
            key_lengths,
            bias,
            mask,
            slopes,
            softcap: e.softcap,
            sinks,
            scale: e.scale,
        }
    }

    /// The parameters, with the default ISA and threading.
    fn params(&self) -> AttentionParams<'_> {
        AttentionParams {
            scale: self.scale,
            causal: self.causal,
            window: self.window,
            key_lengths: self.key_lengths.as_deref(),
            bias: self.bias.as_ref().map(Broadcast::view),
            mask: self.mask.as_ref().map(Broadcast::view),
            alibi_slopes: self.slopes.as_deref(),
            softcap: self.softcap,
            sinks: self.sinks.as_deref(),
            ..AttentionParams::default()
        }
    }

    fn key_len(&self, b: usize) -> usize {
        self.key_lengths.as_ref().map_or(self.shape.kv_len, |l| l[b])
    }

    /// Whether query row i of (b, h) sees key j, by the documented rules: key length, causal
    /// (both alignments), window, mask bit and −∞ bias. Stated here on its own, not taken from the
    /// reference, so that the properties below do not depend on the reference's NaN handling.
    fn sees(&self, b: usize, h: usize, i: usize, j: usize) -> bool {
        let kl = self.key_len(b);
        if j >= kl {
            return false;
        }
        let (i, j, off) = (i as i64, j as i64, kl as i64 - self.shape.q_len as i64);
        let causal = match self.causal {
            None => true,
            Some(CausalAlign::TopLeft) => j <= i,
            Some(CausalAlign::BottomRight) => j <= i + off,
        };
        let window = self.window.is_none_or(|w| {
            w.left.is_none_or(|x| j >= i + off - x as i64) && w.right.is_none_or(|x| j <= i + off + x as i64)
        });
        let (iu, ju) = (i as usize, j as usize);
        causal
            && window
            && self.mask.as_ref().is_none_or(|m| m.at(b, h, iu, ju))
            && self.bias.as_ref().is_none_or(|x| x.at(b, h, iu, ju) != f32::NEG_INFINITY)
    }

    /// Per row (dense `[B, H, q_len]`), the logit error bound δ of the module doc.
    fn logit_errors(&self) -> Vec<f64> {
        let s = self.shape;
        let scale = f64::from(self.scale.unwrap_or(1.0 / (s.d as f32).sqrt()));
        let eps = f64::from(f32::EPSILON);
        let mut out = Vec::with_capacity(s.batch * s.heads() * s.q_len);
        for b in 0..s.batch {
            let kl = self.key_len(b);
            let off = kl as i64 - s.q_len as i64;
            for h in 0..s.heads() {
                for i in 0..s.q_len {
                    let mut m = 0f64;
                    for j in 0..kl {
                        let dot: f64 = (0..s.d)
                            .map(|p| {
                                let x = self.q.at([b, h, i, p]);
                                let y = self.k.at([b, h / s.group, j, p]);
                                (f64::from(x) * f64::from(y)).abs()
                            })
                            .sum();
                        let mut t = scale * dot + f64::from(self.softcap.unwrap_or(0.0));
                        if let Some(slopes) = &self.slopes {
                            t += f64::from(slopes[h]).abs() * (i as i64 + off - j as i64).abs() as f64;
                        }
                        if let Some(bias) = &self.bias {
                            let x = bias.at(b, h, i, j);
                            if x.is_finite() {
                                t += f64::from(x).abs();
                            }
                        }
                        m = m.max(t);
                    }
                    out.push((2.0 + (s.d as f64).sqrt()) * eps * m);
                }
            }
        }
        out
    }
}

/// A result, dense: output `[B, H, q_len, dv]` and lse `[B, H, q_len]`.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    out: Vec<f32>,
    lse: Vec<f32>,
}

impl Run {
    fn bits(&self) -> (Vec<u32>, Vec<u32>) {
        (self.out.iter().map(|x| x.to_bits()).collect(), self.lse.iter().map(|x| x.to_bits()).collect())
    }
}

/// `attention_with_lse` on `inp` with `params` into a fresh output of the case's layout; checks
/// that nothing outside the output view was written. Panics on `Err`.
fn run_params(inp: &Inputs, params: &AttentionParams<'_>) -> Run {
    let s = inp.shape;
    let mut out = Tensor::new(inp.out_layout, [s.batch, s.heads(), s.q_len, s.dv], SENTINEL);
    let lse_shape = [s.batch, s.heads(), s.q_len, 1];
    let mut lse = vec![SENTINEL; s.batch * s.heads() * s.q_len];
    let lse_view = View4Mut::bhld(&mut lse, lse_shape).expect("dense lse");
    attention_with_lse(inp.q.view(), inp.k.view(), inp.v.view(), out.view_mut(), Some(lse_view), params)
        .unwrap_or_else(|e| panic!("{:?} {:?}: {e}", params.isa, s));
    assert!(out.outside_untouched(), "{:?}: wrote outside the output view", params.isa);
    Run { out: out.dense(), lse }
}

/// [`run_params`] with `inp`'s own parameters on `isa`.
fn run(inp: &Inputs, isa: IsaKind) -> Run {
    run_params(inp, &AttentionParams { isa: Some(isa), ..inp.params() })
}

/// What a call should give, with the inputs of its tolerance.
struct Oracle {
    exact: AttentionOutput<f64>,
    naive: AttentionOutput<f32>,
    /// Per row, the logit error bound δ.
    delta: Vec<f64>,
    max_v: f64,
    dv: usize,
}

impl Oracle {
    fn new(inp: &Inputs) -> Oracle {
        let (q, k, v, p) = (inp.q.view(), inp.k.view(), inp.v.view(), inp.params());
        Oracle {
            exact: attention_f64(q, k, v, &p),
            naive: attention_f32_naive(q, k, v, &p),
            delta: inp.logit_errors(),
            max_v: inp.v.indices().map(|idx| f64::from(inp.v.at(idx).abs())).fold(0.0, f64::max),
            dv: inp.shape.dv,
        }
    }

    /// Checks `got` element by element against the tolerance of the module doc.
    fn check(&self, what: &str, got: &Run) -> Result<(), TestCaseError> {
        let dv = self.dv;
        prop_assert_eq!(got.lse.len(), self.exact.lse.len());
        for (r, &exact_lse) in self.exact.lse.iter().enumerate() {
            let out = &got.out[r * dv..][..dv];
            let lse = got.lse[r];
            if exact_lse == f64::NEG_INFINITY {
                prop_assert!(
                    lse == f32::NEG_INFINITY && out.iter().all(|&x| x == 0.0),
                    "{what}: row {r} sees no key, but lse = {lse}, out = {out:?}"
                );
                continue;
            }
            let delta = self.delta[r];
            let bound = 2.0 * (f64::from(self.naive.lse[r]) - exact_lse).abs()
                + 1e-5 * (1.0 + exact_lse.abs())
                + delta;
            let err = (f64::from(lse) - exact_lse).abs();
            prop_assert!(
                err <= bound,
                "{what}: lse[{r}] = {lse}, exact {exact_lse}, error {err:e} > bound {bound:e}"
            );
            for (c, &x) in out.iter().enumerate() {
                let exact = self.exact.out[r * dv + c];
                let naive = self.naive.out[r * dv + c];
                let bound = 2.0 * (f64::from(naive) - exact).abs() + self.max_v * (1e-5 + 2.0 * delta);
                let err = (f64::from(x) - exact).abs();
                prop_assert!(
                    err <= bound,
                    "{what}: out[{r}, {c}] = {x}, exact {exact}, error {err:e} > bound {bound:e} \
                     (naive {naive}, δ {delta:e}, max|V| {})",
                    self.max_v
                );
            }
        }
        Ok(())
    }
}

/// Runs a case on every ISA and checks it against the reference.
fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let inp = Inputs::new(case);
    let oracle = Oracle::new(&inp);
    for isa in available_isas() {
        oracle.check(&format!("{isa:?}"), &run(&inp, isa))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(384))]

    /// Every shape, layout and parameter combination, values uniform in [−1, 1].
    #[test]
    fn matches_reference(case in cases(false)) {
        check_case(&case)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Decoding against long caches: the key-split path and its merge, with every parameter.
    #[test]
    fn matches_reference_when_decoding(case in cases_of(decode_shapes(), false)) {
        check_case(&case)?;
    }
}

proptest! {
    #![proptest_config(config(192))]

    /// Logits near ±1e4: the online softmax rescales by e^(m − m') across tiles where the
    /// running max jumps by thousands, and most weights underflow to 0.
    #[test]
    fn matches_reference_with_extreme_logits(
        case in prop_oneof![4 => cases(true), 1 => cases_of(decode_shapes(), true)]
    ) {
        check_case(&case)?;
    }
}

/// Garbage written where a row cannot look.
const GARBAGE: [f32; 5] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -3.5];

/// Writes `x` into every element of key `j` of K and V, for every batch entry and KV head where
/// `hit(b)` holds.
fn spoil_key(inp: &mut Inputs, j: usize, x: f32, hit: impl Fn(usize) -> bool) {
    for b in (0..inp.shape.batch).filter(|&b| hit(b)) {
        for h in 0..inp.shape.kv_heads {
            inp.k.set_row(b, h, j, x);
            inp.v.set_row(b, h, j, x);
        }
    }
}

/// Cases without any position-dependent rule: no causal mask, window, key lengths, ALiBi, bias
/// or mask.
fn plain_cases() -> impl Strategy<Value = Case> {
    cases(false).prop_map(|mut c| {
        c.extras = Extras {
            softcap: c.extras.softcap,
            sinks: c.extras.sinks,
            scale: c.extras.scale,
            ..Extras::default()
        };
        c
    })
}

proptest! {
    #![proptest_config(config(128))]

    /// Softmax attention is a function of the set of (key, value) pairs: permuting K and V rows
    /// together leaves the output unchanged within tolerance.
    #[test]
    fn permuting_keys_and_values_together_changes_nothing(case in plain_cases(), perm_seed: u64) {
        let inp = Inputs::new(&case);
        let s = inp.shape;
        let mut rng = Rng::new(perm_seed);
        let mut perm: Vec<usize> = (0..s.kv_len).collect();
        for i in (1..perm.len()).rev() {
            perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut permuted = inp.clone();
        for b in 0..s.batch {
            for h in 0..s.kv_heads {
                for (j, &from) in perm.iter().enumerate() {
                    for p in 0..s.d {
                        permuted.k.set([b, h, j, p], inp.k.at([b, h, from, p]));
                    }
                    for c in 0..s.dv {
                        permuted.v.set([b, h, j, c], inp.v.at([b, h, from, c]));
                    }
                }
            }
        }
        // The exact result of the original; the naive f32 baseline of the permuted order.
        let mut oracle = Oracle::new(&inp);
        oracle.naive = Oracle::new(&permuted).naive;
        for isa in available_isas() {
            oracle.check(&format!("{isa:?} permuted by {perm:?}"), &run(&permuted, isa))?;
        }
    }

    /// A causal row never depends on the keys after its diagonal: with every key from `cut` on
    /// replaced by garbage (NaN, ±∞, 1e30, or just other values), the rows that cannot see `cut`
    /// are bit-identical to the clean run.
    #[test]
    fn causal_rows_ignore_keys_they_cannot_see(
        case in any_cases(),
        align in select(vec![CausalAlign::TopLeft, CausalAlign::BottomRight]),
        cut_pick: u16,
        garbage in select(GARBAGE.to_vec()),
    ) {
        let mut inp = Inputs::new(&case);
        inp.causal = Some(align);
        let s = inp.shape;
        let cut = usize::from(cut_pick) % s.kv_len;
        let mut spoiled = inp.clone();
        for j in cut..s.kv_len {
            spoil_key(&mut spoiled, j, garbage, |_| true);
        }
        for isa in available_isas() {
            let (clean, dirty) = (run(&inp, isa), run(&spoiled, isa));
            for b in 0..s.batch {
                let off = inp.key_len(b) as i64 - s.q_len as i64;
                for h in 0..s.heads() {
                    for i in 0..s.q_len {
                        // One past the last key the causal rule lets row i see.
                        let end = match align {
                            CausalAlign::TopLeft => i as i64 + 1,
                            CausalAlign::BottomRight => i as i64 + off + 1,
                        };
                        if end > cut as i64 {
                            continue;
                        }
                        let r = (b * s.heads() + h) * s.q_len + i;
                        let (want, got) = (&clean.out[r * s.dv..][..s.dv], &dirty.out[r * s.dv..][..s.dv]);
                        prop_assert!(
                            got.iter().all(|x| x.is_finite())
                                && got.iter().zip(want).all(|(x, y)| x.to_bits() == y.to_bits())
                                && clean.lse[r].to_bits() == dirty.lse[r].to_bits(),
                            "{isa:?}: row {i} of (b {b}, h {h}) changed with keys {cut}.. = {garbage}: \
                             {got:?} (lse {}) instead of {want:?} (lse {})",
                            dirty.lse[r], clean.lse[r]
                        );
                    }
                }
            }
        }
    }
}

/// What hides the garbage in [`hidden_garbage_never_reaches_the_output`].
#[derive(Clone, Copy, Debug)]
enum Hider {
    /// Keys at or past each batch entry's key length.
    KeyLengths,
    /// Key columns whose mask bit is false for every query.
    Mask,
    /// Key columns whose bias is −∞ for every query.
    Bias,
}

proptest! {
    #![proptest_config(config(192))]

    /// NaN and ∞ in keys that a rule, the mask or a −∞ bias hides never reach the output: the
    /// result is bit-identical to the run with clean values there.
    #[test]
    fn hidden_garbage_never_reaches_the_output(
        case in any_cases(),
        hider in select(vec![Hider::KeyLengths, Hider::Mask, Hider::Bias]),
        garbage in select(GARBAGE.to_vec()),
        hide_seed: u64,
    ) {
        let mut inp = Inputs::new(&case);
        let s = inp.shape;
        let mut rng = Rng::new(hide_seed);
        // Each key is hidden with probability 1/3 (Mask, Bias).
        let hidden: Vec<bool> = (0..s.kv_len).map(|_| rng.next_u64().is_multiple_of(3)).collect();
        match hider {
            Hider::KeyLengths => {
                if inp.key_lengths.is_none() {
                    inp.key_lengths = Some(
                        (0..s.batch).map(|_| (rng.next_u64() % (s.kv_len as u64 + 1)) as usize).collect(),
                    );
                }
            }
            Hider::Mask => {
                let full = case.extras.mask.map_or([false, false], |m| m.0);
                let mut mask = Broadcast::new(full, &s, || !rng.next_u64().is_multiple_of(4));
                for (n, bit) in mask.data.iter_mut().enumerate() {
                    if hidden[n % s.kv_len] {
                        *bit = false;
                    }
                }
                inp.mask = Some(mask);
            }
            Hider::Bias => {
                let full = case.extras.bias.map_or([false, false], |m| m);
                let mut bias = Broadcast::new(full, &s, || rng.uniform());
                for (n, x) in bias.data.iter_mut().enumerate() {
                    if hidden[n % s.kv_len] {
                        *x = f32::NEG_INFINITY;
                    }
                }
                inp.bias = Some(bias);
            }
        }
        let mut spoiled = inp.clone();
        for (j, &hidden) in hidden.iter().enumerate() {
            match hider {
                Hider::KeyLengths => {
                    let lens = inp.key_lengths.as_deref().expect("set above");
                    spoil_key(&mut spoiled, j, garbage, |b| j >= lens[b]);
                }
                Hider::Mask | Hider::Bias => {
                    if hidden {
                        spoil_key(&mut spoiled, j, garbage, |_| true);
                    }
                }
            }
        }
        for isa in available_isas() {
            let (clean, dirty) = (run(&inp, isa), run(&spoiled, isa));
            prop_assert!(
                dirty.out.iter().all(|x| x.is_finite()),
                "{isa:?}: hidden {garbage} reached the output"
            );
            prop_assert!(
                clean.bits() == dirty.bits(),
                "{isa:?}: hidden {garbage} changed the output"
            );
        }
    }

    /// NaN in one visible V row (or one element of it) makes exactly the outputs that attend to
    /// it NaN: the columns it holds NaN in, of every row that sees it; everything else, lse
    /// included, is bit-identical to the clean run.
    #[test]
    fn nan_in_v_reaches_exactly_the_rows_that_see_it(
        case in any_cases(),
        at: (u8, u8, u16, u16),
        whole_row: bool,
    ) {
        let mut inp = Inputs::new(&case);
        // ALiBi at distance ~150 can push a visible key's weight below e^−88, where it is exactly
        // 0 in f32: the key is visible but not attended to.
        inp.slopes = None;
        let s = inp.shape;
        let (b, kvh, j) = (
            usize::from(at.0) % s.batch,
            usize::from(at.1) % s.kv_heads,
            usize::from(at.2) % s.kv_len,
        );
        let col = usize::from(at.3) % s.dv;
        let mut spoiled = inp.clone();
        for c in 0..s.dv {
            if whole_row || c == col {
                spoiled.v.set([b, kvh, j, c], f32::NAN);
            }
        }
        for isa in available_isas() {
            let (clean, dirty) = (run(&inp, isa), run(&spoiled, isa));
            prop_assert!(clean.bits().1 == dirty.bits().1, "{isa:?}: NaN in V changed lse");
            for bb in 0..s.batch {
                for h in 0..s.heads() {
                    for i in 0..s.q_len {
                        let r = (bb * s.heads() + h) * s.q_len + i;
                        let sees = bb == b && h / s.group == kvh && inp.sees(bb, h, i, j);
                        for c in 0..s.dv {
                            let (x, y) = (dirty.out[r * s.dv + c], clean.out[r * s.dv + c]);
                            if sees && (whole_row || c == col) {
                                prop_assert!(
                                    x.is_nan(),
                                    "{isa:?}: row {i} of (b {bb}, h {h}) sees key {j}, but out[{c}] = {x}"
                                );
                            } else {
                                prop_assert!(
                                    x.to_bits() == y.to_bits(),
                                    "{isa:?}: out[{c}] of row {i} of (b {bb}, h {h}) is {x}, not {y}, \
                                     with NaN in V row {j} (b {b}, kv head {kvh}); sees = {sees}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// A false mask bit and a −∞ bias entry are the same thing: mask + finite bias gives exactly
    /// the result of the one bias with −∞ where the mask is false.
    #[test]
    fn mask_equals_neg_inf_bias(case in any_cases(), full: [bool; 2], with_bias: bool) {
        let mut masked = Inputs::new(&case);
        let s = masked.shape;
        let mut rng = Rng::new(case.seed ^ 0x5EED);
        let mask = Broadcast::new(full, &s, || !rng.next_u64().is_multiple_of(3));
        let bias = Broadcast::new(full, &s, || if with_bias { rng.uniform() } else { 0.0 });
        let mut biased = masked.clone();
        biased.mask = None;
        biased.bias = Some(Broadcast {
            data: mask
                .data
                .iter()
                .zip(&bias.data)
                .map(|(&m, &x)| if m { x } else { f32::NEG_INFINITY })
                .collect(),
            shape: mask.shape,
        });
        masked.mask = Some(mask);
        masked.bias = with_bias.then_some(bias);
        for isa in available_isas() {
            prop_assert!(
                run(&masked, isa).bits() == run(&biased, isa).bits(),
                "{isa:?}: mask and −∞ bias differ"
            );
        }
    }

    /// A row that sees no key (mask row all false, key length 0, or a rule) gives output exactly
    /// 0 and lse −∞; with a sink, output 0 and lse exactly the sink.
    #[test]
    fn fully_masked_rows_give_zero(case in any_cases(), mask_seed: u64) {
        let mut inp = Inputs::new(&case);
        let s = inp.shape;
        let mut rng = Rng::new(mask_seed);
        // Each query row is masked entirely with probability 1/3.
        let dead: Vec<bool> = (0..s.q_len).map(|_| rng.next_u64().is_multiple_of(3)).collect();
        let full = case.extras.mask.map_or([true, false], |m| m.0);
        let mut mask = Broadcast::new(full, &s, || rng.next_u64().is_multiple_of(2));
        for (n, bit) in mask.data.iter_mut().enumerate() {
            if dead[(n / s.kv_len) % s.q_len] {
                *bit = false;
            }
        }
        inp.mask = Some(mask);
        let mut dead_rows = 0;
        for isa in available_isas() {
            let got = run(&inp, isa);
            for b in 0..s.batch {
                for h in 0..s.heads() {
                    for i in 0..s.q_len {
                        if (0..s.kv_len).any(|j| inp.sees(b, h, i, j)) {
                            continue;
                        }
                        dead_rows += 1;
                        let r = (b * s.heads() + h) * s.q_len + i;
                        let out = &got.out[r * s.dv..][..s.dv];
                        let want = inp.sinks.as_ref().map_or(f32::NEG_INFINITY, |x| x[h]);
                        prop_assert!(
                            out.iter().all(|&x| x == 0.0) && got.lse[r].to_bits() == want.to_bits(),
                            "{isa:?}: row {i} of (b {b}, h {h}) sees no key, but out = {out:?}, \
                             lse = {} (want {want})",
                            got.lse[r]
                        );
                    }
                }
            }
        }
        prop_assert!(dead_rows > 0 || !dead.contains(&true));
    }

    /// The plan depends on shapes only: Sequential and rayon pools of 1, 2 and 3 threads give
    /// bit-identical results.
    #[test]
    fn results_are_bit_identical_for_every_thread_count(case in any_cases()) {
        let inp = Inputs::new(&case);
        for isa in available_isas() {
            let params = AttentionParams { isa: Some(isa), ..inp.params() };
            let seq = run_params(&inp, &AttentionParams { parallelism: Parallelism::Sequential, ..params });
            for (threads, pool) in pools().iter().enumerate() {
                let par = pool.install(|| {
                    run_params(&inp, &AttentionParams { parallelism: Parallelism::Rayon, ..params })
                });
                prop_assert!(
                    par.bits() == seq.bits(),
                    "{isa:?}: {} rayon threads differ from sequential",
                    threads + 1
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Where K and V sit in memory changes no bit of the result, as long as their rows are
    /// contiguous: prefill reads rows that are not adjacent through a dense copy, and the
    /// row-wise kernels read any row stride in place. (Decoding a cache longer than these, with
    /// rows a page apart, splits its keys finer and so sums in another order.)
    #[test]
    fn kv_row_strides_change_no_bit(case in any_cases(), k_pick: usize, v_pick: usize) {
        let unit_cols = [Layout::Blhd, Layout::Padded];
        let mut strided = case.clone();
        strided.layouts[1] = unit_cols[k_pick % 2];
        strided.layouts[2] = unit_cols[v_pick % 2];
        let mut dense = case;
        dense.layouts[1] = Layout::Bhld;
        dense.layouts[2] = Layout::Bhld;
        let (strided, dense) = (Inputs::new(&strided), Inputs::new(&dense));
        for isa in available_isas() {
            prop_assert!(run(&strided, isa).bits() == run(&dense, isa).bits(), "{isa:?}");
        }
    }
}

/// Rayon pools of 1, 2 and 3 threads.
fn pools() -> &'static [rayon::ThreadPool] {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    POOLS.get_or_init(|| {
        (1..=3)
            .map(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("building a rayon pool"))
            .collect()
    })
}

/// `attention_with_lse` into dense `[B, H, q_len, dv]` output and lse, as `merge` wants them.
fn run_dense(q: View4<'_>, k: View4<'_>, v: View4<'_>, params: &AttentionParams<'_>) -> (Vec<f32>, Vec<f32>) {
    let [b, h, lq, _] = q.shape();
    let dv = v.shape()[3];
    let mut out = vec![SENTINEL; b * h * lq * dv];
    let mut lse = vec![SENTINEL; b * h * lq];
    attention_with_lse(
        q,
        k,
        v,
        View4Mut::bhld(&mut out, [b, h, lq, dv]).expect("dense output"),
        Some(View4Mut::bhld(&mut lse, [b, h, lq, 1]).expect("dense lse")),
        params,
    )
    .unwrap_or_else(|e| panic!("{:?}: {e}", params.isa));
    (out, lse)
}

proptest! {
    #![proptest_config(config(128))]

    /// Attention over keys `0..split` and over `split..kv_len` (K, V, bias and mask sub-views),
    /// merged, is attention over all keys, within tolerance.
    #[test]
    fn merging_two_key_ranges_equals_the_full_call(case in any_cases(), split_pick: u16) {
        let mut inp = Inputs::new(&case);
        // Rules that depend on the key count or on positions do not split; sinks would count twice.
        inp.causal = None;
        inp.window = None;
        inp.key_lengths = None;
        inp.slopes = None;
        inp.sinks = None;
        inp.out_layout = Layout::Bhld;
        let s = inp.shape;
        let split = usize::from(split_pick) % (s.kv_len + 1);
        let oracle = Oracle::new(&inp);
        for isa in available_isas() {
            let part = |j0: usize, len: usize| {
                let params = AttentionParams {
                    isa: Some(isa),
                    bias: inp.bias.as_ref().map(|x| x.cols_view(j0, len)),
                    mask: inp.mask.as_ref().map(|x| x.cols_view(j0, len)),
                    ..inp.params()
                };
                run_dense(inp.q.view(), inp.k.rows_view(j0, len), inp.v.rows_view(j0, len), &params)
            };
            let (mut out, mut lse) = part(0, split);
            let (out_b, lse_b) = part(split, s.kv_len - split);
            merge(&mut out, &mut lse, &out_b, &lse_b, s.dv).expect("merge of matching parts");
            oracle.check(&format!("{isa:?} split at {split}"), &Run { out, lse })?;
        }
    }

    /// Merging a part that saw no key (lse −∞, whatever its output holds) changes nothing, bit
    /// for bit, whichever side it is on; two empty parts give 0 and −∞.
    #[test]
    fn merging_an_empty_part_is_the_identity(case in any_cases()) {
        let inp = Inputs::new(&case);
        let s = inp.shape;
        for isa in available_isas() {
            let params = AttentionParams { isa: Some(isa), ..inp.params() };
            let (out, lse) = run_dense(inp.q.view(), inp.k.view(), inp.v.view(), &params);
            // A real empty part: the same queries against zero keys.
            let (empty_out, empty_lse) =
                run_dense(inp.q.view(), inp.k.rows_view(0, 0), inp.v.rows_view(0, 0), &AttentionParams {
                    key_lengths: None,
                    bias: inp.bias.as_ref().map(|x| x.cols_view(0, 0)),
                    mask: inp.mask.as_ref().map(|x| x.cols_view(0, 0)),
                    sinks: None,
                    ..params
                });
            prop_assert!(empty_out.iter().all(|&x| x == 0.0));
            prop_assert!(empty_lse.iter().all(|&x| x == f32::NEG_INFINITY));
            let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
            let (mut a, mut la) = (out.clone(), lse.clone());
            merge(&mut a, &mut la, &empty_out, &empty_lse, s.dv).expect("merge");
            prop_assert!(bits(&a) == bits(&out) && bits(&la) == bits(&lse), "{isa:?}: A ⊕ ∅ ≠ A");
            let (mut e, mut le) = (empty_out.clone(), empty_lse.clone());
            merge(&mut e, &mut le, &out, &lse, s.dv).expect("merge");
            // Rows that saw nothing in A as well come out 0 and −∞ either way.
            prop_assert!(bits(&e) == bits(&out) && bits(&le) == bits(&lse), "{isa:?}: ∅ ⊕ A ≠ A");
            // Garbage in an empty part's output is ignored.
            let garbage = vec![f32::NAN; out.len()];
            let (mut g, mut lg) = (out.clone(), lse.clone());
            merge(&mut g, &mut lg, &garbage, &empty_lse, s.dv).expect("merge");
            prop_assert!(bits(&g) == bits(&out) && bits(&lg) == bits(&lse), "{isa:?}: A ⊕ NaN·∅ ≠ A");
            let (mut z, mut lz) = (garbage.clone(), empty_lse.clone());
            merge(&mut z, &mut lz, &empty_out, &empty_lse, s.dv).expect("merge");
            prop_assert!(z.iter().all(|&x| x == 0.0) && lz.iter().all(|&x| x == f32::NEG_INFINITY));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic cases.

/// A hand-made case: row-major inputs, uniform values, the given shape and no parameters.
fn plain(
    batch: usize,
    kv_heads: usize,
    group: usize,
    q_len: usize,
    kv_len: usize,
    d: usize,
    dv: usize,
) -> Inputs {
    Inputs::new(&Case {
        shape: Shape { batch, kv_heads, group, q_len, kv_len, d, dv },
        layouts: [Layout::Bhld; 4],
        extras: Extras::default(),
        seed: (batch * 7 + kv_heads * 131 + q_len * 1009 + kv_len * 7919 + d * 65_537 + dv) as u64,
        extreme: false,
    })
}

/// Decoding a long `[B, L, H, D]` cache whose rows lie a page apart (8 heads × 128 floats) splits
/// its keys finer than a dense cache (12 splits here instead of 4): still within tolerance of the
/// reference, and the same bits for every thread count.
#[test]
fn a_long_decode_over_rows_a_page_apart_matches_the_reference() {
    let mut inp = plain(1, 8, 2, 2, 3000, 128, 128);
    let dense = Oracle::new(&inp);
    inp.k = inp.k.relaid(Layout::Blhd);
    inp.v = inp.v.relaid(Layout::Blhd);
    check_on_every_isa_and_pool(&inp, &dense);
}

/// `inp` on every ISA the host has: within tolerance of `oracle` on the calling thread, and the
/// same bits on pools of 1, 2 and 3 threads.
fn check_on_every_isa_and_pool(inp: &Inputs, oracle: &Oracle) {
    for isa in available_isas() {
        let params = AttentionParams { isa: Some(isa), ..inp.params() };
        let seq = run_params(inp, &AttentionParams { parallelism: Parallelism::Sequential, ..params });
        oracle.check(&format!("{isa:?}"), &seq).unwrap();
        for pool in pools() {
            let par = pool.install(|| run_params(inp, &params));
            assert!(par.bits() == seq.bits(), "{isa:?}: {} threads", pool.current_num_threads());
        }
    }
}

/// The validated dimensions of a call on dense Q `[b, h, q_len, d]`, K `[b, h_kv, kv_len, d]` and
/// V `[b, h_kv, kv_len, dv]`.
fn dims_of(
    [b, h, h_kv]: [usize; 3],
    (q_len, kv_len): (usize, usize),
    (d, dv): (usize, usize),
    params: &AttentionParams<'_>,
) -> super::validate::Dims {
    let (q, k, v, out) = ([b, h, q_len, d], [b, h_kv, kv_len, d], [b, h_kv, kv_len, dv], [b, h, q_len, dv]);
    super::validate::validate(q, k, v, out, None, params).expect("a valid call")
}

/// Query rows that each read more than 2 MiB of K and V get items four times as tall (256
/// stacked rows here, 128 of each of 2 heads, beside a ragged item of 2 rows each), with the
/// causal diagonal crossing both: within tolerance of the reference, and the same bits for every
/// thread count.
#[test]
fn tall_items_over_far_kv_match_the_reference() {
    let mut inp = plain(1, 1, 2, 130, 4200, 64, 64);
    inp.causal = Some(CausalAlign::BottomRight);
    let (params, s) = (inp.params(), inp.shape);
    let dims = dims_of([1, 2, 1], (s.q_len, s.kv_len), (s.d, s.dv), &params);
    let kv_bytes = super::plan::kv_bytes_per_row(&dims, &params, 4);
    for isa in available_isas() {
        let blk = flashcpu_kernels::blocking::Blocking::of(flashcpu_kernels::Isa::new(isa).unwrap());
        assert_eq!(super::plan::query_rows(&dims, &blk, kv_bytes), 128, "{isa:?}: tall items");
    }
    check_on_every_isa_and_pool(&inp, &Oracle::new(&inp));
}

/// The bytes of K and V a query row reads count only the keys it sees, in their storage type.
#[test]
fn kv_bytes_per_row_count_the_keys_each_row_sees() {
    let bytes = |q_len: usize, kv_len: usize, params: &AttentionParams<'_>, element: usize| {
        let dims = dims_of([2, 4, 2], (q_len, kv_len), (128, 64), params);
        super::plan::kv_bytes_per_row(&dims, params, element)
    };
    let none = AttentionParams::default();
    assert_eq!(bytes(4096, 4096, &none, 4), 4096 * 192 * 4);
    assert_eq!(bytes(4096, 4096, &none, 2), 4096 * 192 * 2);
    // Causal rows see 1, 2, …, 4096 keys: 2048.5 on average, rounded down.
    let causal = AttentionParams { causal: Some(CausalAlign::BottomRight), ..none };
    assert_eq!(bytes(4096, 4096, &causal, 4), 2048 * 192 * 4);
    // A window of 2 keys left of the diagonal: every row sees 3.
    let window = AttentionParams { window: Some(Window { left: Some(2), right: Some(0) }), ..none };
    assert_eq!(bytes(8, 1000, &window, 4), 3 * 192 * 4);
    let key_lengths = AttentionParams { key_lengths: Some(&[100, 300]), ..none };
    assert_eq!(bytes(5, 400, &key_lengths, 4), 200 * 192 * 4);
    assert_eq!(bytes(0, 400, &none, 4), 0);
}

/// Half-precision K and V in `[B, L, H, D]` order give the bits of the same values stored dense,
/// over several query tiles: prefill copies them in their storage type, widening nothing early.
#[test]
fn half_kv_in_token_major_order_gives_the_bits_of_dense() {
    fn check<T: crate::KvElement>(half: fn(f32) -> T) {
        let shape @ [_, heads, len, d] = [1, 3, 150, 40];
        let inp = plain(1, heads, 1, len, len, d, d);
        let dense = |x: &Tensor| x.dense().into_iter().map(half).collect::<Vec<T>>();
        let token_major = |x: &Tensor| x.relaid(Layout::Blhd).data.into_iter().map(half).collect::<Vec<T>>();
        let (kd, vd, kt, vt) = (dense(&inp.k), dense(&inp.v), token_major(&inp.k), token_major(&inp.v));
        for isa in available_isas() {
            let params = AttentionParams { isa: Some(isa), ..AttentionParams::default() };
            let bits = |k: View4<'_, T>, v: View4<'_, T>| {
                let mut out = vec![0.0f32; len * heads * d];
                attention(inp.q.view(), k, v, View4Mut::bhld(&mut out, shape).unwrap(), &params).unwrap();
                out.iter().map(|y| y.to_bits()).collect::<Vec<_>>()
            };
            let stored_dense = bits(View4::bhld(&kd, shape).unwrap(), View4::bhld(&vd, shape).unwrap());
            let stored_token_major = bits(View4::blhd(&kt, shape).unwrap(), View4::blhd(&vt, shape).unwrap());
            assert!(stored_dense == stored_token_major, "{isa:?}");
        }
    }
    check(half::f16::from_f32);
    check(half::bf16::from_f32);
}

/// Empty shapes: zero keys (with and without sinks), d = 0, dv = 0, zero queries, heads or batch.
#[test]
fn degenerate_shapes_match_the_reference() {
    let shapes = [
        (1, 1, 1, 3, 0, 8, 8),
        (2, 2, 2, 5, 0, 4, 3),
        (1, 1, 2, 3, 5, 0, 4),
        (1, 2, 1, 70, 150, 0, 1),
        (1, 1, 1, 3, 5, 8, 0),
        (2, 1, 3, 65, 17, 31, 0),
        (2, 1, 1, 2, 13, 3, 0),
        (1, 1, 1, 0, 5, 8, 8),
        (0, 1, 1, 3, 5, 8, 8),
    ];
    for (batch, kv_heads, group, q_len, kv_len, d, dv) in shapes {
        for sinks in [false, true] {
            let mut inp = plain(batch, kv_heads, group, q_len, kv_len, d, dv);
            // View4Mut::bhld refuses an output with dv = 0 (see `empty_output_views_are_accepted`);
            // explicit strides reach the kernel.
            inp.out_layout = Layout::Padded;
            if sinks {
                inp.sinks = Some((0..inp.shape.heads()).map(|h| h as f32 - 0.5).collect());
            }
            let oracle = Oracle::new(&inp);
            for isa in available_isas() {
                oracle.check(&format!("{isa:?} {:?} sinks {sinks}", inp.shape), &run(&inp, isa)).unwrap();
            }
        }
    }
    // Zero query heads (and zero KV heads): nothing to do, and nothing is refused.
    for kv_heads in [0, 1] {
        let (q, k, v) = (vec![], vec![0.0; kv_heads * 4], vec![0.0; kv_heads * 4]);
        let mut out = vec![];
        let mut lse = vec![];
        for isa in available_isas() {
            attention_with_lse(
                View4::bhld(&q, [1, 0, 2, 2]).unwrap(),
                View4::bhld(&k, [1, kv_heads, 2, 2]).unwrap(),
                View4::bhld(&v, [1, kv_heads, 2, 2]).unwrap(),
                View4Mut::bhld(&mut out, [1, 0, 2, 2]).unwrap(),
                Some(View4Mut::bhld(&mut lse, [1, 0, 2, 1]).unwrap()),
                &AttentionParams { isa: Some(isa), ..AttentionParams::default() },
            )
            .unwrap();
        }
    }
}

/// A sink joins the softmax denominator once, however the call splits the keys: decoding one
/// query against 1025 keys (two key splits) with every key masked gives lse = sink exactly, and
/// with every key visible the reference's lse.
#[test]
fn sinks_count_once_when_decoding() {
    for visible in [false, true] {
        let mut inp = plain(1, 1, 1, 1, 1025, 1, 1);
        inp.sinks = Some(vec![0.5]);
        inp.mask = Some(Broadcast::new([false, false], &inp.shape, || visible));
        let oracle = Oracle::new(&inp);
        for isa in available_isas() {
            let got = run(&inp, isa);
            if !visible {
                assert_eq!(got.lse, [0.5], "{isa:?}: lse of a row that sees only its sink");
            }
            oracle.check(&format!("{isa:?} visible {visible}"), &got).unwrap();
        }
    }
}

/// A view with no elements has no two indices on one element, whatever its strides: the dense
/// constructors must accept an output with dv = 0 (or any other zero dimension).
#[test]
fn empty_output_views_are_accepted() {
    for shape in [[1, 1, 3, 0], [2, 4, 65, 0], [1, 2, 0, 4], [2, 0, 3, 4], [0, 2, 3, 4]] {
        let mut none: Vec<f32> = vec![];
        let bhld = View4Mut::bhld(&mut none, shape).map(drop);
        let blhd = View4Mut::blhd(&mut none, shape).map(drop);
        assert!(bhld.is_ok() && blhd.is_ok(), "{shape:?}: bhld {bhld:?}, blhd {blhd:?}");
    }
}

/// The f64 reference itself: a −∞ bias hides a key "exactly as a false mask bit does", so NaN in
/// the V row of such a key must not reach the reference's output either (the properties above
/// avoid depending on this by stating visibility themselves).
#[test]
fn reference_hides_keys_behind_neg_inf_bias() {
    let mut inp = plain(1, 1, 1, 1, 2, 4, 2);
    inp.v.set_row(0, 0, 1, f32::NAN);
    inp.bias = Some(Broadcast { data: vec![0.0, f32::NEG_INFINITY], shape: [1, 1, 1, 2] });
    let mut masked = inp.clone();
    masked.bias = None;
    masked.mask = Some(Broadcast { data: vec![true, false], shape: [1, 1, 1, 2] });
    let by_mask = attention_f64(masked.q.view(), masked.k.view(), masked.v.view(), &masked.params());
    let by_bias = attention_f64(inp.q.view(), inp.k.view(), inp.v.view(), &inp.params());
    assert!(by_mask.out.iter().all(|x| x.is_finite()));
    assert_eq!(by_bias.out, by_mask.out, "the reference lets NaN in V through a −∞ bias");
}

/// Softmax of a single visible key is that key's value exactly, whatever the logit, on every
/// ISA: checks the online-softmax state at its edges (one key, m jumping from −∞).
#[test]
fn one_visible_key_returns_its_value() {
    for logit_scale in [1.0f32, 1e4, 1e-4] {
        let mut inp = plain(1, 1, 2, 70, 150, 16, 8);
        inp.scale = Some(logit_scale);
        // Query row i sees only key i.
        inp.mask = Some(Broadcast::new([false, false], &inp.shape, || false));
        if let Some(mask) = inp.mask.as_mut() {
            for i in 0..70 {
                mask.data[i * 150 + i] = true;
            }
        }
        for isa in available_isas() {
            let got = run(&inp, isa);
            for h in 0..2 {
                for i in 0..70 {
                    let r = h * 70 + i;
                    for c in 0..8 {
                        assert_eq!(
                            got.out[r * 8 + c].to_bits(),
                            inp.v.at([0, 0, i, c]).to_bits(),
                            "{isa:?} scale {logit_scale}: row {i} of head {h}"
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors, one by one. Each refused call must leave the output and the lse untouched.

/// Calls `attention_with_lse` with dense `bhld` tensors of the given shapes; `lse` `None` passes
/// no lse. Asserts that an `Err` wrote nothing.
fn call(
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    out: [usize; 4],
    lse: Option<[usize; 4]>,
    params: &AttentionParams<'_>,
) -> crate::Result<()> {
    let dense = |shape: [usize; 4]| vec![0.5f32; shape.iter().product()];
    let (qd, kd, vd) = (dense(q), dense(k), dense(v));
    let mut od = vec![SENTINEL; out.iter().product()];
    let mut lse_data = lse.map(|shape| vec![SENTINEL; shape.iter().product()]);
    let result = attention_with_lse(
        View4::bhld(&qd, q).unwrap(),
        View4::bhld(&kd, k).unwrap(),
        View4::bhld(&vd, v).unwrap(),
        View4Mut::bhld(&mut od, out).unwrap(),
        lse_data.as_deref_mut().zip(lse).map(|(data, shape)| View4Mut::bhld(data, shape).unwrap()),
        params,
    );
    if result.is_err() {
        assert!(
            od.iter().chain(lse_data.iter().flatten()).all(|x| x.to_bits() == SENTINEL.to_bits()),
            "an Err wrote to the output"
        );
    }
    result
}

/// Shapes of a valid call: B = 2, H = 4, H_kv = 2, q_len = 3, kv_len = 5, d = 4, dv = 6.
const Q: [usize; 4] = [2, 4, 3, 4];
const K: [usize; 4] = [2, 2, 5, 4];
const V: [usize; 4] = [2, 2, 5, 6];
const O: [usize; 4] = [2, 4, 3, 6];
const LSE: [usize; 4] = [2, 4, 3, 1];

fn valid(params: &AttentionParams<'_>) -> crate::Result<()> {
    call(Q, K, V, O, Some(LSE), params)
}

fn assert_shape_mismatch(result: crate::Result<()>, what: &str) {
    assert!(matches!(result, Err(Error::ShapeMismatch(_))), "{what}: {result:?}");
}

fn assert_invalid(result: crate::Result<()>, what: &str) {
    assert!(matches!(result, Err(Error::InvalidParameter(_))), "{what}: {result:?}");
}

#[test]
fn the_valid_call_is_accepted() {
    valid(&AttentionParams::default()).unwrap();
    call(Q, K, V, O, None, &AttentionParams::default()).unwrap();
}

#[test]
fn refuses_batch_mismatch() {
    let p = AttentionParams::default();
    assert_shape_mismatch(call(Q, [1, 2, 5, 4], [1, 2, 5, 6], O, Some(LSE), &p), "K batch");
    assert_shape_mismatch(call(Q, K, [1, 2, 5, 6], O, Some(LSE), &p), "V batch");
    assert_shape_mismatch(call(Q, K, [3, 2, 5, 6], O, Some(LSE), &p), "V batch 3");
}

#[test]
fn refuses_head_dim_mismatch() {
    let p = AttentionParams::default();
    assert_shape_mismatch(call(Q, [2, 2, 5, 5], V, O, Some(LSE), &p), "K d = 5");
    assert_shape_mismatch(call(Q, [2, 2, 5, 3], V, O, Some(LSE), &p), "K d = 3");
}

#[test]
fn refuses_k_v_shape_mismatch() {
    let p = AttentionParams::default();
    assert_shape_mismatch(call(Q, K, [2, 2, 6, 6], O, Some(LSE), &p), "V kv_len 6");
    assert_shape_mismatch(call(Q, K, [2, 2, 4, 6], O, Some(LSE), &p), "V kv_len 4");
    assert_shape_mismatch(call(Q, K, [2, 1, 5, 6], O, Some(LSE), &p), "V heads 1");
    assert_shape_mismatch(call(Q, K, [2, 4, 5, 6], O, Some(LSE), &p), "V heads 4");
}

#[test]
fn refuses_heads_not_divisible() {
    let p = AttentionParams::default();
    let k3 = [2, 3, 5, 4];
    let v3 = [2, 3, 5, 6];
    assert_shape_mismatch(call(Q, k3, v3, O, Some(LSE), &p), "4 heads over 3 KV heads");
    let (k8, v8) = ([2, 8, 5, 4], [2, 8, 5, 6]);
    assert_shape_mismatch(call(Q, k8, v8, O, Some(LSE), &p), "4 heads over 8 KV heads");
    let (k0, v0) = ([2, 0, 5, 4], [2, 0, 5, 6]);
    assert_shape_mismatch(call(Q, k0, v0, O, Some(LSE), &p), "4 heads over 0 KV heads");
}

#[test]
fn refuses_wrong_output_shape() {
    let p = AttentionParams::default();
    for out in [[1, 4, 3, 6], [2, 2, 3, 6], [2, 4, 4, 6], [2, 4, 3, 4], [2, 4, 3, 7]] {
        assert_shape_mismatch(call(Q, K, V, out, Some(LSE), &p), &format!("output {out:?}"));
    }
}

#[test]
fn refuses_wrong_lse_shape() {
    let p = AttentionParams::default();
    for shape in [[2, 4, 3, 0], [2, 4, 3, 2], [2, 4, 2, 1], [1, 4, 3, 1], [2, 2, 3, 1]] {
        assert_shape_mismatch(call(Q, K, V, O, Some(shape), &p), &format!("lse {shape:?}"));
    }
}

#[test]
fn refuses_bad_scale() {
    for scale in [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let p = AttentionParams { scale: Some(scale), ..AttentionParams::default() };
        assert_invalid(valid(&p), &format!("scale {scale}"));
    }
}

#[test]
fn refuses_bad_softcap() {
    for cap in [0.0, -0.0, -2.0, f32::NAN, f32::INFINITY] {
        let p = AttentionParams { softcap: Some(cap), ..AttentionParams::default() };
        assert_invalid(valid(&p), &format!("softcap {cap}"));
    }
}

#[test]
fn refuses_window_beyond_2_pow_48() {
    const MAX: usize = 1 << 48;
    for (left, right) in [
        (Some(MAX + 1), None),
        (None, Some(MAX + 1)),
        (Some(usize::MAX), Some(0)),
        (Some(0), Some(usize::MAX)),
    ] {
        let p = AttentionParams { window: Some(Window { left, right }), ..AttentionParams::default() };
        assert_invalid(valid(&p), &format!("window {left:?} {right:?}"));
    }
    // 2^48 itself is accepted, and sees everything.
    let p = AttentionParams {
        window: Some(Window { left: Some(MAX), right: Some(MAX) }),
        ..AttentionParams::default()
    };
    valid(&p).unwrap();
}

#[test]
fn refuses_bad_key_lengths() {
    let with =
        |lens: &[usize]| valid(&AttentionParams { key_lengths: Some(lens), ..AttentionParams::default() });
    assert_shape_mismatch(with(&[5]), "1 key length for batch 2");
    assert_shape_mismatch(with(&[5, 5, 5]), "3 key lengths for batch 2");
    assert_shape_mismatch(with(&[]), "no key lengths for batch 2");
    assert_invalid(with(&[5, 6]), "key length 6 > kv_len 5");
    assert_invalid(with(&[usize::MAX, 0]), "key length usize::MAX");
    with(&[0, 5]).unwrap();
}

#[test]
fn refuses_bad_alibi_slopes_and_sinks() {
    for sinks in [false, true] {
        let with = |x: &[f32]| {
            valid(&if sinks {
                AttentionParams { sinks: Some(x), ..AttentionParams::default() }
            } else {
                AttentionParams { alibi_slopes: Some(x), ..AttentionParams::default() }
            })
        };
        let what = if sinks { "sinks" } else { "alibi" };
        assert_shape_mismatch(with(&[0.5; 3]), &format!("3 {what} for 4 heads"));
        assert_shape_mismatch(with(&[0.5; 2]), &format!("2 {what} for 4 heads (the KV heads)"));
        assert_shape_mismatch(with(&[0.5; 5]), &format!("5 {what} for 4 heads"));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_invalid(with(&[0.5, 0.5, bad, 0.5]), &format!("{what} with {bad}"));
        }
        with(&[0.5, -0.5, 0.0, 2.0]).unwrap();
    }
}

#[test]
fn refuses_bias_and_mask_that_do_not_broadcast() {
    let good = [[2, 4, 3, 5], [1, 4, 3, 5], [2, 1, 3, 5], [1, 1, 3, 5]];
    let bad = [
        [3, 4, 3, 5],
        [2, 2, 3, 5],
        [2, 8, 3, 5],
        [2, 4, 1, 5],
        [2, 4, 3, 1],
        [2, 4, 3, 6],
        [2, 4, 5, 3],
        [0, 4, 3, 5],
        [1, 1, 1, 1],
    ];
    for (shape, ok) in good.iter().map(|s| (s, true)).chain(bad.iter().map(|s| (s, false))) {
        let n = shape.iter().product();
        let (bias, mask) = (vec![0.25f32; n], vec![true; n]);
        let by_bias = valid(&AttentionParams {
            bias: Some(View4::bhld(&bias, *shape).unwrap()),
            ..AttentionParams::default()
        });
        let by_mask = valid(&AttentionParams {
            mask: Some(View4::bhld(&mask, *shape).unwrap()),
            ..AttentionParams::default()
        });
        if ok {
            by_bias.unwrap();
            by_mask.unwrap();
        } else {
            assert_shape_mismatch(by_bias, &format!("bias {shape:?}"));
            assert_shape_mismatch(by_mask, &format!("mask {shape:?}"));
        }
    }
}

#[test]
fn view_constructors_refuse_out_of_bounds_strides() {
    let data = vec![0.0f32; 24];
    let bools = vec![true; 24];
    let oob = |r: crate::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::OutOfBounds(_))), "{what}: {r:?}");
    };
    // Exactly fitting and one element short.
    View4::new(&data, [1, 2, 3, 4], [24, 12, 4, 1]).unwrap();
    oob(View4::new(&data[..23], [1, 2, 3, 4], [24, 12, 4, 1]).map(drop), "one short");
    oob(View4::bhld(&data[..23], [1, 2, 3, 4]).map(drop), "bhld one short");
    oob(View4::blhd(&data[..23], [1, 2, 3, 4]).map(drop), "blhd one short");
    oob(View4::new(&data, [2, 2, 3, 4], [24, 12, 4, 1]).map(drop), "batch stride past the end");
    oob(View4::new(&data, [1, 1, 1, 2], [0, 0, 0, 24]).map(drop), "dim stride past the end");
    oob(View4::new(&bools, [1, 1, 2, 2], [0, 0, 23, 1]).map(drop), "bool view past the end");
    // Overflowing strides.
    for strides in [[usize::MAX, 1, 1, 1], [1, 1, usize::MAX / 2 + 1, 1], [0, 0, 1 << 62, 1 << 62]] {
        oob(View4::new(&data, [2, 2, 3, 2], strides).map(drop), &format!("{strides:?}"));
    }
    // Any strides are fine for an empty view.
    View4::new(&data[..0], [2, 0, 3, 4], [usize::MAX; 4]).unwrap();

    let mut out = vec![0.0f32; 24];
    View4Mut::new(&mut out, [1, 2, 3, 4], [24, 12, 4, 1]).unwrap();
    oob(View4Mut::new(&mut out[..23], [1, 2, 3, 4], [24, 12, 4, 1]).map(drop), "mut one short");
    oob(View4Mut::bhld(&mut out[..23], [1, 2, 3, 4]).map(drop), "mut bhld one short");
    oob(View4Mut::blhd(&mut out[..23], [1, 2, 3, 4]).map(drop), "mut blhd one short");
    oob(View4Mut::new(&mut out, [2, 2, 3, 2], [usize::MAX, 1, 1, 1]).map(drop), "mut overflow");
}

#[test]
fn view4mut_refuses_overlapping_strides() {
    let mut out = vec![0.0f32; 64];
    let overlap = |r: crate::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::OverlappingOutput(_))), "{what}: {r:?}");
    };
    for (shape, strides) in [
        ([1, 2, 3, 4], [0, 0, 4, 1]),  // both heads on the same elements
        ([2, 1, 3, 4], [0, 12, 4, 1]), // both batch entries on the same elements
        ([1, 1, 3, 4], [0, 0, 2, 1]),  // rows overlap
        ([1, 1, 3, 4], [0, 0, 4, 0]),  // one element per row
        ([1, 2, 2, 2], [8, 2, 2, 1]),  // head stride equals row stride
    ] {
        overlap(View4Mut::new(&mut out, shape, strides).map(drop), &format!("{shape:?} {strides:?}"));
    }
    // Size-1 dimensions may have any stride, including 0.
    View4Mut::new(&mut out, [1, 1, 3, 4], [0, 0, 4, 1]).unwrap();
}

#[test]
fn unsupported_isa_is_refused() {
    for name in ["avx-512", "neon", "", "sse2", "avx-2"] {
        assert!(matches!(parse_isa(name), Err(Error::UnsupportedIsa(_))), "{name:?}: {:?}", parse_isa(name));
    }
    assert_eq!(parse_isa(" AVX2 ").unwrap(), IsaKind::Avx2Fma);
    assert_eq!(parse_isa("portable").unwrap(), IsaKind::Portable);
    // A kind this CPU lacks is refused by the call, before any work.
    for kind in IsaKind::ALL {
        let result = valid(&AttentionParams { isa: Some(kind), ..AttentionParams::default() });
        if available_isas().contains(&kind) {
            result.unwrap();
        } else {
            assert!(matches!(result, Err(Error::UnsupportedIsa(_))), "{kind:?}: {result:?}");
        }
    }
}

/// `attention` is `attention_with_lse` without the lse, bit for bit.
#[test]
fn attention_equals_attention_with_lse() {
    let mut inp = plain(2, 2, 3, 65, 150, 31, 17);
    inp.causal = Some(CausalAlign::BottomRight);
    inp.softcap = Some(5.0);
    for isa in available_isas() {
        let params = AttentionParams { isa: Some(isa), ..inp.params() };
        let with_lse = run_params(&inp, &params);
        let s = inp.shape;
        let mut out = vec![SENTINEL; s.batch * s.heads() * s.q_len * s.dv];
        attention(
            inp.q.view(),
            inp.k.view(),
            inp.v.view(),
            View4Mut::bhld(&mut out, [s.batch, s.heads(), s.q_len, s.dv]).unwrap(),
            &params,
        )
        .unwrap();
        let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&with_lse.out), "{isa:?}");
    }
}
