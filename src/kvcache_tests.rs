//! [`KvCache`] against the f64 reference on every ISA the host has:
//! - decoding through the cache (a prefill chunk, then one token or one chunk at a time, each step
//!   attending its new queries) gives the rows of one causal call over the whole sequence;
//! - f16 and bf16 storage are exact up to f32 rounding against the reference on the rounded K and V,
//!   and within a stated bound of the reference on the unrounded ones;
//! - a sliding-window ring, before and after wrapping, equals a plain cache attended with the window;
//! - sequences of different lengths in one batch each equal their own batch-1 reference;
//! - every refused call leaves the cache as it was, and a rollback followed by a re-append equals
//!   never having appended the draft.
//!
//! ## Tolerance
//! Per element `|cache − exact| ≤ 2·|naive − exact| + 1e-6·max|V|`, where `exact` is
//! [`attention_f64`] and `naive` is [`attention_f32_naive`] on the K and V the cache stores (rounded
//! to its dtype). The cache adds no arithmetic of its own: it copies (and, for a half cache, widens
//! exactly) the stored values and calls the f32 kernel, so it must be as accurate as that kernel on
//! uniform data in [−1, 1): logits of a few units, a softmax of a few ulps per weight, and an output
//! that is a convex combination of V rows, which keeps the kernel within ~8 ulps of max|V| of the
//! naive error (the `1e-6·max|V|` floor). A missing, doubled, stale or misplaced key moves an output
//! by ~1/kv_len of max|V| or more, far outside it. lse likewise, with the floor `1e-6·(1 + |lse|)`.
//! A row that sees no key must be exactly 0 with lse exactly −∞.

use super::{KvCache, KvCacheConfig, KvDtype};
use crate::reference::{AttentionOutput, attention_f32_naive, attention_f64};
use crate::tests::Rng;
use crate::{
    AttentionParams, CausalAlign, Error, KvElement, View4, View4Mut, Window, attention_with_lse,
    available_isas,
};
use half::{bf16, f16};
use proptest::prelude::*;
use proptest::sample::select;

/// Output floor, in units of max|V| (module doc).
const FLOOR: f64 = 1e-6;
/// Unwritten outputs hold this value.
const SENTINEL: f32 = 1234.5;
/// Largest `B·H·L²·(d + dv)` of a generated case: the f64 reference over the whole sequence costs
/// about half of that in multiply-adds, so a case stays in the tens of milliseconds.
const BUDGET: usize = 1 << 24;

/// `cases` cases, or fewer where `PROPTEST_CASES` asks for fewer (an unoptimised run).
fn config(cases: u32) -> ProptestConfig {
    let asked = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse::<u32>().ok());
    let cases = asked.map_or(cases, |asked| asked.min(cases));
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases) }
}

// ---------------------------------------------------------------------------------------------
// Tensors, views and the reference.

/// A dense `[batch, heads, len, dim]` tensor.
#[derive(Clone, Debug)]
struct Tensor {
    data: Vec<f32>,
    shape: [usize; 4],
}

impl Tensor {
    fn filled(shape: [usize; 4], x: f32) -> Tensor {
        Tensor { data: vec![x; shape.iter().product()], shape }
    }

    /// Uniform in [−1, 1).
    fn random(shape: [usize; 4], rng: &mut Rng) -> Tensor {
        let data = (0..shape.iter().product()).map(|_| rng.uniform()).collect();
        Tensor { data, shape }
    }

    fn index(&self, [b, h, l, c]: [usize; 4]) -> usize {
        let [_, hs, ls, cs] = self.shape;
        ((b * hs + h) * ls + l) * cs + c
    }

    fn at(&self, idx: [usize; 4]) -> f32 {
        self.data[self.index(idx)]
    }

    /// Positions `l0..l0 + n` of batch entries `b0..b0 + nb`: a strided view, no copy.
    fn rows(&self, b0: usize, nb: usize, l0: usize, n: usize) -> View4<'_> {
        let [_, h, l, d] = self.shape;
        let start = ((b0 * h * l + l0) * d).min(self.data.len());
        View4::new(&self.data[start..], [nb, h, n, d], [h * l * d, l * d, d, 1]).expect("rows in range")
    }

    fn view(&self) -> View4<'_> {
        self.rows(0, self.shape[0], 0, self.shape[2])
    }

    fn view_mut(&mut self) -> View4Mut<'_> {
        View4Mut::bhld(&mut self.data, self.shape).expect("dense")
    }

    /// The values a cache of `dtype` stores for these.
    fn stored(&self, dtype: KvDtype) -> Tensor {
        Tensor { data: self.data.iter().map(|&x| round(dtype, x)).collect(), shape: self.shape }
    }

    fn max_abs(&self) -> f64 {
        self.data.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max)
    }

    fn bits(&self) -> Vec<u32> {
        self.data.iter().map(|x| x.to_bits()).collect()
    }
}

/// `x` rounded to the storage type and widened back (exactly) to f32.
fn round(dtype: KvDtype, x: f32) -> f32 {
    match dtype {
        KvDtype::F32 => x,
        KvDtype::F16 => f16::from_f32(x).to_f32(),
        KvDtype::Bf16 => bf16::from_f32(x).to_f32(),
    }
}

fn cache_config(
    [batch, kv_heads, head_dim, value_dim]: [usize; 4],
    capacity: usize,
    window: Option<usize>,
    dtype: KvDtype,
) -> KvCacheConfig {
    KvCacheConfig { batch, kv_heads, head_dim, value_dim, capacity, dtype, window }
}

/// `causal: Some(BottomRight)` (decoding semantics), with `window` and `isa`.
fn causal(window: Option<Window>, isa: Option<crate::IsaKind>) -> AttentionParams<'static> {
    AttentionParams { causal: Some(CausalAlign::BottomRight), window, isa, ..AttentionParams::default() }
}

/// Mistral's window of `w` keys, the query's own included.
fn last(w: usize) -> Window {
    Window { left: Some(w - 1), right: Some(0) }
}

/// The result of an attention call, output `[B, H, q_len, dv]` and lse `[B, H, q_len]`.
struct Run {
    out: Tensor,
    lse: Vec<f32>,
}

/// `cache.attend` of `q` into fresh sentinel-filled buffers.
fn attend(cache: &KvCache, q: View4<'_>, params: &AttentionParams<'_>) -> crate::Result<Run> {
    let [b, h, n, _] = q.shape();
    let mut out = Tensor::filled([b, h, n, cache.config().value_dim], SENTINEL);
    let mut lse = vec![SENTINEL; b * h * n];
    cache.attend(q, out.view_mut(), Some(View4Mut::bhld(&mut lse, [b, h, n, 1])?), params)?;
    Ok(Run { out, lse })
}

/// One `attention_with_lse` call over K and V stored as `T` (`to` converts the rounded values
/// exactly).
fn attention_as<T: KvElement>(
    q: View4<'_>,
    k: &Tensor,
    v: &Tensor,
    params: &AttentionParams<'_>,
    to: impl Fn(f32) -> T,
) -> Run {
    let kt: Vec<T> = k.data.iter().map(|&x| to(x)).collect();
    let vt: Vec<T> = v.data.iter().map(|&x| to(x)).collect();
    let [b, h, n, _] = q.shape();
    let mut out = Tensor::filled([b, h, n, v.shape[3]], SENTINEL);
    let mut lse = vec![SENTINEL; b * h * n];
    attention_with_lse(
        q,
        View4::bhld(&kt, k.shape).expect("dense"),
        View4::bhld(&vt, v.shape).expect("dense"),
        out.view_mut(),
        Some(View4Mut::bhld(&mut lse, [b, h, n, 1]).expect("dense")),
        params,
    )
    .expect("a valid prefill call");
    Run { out, lse }
}

/// A single attention call over the whole sequence, K and V (already rounded) in the storage type.
fn prefill(q: View4<'_>, k: &Tensor, v: &Tensor, dtype: KvDtype, params: &AttentionParams<'_>) -> Run {
    match dtype {
        KvDtype::F32 => attention_as(q, k, v, params, |x| x),
        KvDtype::F16 => attention_as(q, k, v, params, f16::from_f32),
        KvDtype::Bf16 => attention_as(q, k, v, params, bf16::from_f32),
    }
}

/// How far a result may be from the exact one.
#[derive(Clone, Copy)]
enum Tolerance<'a> {
    /// The module's: `2·|naive − exact| + 1e-6·max|V|` per output, and likewise for lse.
    Kernel,
    /// `bound(b, h, l)` per output of row `l`, lse unchecked: half storage against the unrounded
    /// reference, whose bound already includes the f32 kernel's error.
    Rows(&'a dyn Fn(usize, usize, usize) -> f64),
}

/// What a call should give, and what its tolerance is made of.
struct Expected {
    exact: AttentionOutput<f64>,
    naive: AttentionOutput<f32>,
    /// `[B, H, q_len, dv]` of `exact`.
    shape: [usize; 4],
    max_v: f64,
}

impl Expected {
    fn new(q: View4<'_>, k: View4<'_>, v: View4<'_>, params: &AttentionParams<'_>) -> Expected {
        let [b, h, n, _] = q.shape();
        let dv = v.shape()[3];
        let (exact, naive) = (attention_f64(q, k, v, params), attention_f32_naive(q, k, v, params));
        let m = |bb, hh| v.0.matrix(bb, hh);
        let max_v = (0..b)
            .flat_map(|bb| (0..v.shape()[1]).map(move |hh| m(bb, hh)))
            .flat_map(|mat| (0..mat.rows()).flat_map(move |i| (0..dv).map(move |j| mat.at(i, j))))
            .map(|x| f64::from(x.abs()))
            .fold(0.0, f64::max);
        Expected { exact, naive, shape: [b, h, n, dv], max_v }
    }

    /// Checks batch entries `gb..gb + nb` of `got` (rows `0..n`) against entries `eb..eb + nb` of
    /// the expected result, rows `l0..l0 + n`.
    fn check_with(
        &self,
        what: &str,
        got: &Run,
        [gb, eb, nb, l0]: [usize; 4],
        tolerance: Tolerance<'_>,
    ) -> Result<(), TestCaseError> {
        let [_, heads, rows, dv] = self.shape;
        let [_, gh, n, gdv] = got.out.shape;
        prop_assert!(gh == heads && gdv == dv && l0 + n <= rows, "{}: shapes", what);
        for (b, h, i) in (0..nb).flat_map(|b| (0..heads).flat_map(move |h| (0..n).map(move |i| (b, h, i)))) {
            let r = ((eb + b) * heads + h) * rows + l0 + i;
            let gr = ((gb + b) * heads + h) * n + i;
            let (exact_lse, lse) = (self.exact.lse[r], got.lse[gr]);
            let out = &got.out.data[gr * dv..][..dv];
            if exact_lse == f64::NEG_INFINITY {
                prop_assert!(
                    lse == f32::NEG_INFINITY && out.iter().all(|&x| x == 0.0),
                    "{}: entry {} head {} row {} sees no key, but lse = {}, out = {:?}",
                    what,
                    gb + b,
                    h,
                    i,
                    lse,
                    out
                );
                continue;
            }
            let row_bound = match tolerance {
                Tolerance::Kernel => None,
                Tolerance::Rows(bound) => Some(bound(eb + b, h, l0 + i)),
            };
            if row_bound.is_none() {
                let bound =
                    2.0 * (f64::from(self.naive.lse[r]) - exact_lse).abs() + FLOOR * (1.0 + exact_lse.abs());
                let err = (f64::from(lse) - exact_lse).abs();
                prop_assert!(
                    err <= bound,
                    "{}: entry {} head {} row {}: lse {} exact {} error {:e} > {:e}",
                    what,
                    gb + b,
                    h,
                    i,
                    lse,
                    exact_lse,
                    err,
                    bound
                );
            }
            for (c, &x) in out.iter().enumerate() {
                let exact = self.exact.out[r * dv + c];
                let naive = f64::from(self.naive.out[r * dv + c]);
                let bound = row_bound.unwrap_or(2.0 * (naive - exact).abs() + FLOOR * self.max_v);
                let err = (f64::from(x) - exact).abs();
                prop_assert!(
                    err <= bound,
                    "{}: entry {} head {} row {} col {}: {} exact {} error {:e} > bound {:e}",
                    what,
                    gb + b,
                    h,
                    i,
                    c,
                    x,
                    exact,
                    err,
                    bound
                );
            }
        }
        Ok(())
    }

    /// [`Expected::check_with`] at the module's tolerance.
    fn check(&self, what: &str, got: &Run, rows: [usize; 4]) -> Result<(), TestCaseError> {
        self.check_with(what, got, rows, Tolerance::Kernel)
    }
}

/// Appends positions `l0..l0 + n` of every sequence.
fn append_all(cache: &mut KvCache, k: &Tensor, v: &Tensor, l0: usize, n: usize) -> crate::Result<()> {
    let b = k.shape[0];
    cache.append_all(k.rows(0, b, l0, n), v.rows(0, b, l0, n))
}

/// Appends positions `l0..l0 + n` of sequence `b`.
fn append(cache: &mut KvCache, b: usize, k: &Tensor, v: &Tensor, l0: usize, n: usize) -> crate::Result<()> {
    cache.append(b, k.rows(b, 1, l0, n), v.rows(b, 1, l0, n))
}

// ---------------------------------------------------------------------------------------------
// 1 and 2. Decoding through the cache equals one prefill over the whole sequence.

#[derive(Clone, Debug)]
struct DecodeCase {
    batch: usize,
    kv_heads: usize,
    group: usize,
    d: usize,
    dv: usize,
    len: usize,
    /// Positions appended (and attended) as the first chunk; 0 starts decoding at once.
    prefill: usize,
    /// Positions per later step.
    chunk: usize,
    /// Capacity beyond `len`: padding the cache must never read.
    slack: usize,
    seed: u64,
}

impl DecodeCase {
    fn heads(&self) -> usize {
        self.kv_heads * self.group
    }

    /// The chunk sizes appended, in order.
    fn schedule(&self) -> Vec<usize> {
        let mut steps = vec![self.prefill].into_iter().filter(|&p| p > 0).collect::<Vec<_>>();
        let mut at = self.prefill;
        while at < self.len {
            let n = self.chunk.min(self.len - at);
            steps.push(n);
            at += n;
        }
        steps
    }
}

/// Heads `kv_heads · group` up to 8, d and dv in {3, 8, 17, 64, 80} (3 and 17 leave a tail
/// after whole vectors, in every storage type), L up to 150 within [`BUDGET`].
fn decode_cases(chunk: impl Strategy<Value = usize>) -> impl Strategy<Value = DecodeCase> {
    let dims = select(vec![3usize, 8, 17, 64, 80]);
    (
        1..=2usize,
        1..=2usize,
        select(vec![1usize, 2, 3, 4]),
        dims.clone(),
        dims,
        1..=150usize,
        prop_oneof![Just(0.0), 0.0..1.0f64],
        chunk,
        0..=3usize,
        any::<u64>(),
    )
        .prop_map(|(batch, kv_heads, group, d, dv, len, frac, chunk, slack, seed)| {
            let per_len2 = batch * kv_heads * group * (d + dv);
            let len = len.min((BUDGET / per_len2).isqrt()).max(1);
            let prefill = (frac * len as f64) as usize;
            DecodeCase { batch, kv_heads, group, d, dv, len, prefill, chunk, slack, seed }
        })
}

/// Unit roundoff `u` and the largest absolute rounding error `η` of a subnormal, per storage type:
/// rounding gives `|x̃ − x| ≤ u·|x| + η`. f16: 11-bit significand, so u = 2⁻¹¹; below 2⁻¹⁴ it is
/// subnormal with spacing 2⁻²⁴, so η = 2⁻²⁵. bf16: 8-bit significand, u = 2⁻⁸; it shares f32's
/// exponent range, and our inputs (multiples of 2⁻²³) are never f32-subnormal, so η = 0.
fn storage_rounding(dtype: KvDtype) -> (f64, f64) {
    match dtype {
        KvDtype::F32 => (0.0, 0.0),
        KvDtype::F16 => (2f64.powi(-11), 2f64.powi(-25)),
        KvDtype::Bf16 => (2f64.powi(-8), 0.0),
    }
}

/// Per row `[B, H, L]` of the whole causal sequence, the bound δ on how far rounding K moves any
/// of the row's logits: `δ = scale·max_{j ≤ l} Σ_p |q_p|·(u·|k_jp| + η)`.
fn logit_shift(q: &Tensor, k: &Tensor, group: usize, (u, eta): (f64, f64)) -> Vec<f64> {
    let [batch, heads, len, d] = q.shape;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Vec::with_capacity(batch * heads * len);
    for b in 0..batch {
        for h in 0..heads {
            for l in 0..len {
                let shift = |j: usize| -> f64 {
                    (0..d)
                        .map(|p| {
                            let (x, y) =
                                (f64::from(q.at([b, h, l, p])), f64::from(k.at([b, h / group, j, p])));
                            x.abs() * (u * y.abs() + eta)
                        })
                        .sum()
                };
                // Row l sees keys 0..=l.
                let m = (0..=l).map(shift).fold(0.0, f64::max);
                out.push(scale * m);
            }
        }
    }
    out
}

/// Decodes `case` through a cache of `dtype` on every ISA, checking each step against the f64
/// reference of the whole sequence and the prefill call against it too.
fn check_decode(case: &DecodeCase, dtype: KvDtype) -> Result<(), TestCaseError> {
    let DecodeCase { batch, kv_heads, d, dv, len, .. } = *case;
    let heads = case.heads();
    let mut rng = Rng::new(case.seed);
    let q = Tensor::random([batch, heads, len, d], &mut rng);
    let k = Tensor::random([batch, kv_heads, len, d], &mut rng);
    let v = Tensor::random([batch, kv_heads, len, dv], &mut rng);
    let (ks, vs) = (k.stored(dtype), v.stored(dtype));
    let whole = causal(None, None);
    // Row l of the whole causal sequence (q_len = kv_len = L, bottom-right) is what the query of
    // position l must get, whenever it is attended.
    let expected = Expected::new(q.view(), ks.view(), vs.view(), &whole);

    // Half storage against the unrounded reference. Rounding K and V gives `|k̃ − k| ≤ u|k| + η`
    // (likewise V), and with weights p (exact) and p̃ (rounded K):
    //   õ − o = Σ_j p̃_j·(ṽ_j − v_j) + Σ_j (p̃_j − p_j)·v_j.
    // The first sum is at most u·max|v| + η (a convex combination). Each logit moves by at most δ
    // (`logit_shift`), so p̃_j/p_j ∈ [e^(−2δ), e^(2δ)] and the second sum is at most
    // (e^(2δ) − 1)·max|v| ≤ (2δ + 2δ²e^(2δ))·max|v|. With |q|, |k| ≤ 1 and scale 1/√d, δ ≤ u·√d
    // (+ √d·η): at d = 80 that is 0.0044 for f16 and 0.035 for bf16, so 2δ²e^(2δ) ≤ 0.67·u. The
    // kernel adds its f32 error, ≤ ~1e-6·max|v| (the tolerance above), under 0.01·u for either
    // type. Hence |kernel − o| ≤ (3u + 2δ)·max|v| + η: one u for rounding V, and the other two u
    // cover the second-order softmax term and the f32 kernel with room to spare.
    let unrounded = (dtype != KvDtype::F32).then(|| {
        let rounding = storage_rounding(dtype);
        let (u, eta) = rounding;
        let shift = logit_shift(&q, &k, case.group, rounding);
        let max_v = v.max_abs();
        let bound = move |b: usize, h: usize, l: usize| {
            (3.0 * u + 2.0 * shift[(b * heads + h) * len + l]) * max_v + eta
        };
        (Expected::new(q.view(), k.view(), v.view(), &whole), bound)
    });
    let check_unrounded = |what: &str, got: &Run, l0: usize| -> Result<(), TestCaseError> {
        if let Some((reference, bound)) = &unrounded {
            let what = format!("{what} (unrounded)");
            reference.check_with(&what, got, [0, 0, batch, l0], Tolerance::Rows(bound))?;
        }
        Ok(())
    };

    let cfg = cache_config([batch, kv_heads, d, dv], len + case.slack, None, dtype);
    for isa in available_isas() {
        let params = causal(None, Some(isa));
        let full = prefill(q.view(), &ks, &vs, dtype, &params);
        expected.check(&format!("{isa:?} {dtype:?} one prefill call"), &full, [0, 0, batch, 0])?;

        let mut cache = KvCache::new(cfg).expect("a valid config");
        let mut l0 = 0;
        for n in case.schedule() {
            append_all(&mut cache, &k, &v, l0, n).expect("room by construction");
            let got = attend(&cache, q.rows(0, batch, l0, n), &params).expect("a valid attend");
            let what = format!("{isa:?} {dtype:?} positions {l0}..{}", l0 + n);
            expected.check(&what, &got, [0, 0, batch, l0])?;
            check_unrounded(&what, &got, l0)?;
            l0 += n;
        }
        prop_assert!((0..batch).all(|b| cache.len(b) == Ok(len)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(32))]

    /// Test 1: a prefill chunk, then one token at a time (q_len = 1).
    #[test]
    fn decoding_token_by_token_equals_one_prefill(case in decode_cases(Just(1))) {
        check_decode(&case, KvDtype::F32)?;
    }

    /// Test 1: a prefill chunk, then chunks of 2..=17 queries at a time.
    #[test]
    fn decoding_in_chunks_equals_one_prefill(case in decode_cases(2..=17usize)) {
        check_decode(&case, KvDtype::F32)?;
    }

    /// Test 2: f16 and bf16 storage, token by token or in chunks.
    #[test]
    fn half_storage_is_exact_up_to_its_rounding(
        case in decode_cases(prop_oneof![Just(1usize), 2..=17usize]),
        dtype in select(vec![KvDtype::F16, KvDtype::Bf16]),
    ) {
        check_decode(&case, dtype)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A sliding-window ring equals a plain cache attended with the window.

#[derive(Clone, Debug)]
struct RingCase {
    batch: usize,
    kv_heads: usize,
    group: usize,
    d: usize,
    window: usize,
    capacity: usize,
    len: usize,
    /// One token per append; else chunks of 1..=capacity − window + 1.
    one_at_a_time: bool,
    dtype: KvDtype,
    seed: u64,
}

/// Windows of 1..=24 keys, capacities up to 8 beyond, sequences up to three capacities and a bit.
fn ring_cases() -> impl Strategy<Value = RingCase> {
    (
        1..=2usize,
        1..=2usize,
        select(vec![1usize, 2, 4]),
        select(vec![8usize, 64]),
        1..=24usize,
        0..=8usize,
        0.0..1.0f64,
        any::<bool>(),
        select(vec![KvDtype::F32, KvDtype::F32, KvDtype::F16, KvDtype::Bf16]),
        any::<u64>(),
    )
        .prop_map(|(batch, kv_heads, group, d, window, extra, frac, one_at_a_time, dtype, seed)| {
            let capacity = window + extra;
            let len = 1 + (frac * (3 * capacity + 5) as f64) as usize;
            RingCase { batch, kv_heads, group, d, window, capacity, len, one_at_a_time, dtype, seed }
        })
}

fn check_ring(case: &RingCase) -> Result<(), TestCaseError> {
    let RingCase { batch, kv_heads, d, window: w, capacity, len, dtype, .. } = *case;
    let heads = kv_heads * case.group;
    let mut rng = Rng::new(case.seed);
    let q = Tensor::random([batch, heads, len, d], &mut rng);
    let k = Tensor::random([batch, kv_heads, len, d], &mut rng);
    let v = Tensor::random([batch, kv_heads, len, d], &mut rng);
    let (ks, vs) = (k.stored(dtype), v.stored(dtype));
    // A tighter window at the call is kept: one per case, beside the ring's own.
    let narrow = (rng.next_u64() % w as u64) as usize + 1;
    let expected_w = Expected::new(q.view(), ks.view(), vs.view(), &causal(Some(last(w)), None));
    let expected_narrow = Expected::new(q.view(), ks.view(), vs.view(), &causal(Some(last(narrow)), None));
    let max_chunk = if case.one_at_a_time { 1 } else { capacity - w + 1 };
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < len {
        let n = (1 + (rng.next_u64() % max_chunk as u64) as usize).min(len - at);
        chunks.push(n);
        at += n;
    }

    let shape = [batch, kv_heads, d, d];
    for isa in available_isas() {
        let mut ring = KvCache::new(cache_config(shape, capacity, Some(w), dtype)).expect("valid ring");
        let mut plain = KvCache::new(cache_config(shape, len, None, dtype)).expect("valid cache");
        let mut l0 = 0;
        for (step, &n) in chunks.iter().enumerate() {
            append_all(&mut ring, &k, &v, l0, n).expect("chunk within capacity − window + 1");
            append_all(&mut plain, &k, &v, l0, n).expect("room by construction");
            // Step by step: the ring's own window, the same window given at the call, a tighter one.
            let (at_call, plain_window, expected) = match step % 3 {
                0 => (None, last(w), &expected_w),
                1 => (Some(last(w)), last(w), &expected_w),
                _ => (Some(last(narrow)), last(narrow), &expected_narrow),
            };
            let qn = q.rows(0, batch, l0, n);
            let what = format!(
                "{isa:?} {dtype:?} ring w {w} capacity {capacity}, window at call {at_call:?}, positions {l0}..{}",
                l0 + n
            );
            let got = attend(&ring, qn, &causal(at_call, Some(isa))).expect("a valid ring attend");
            expected.check(&what, &got, [0, 0, batch, l0])?;
            let got_plain =
                attend(&plain, qn, &causal(Some(plain_window), Some(isa))).expect("a valid attend");
            expected.check(&format!("{what} (plain cache)"), &got_plain, [0, 0, batch, l0])?;
            l0 += n;
        }
        prop_assert!((0..batch).all(|b| ring.len(b) == Ok(len)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(48))]

    /// Test 3: before and after wrapping, one token at a time and in the largest allowed chunks.
    #[test]
    fn ring_equals_a_plain_cache_with_the_window(case in ring_cases()) {
        check_ring(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Sequences of different lengths in one batch.

#[derive(Clone, Debug)]
struct BatchCase {
    kv_heads: usize,
    group: usize,
    d: usize,
    dv: usize,
    /// Final length of each sequence (2 or 3 of them, some possibly empty).
    lens: Vec<usize>,
    /// A ring of this window and capacity, or a plain cache.
    ring: Option<(usize, usize)>,
    dtype: KvDtype,
    seed: u64,
}

fn batch_cases() -> impl Strategy<Value = BatchCase> {
    (
        1..=2usize,
        select(vec![1usize, 2, 4]),
        select(vec![8usize, 64, 80]),
        select(vec![8usize, 64]),
        prop::collection::vec(0..=70usize, 2..=3),
        prop_oneof![Just(None), (1..=16usize, 0..=6usize).prop_map(|(w, extra)| Some((w, w + extra)))],
        select(vec![KvDtype::F32, KvDtype::F16, KvDtype::Bf16]),
        any::<u64>(),
    )
        .prop_map(|(kv_heads, group, d, dv, lens, ring, dtype, seed)| BatchCase {
            kv_heads,
            group,
            d,
            dv,
            lens,
            ring,
            dtype,
            seed,
        })
}

/// Grows the sequences one at a time in random order by `append`, and after each append attends
/// the newest `q_len` positions of every sequence; each sequence must equal its own batch-1 call.
fn check_batch(case: &BatchCase) -> Result<(), TestCaseError> {
    let BatchCase { kv_heads, d, dv, dtype, .. } = *case;
    let (batch, heads) = (case.lens.len(), kv_heads * case.group);
    let longest = case.lens.iter().copied().max().unwrap_or(0);
    let mut rng = Rng::new(case.seed);
    let q = Tensor::random([batch, heads, longest.max(1), d], &mut rng);
    let k = Tensor::random([batch, kv_heads, longest, d], &mut rng);
    let v = Tensor::random([batch, kv_heads, longest, dv], &mut rng);
    let (ks, vs) = (k.stored(dtype), v.stored(dtype));
    let (window, capacity) = match case.ring {
        Some((w, capacity)) => (Some(w), capacity),
        None => (None, longest + 2),
    };
    // Largest append and, for a wrapped ring, largest q_len whose first window is still stored.
    let max_chunk = window.map_or(7, |w| (capacity - w + 1).min(7));
    let cfg = cache_config([batch, kv_heads, d, dv], capacity, window, dtype);
    let mut plan = Vec::new();
    let mut lens = vec![0; batch];
    while let Some(b) = {
        let growing: Vec<usize> = (0..batch).filter(|&b| lens[b] < case.lens[b]).collect();
        (!growing.is_empty()).then(|| growing[(rng.next_u64() % growing.len() as u64) as usize])
    } {
        let n = 1 + (rng.next_u64() % max_chunk.min(case.lens[b] - lens[b]) as u64) as usize;
        let q_len = 1 + (rng.next_u64() % max_chunk.min(3) as u64) as usize;
        plan.push((b, n, q_len));
        lens[b] += n;
    }

    for isa in available_isas() {
        let mut cache = KvCache::new(cfg).expect("a valid config");
        let mut lens = vec![0; batch];
        for &(b, n, q_len) in &plan {
            append(&mut cache, b, &k, &v, lens[b], n).expect("room by construction");
            lens[b] += n;
            prop_assert_eq!((0..batch).map(|s| cache.len(s).unwrap()).collect::<Vec<_>>(), lens.clone());
            // The newest q_len positions of each sequence; rows before a short sequence's start see
            // no key (any Q row will do there).
            let mut qb = Tensor::filled([batch, heads, q_len, d], 0.0);
            for (s, h, i) in
                (0..batch).flat_map(|s| (0..heads).flat_map(move |h| (0..q_len).map(move |i| (s, h, i))))
            {
                let pos = (lens[s] + i).saturating_sub(q_len);
                for c in 0..d {
                    let at = qb.index([s, h, i, c]);
                    qb.data[at] = q.at([s, h, pos, c]);
                }
            }
            let got = attend(&cache, qb.view(), &causal(None, Some(isa))).expect("a valid attend");
            for (s, &len) in lens.iter().enumerate() {
                let expected = Expected::new(
                    qb.rows(s, 1, 0, q_len),
                    ks.rows(s, 1, 0, len),
                    vs.rows(s, 1, 0, len),
                    &causal(window.map(last), None),
                );
                let what = format!(
                    "{isa:?} {dtype:?} ring {:?}, lengths {lens:?}, q_len {q_len}, sequence {s}",
                    case.ring
                );
                expected.check(&what, &got, [s, 0, 1, 0])?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(48))]

    /// Test 4: plain caches and rings (wrapped or not, sequence by sequence), every dtype.
    #[test]
    fn sequences_of_different_lengths_each_match_their_own_call(case in batch_cases()) {
        check_batch(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Errors, each leaving the cache unchanged; rollback.

/// `[batch, kv_heads, head_dim, value_dim]` of the error tests (4 query heads).
const SMALL: [usize; 4] = [2, 2, 8, 6];
const SMALL_HEADS: usize = 4;

/// K, V and Q of the error tests: `batch` sequences of `len` positions, shaped like [`SMALL`].
struct Fixture {
    k: Tensor,
    v: Tensor,
    q: Tensor,
}

impl Fixture {
    fn new(batch: usize, len: usize, seed: u64) -> Fixture {
        let [_, kv_heads, d, dv] = SMALL;
        let mut rng = Rng::new(seed);
        Fixture {
            k: Tensor::random([batch, kv_heads, len, d], &mut rng),
            v: Tensor::random([batch, kv_heads, len, dv], &mut rng),
            q: Tensor::random([batch, SMALL_HEADS, len, d], &mut rng),
        }
    }

    fn cache(&self, capacity: usize, window: Option<usize>, dtype: KvDtype) -> KvCache {
        let [_, kv_heads, d, dv] = SMALL;
        KvCache::new(cache_config([self.k.shape[0], kv_heads, d, dv], capacity, window, dtype))
            .expect("valid")
    }

    /// What can be observed of `cache`: every sequence's length, and the bits of the output and lse
    /// of attending one query per sequence (Q row 0).
    fn state(&self, cache: &KvCache) -> (Vec<usize>, Vec<u32>, Vec<u32>) {
        let batch = self.q.shape[0];
        let run = attend(cache, self.q.rows(0, batch, 0, 1), &causal(None, None)).expect("a valid attend");
        (
            (0..batch).map(|b| cache.len(b).unwrap()).collect(),
            run.out.bits(),
            run.lse.iter().map(|x| x.to_bits()).collect(),
        )
    }

    /// Asserts that `call` fails as `kind` says and changes nothing observable.
    fn refused(
        &self,
        cache: &mut KvCache,
        what: &str,
        kind: fn(&Error) -> bool,
        call: impl FnOnce(&mut KvCache) -> crate::Result<()>,
    ) {
        let before = self.state(cache);
        match call(cache) {
            Err(e) => assert!(kind(&e), "{what}: wrong error {e:?}"),
            Ok(()) => panic!("{what}: accepted"),
        }
        assert_eq!(self.state(cache), before, "{what}: a refused call changed the cache");
    }
}

fn invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidParameter(_))
}

fn mismatch(e: &Error) -> bool {
    matches!(e, Error::ShapeMismatch(_))
}

#[test]
fn appending_beyond_capacity_is_refused() {
    let f = Fixture::new(2, 8, 1);
    let (k, v) = (&f.k, &f.v);
    let mut cache = f.cache(6, None, KvDtype::F32);
    append_all(&mut cache, k, v, 0, 4).unwrap();
    append(&mut cache, 1, k, v, 4, 1).unwrap();
    f.refused(&mut cache, "3 more into 4 of 6", invalid, |c| append(c, 0, k, v, 4, 3));
    // Sequence 0 has room for 2, sequence 1 for 1: the whole call is refused, neither grows.
    f.refused(&mut cache, "append_all of 2 with room for 1", invalid, |c| append_all(c, k, v, 4, 2));
    append(&mut cache, 0, k, v, 4, 2).unwrap();
    f.refused(&mut cache, "1 into a full sequence", invalid, |c| append(c, 0, k, v, 6, 1));
    f.refused(&mut cache, "append_all into a full sequence", invalid, |c| append_all(c, k, v, 5, 1));
    append(&mut cache, 1, k, v, 5, 1).unwrap();
    // Nothing into a full cache is fine.
    append_all(&mut cache, k, v, 6, 0).unwrap();
    assert_eq!((cache.len(0), cache.len(1)), (Ok(6), Ok(6)));
}

#[test]
fn ring_chunks_beyond_capacity_minus_window_plus_one_are_refused() {
    let f = Fixture::new(2, 40, 2);
    let (k, v) = (&f.k, &f.v);
    // Capacity 8, window 3: at most 6 positions per append, before and after wrapping.
    let mut cache = f.cache(8, Some(3), KvDtype::F16);
    for round in 0..4 {
        let at = cache.len(0).unwrap();
        let what = format!("round {round}, at {at}");
        f.refused(&mut cache, &format!("{what}: append_all of 7"), invalid, |c| append_all(c, k, v, at, 7));
        f.refused(&mut cache, &format!("{what}: append of 7"), invalid, |c| append(c, 1, k, v, at, 7));
        append_all(&mut cache, k, v, at, 6).unwrap();
    }
    assert_eq!((cache.len(0), cache.len(1)), (Ok(24), Ok(24)));
}

#[test]
fn append_views_of_the_wrong_shape_are_refused() {
    let f = Fixture::new(2, 8, 3);
    let (k, v) = (&f.k, &f.v);
    let mut cache = f.cache(8, None, KvDtype::Bf16);
    append_all(&mut cache, k, v, 0, 2).unwrap();
    let [_, kv_heads, d, dv] = SMALL;
    let other = |shape| Tensor::filled(shape, 0.5);
    let cases: Vec<(&str, Tensor, Tensor)> = vec![
        ("3 KV heads", other([1, 3, 1, d]), other([1, 3, 1, dv])),
        ("1 KV head", other([1, 1, 1, d]), other([1, 1, 1, dv])),
        ("K dim 9", other([1, kv_heads, 1, d + 1]), other([1, kv_heads, 1, dv])),
        ("K dim 7", other([1, kv_heads, 1, d - 1]), other([1, kv_heads, 1, dv])),
        ("V dim 8", other([1, kv_heads, 1, d]), other([1, kv_heads, 1, d])),
        ("V of 2 positions", other([1, kv_heads, 1, d]), other([1, kv_heads, 2, dv])),
        ("K of 0 positions", other([1, kv_heads, 0, d]), other([1, kv_heads, 1, dv])),
        ("batch 2 to one sequence", other([2, kv_heads, 1, d]), other([2, kv_heads, 1, dv])),
    ];
    for (what, bk, bv) in &cases {
        f.refused(&mut cache, what, mismatch, |c| c.append(1, bk.view(), bv.view()));
    }
    // append_all takes the whole batch.
    let (k1, v1) = (other([1, kv_heads, 1, d]), other([1, kv_heads, 1, dv]));
    f.refused(&mut cache, "append_all of batch 1", mismatch, |c| c.append_all(k1.view(), v1.view()));
    let (k3, v3) = (other([3, kv_heads, 1, d]), other([3, kv_heads, 1, dv]));
    f.refused(&mut cache, "append_all of batch 3", mismatch, |c| c.append_all(k3.view(), v3.view()));
    let (k2, v2) = (other([2, kv_heads, 1, d]), other([2, kv_heads, 1, d]));
    f.refused(&mut cache, "append_all with V dim 8", mismatch, |c| c.append_all(k2.view(), v2.view()));
}

#[test]
fn sequence_out_of_range_is_refused() {
    let f = Fixture::new(2, 8, 4);
    let (k, v) = (&f.k, &f.v);
    for window in [None, Some(2)] {
        let mut cache = f.cache(4, window, KvDtype::F32);
        append_all(&mut cache, k, v, 0, 2).unwrap();
        let k1 = f.k.rows(0, 1, 0, 1);
        let v1 = f.v.rows(0, 1, 0, 1);
        f.refused(&mut cache, "append to sequence 2 of 2", mismatch, |c| c.append(2, k1, v1));
        f.refused(&mut cache, "append to sequence usize::MAX", mismatch, |c| c.append(usize::MAX, k1, v1));
        f.refused(&mut cache, "truncate sequence 2 of 2", mismatch, |c| c.truncate(2, 0));
        assert!(matches!(cache.len(2), Err(Error::ShapeMismatch(_))), "len of a sequence out of range");
    }
}

#[test]
fn truncate_beyond_the_current_length_is_refused() {
    let f = Fixture::new(2, 8, 5);
    let (k, v) = (&f.k, &f.v);
    for window in [None, Some(4)] {
        let mut cache = f.cache(8, window, KvDtype::F32);
        append_all(&mut cache, k, v, 0, 4).unwrap();
        append(&mut cache, 1, k, v, 4, 1).unwrap();
        f.refused(&mut cache, "truncate 4 to 5", invalid, |c| c.truncate(0, 5));
        f.refused(&mut cache, "truncate 5 to usize::MAX", invalid, |c| c.truncate(1, usize::MAX));
        // To the current length: nothing changes.
        let before = f.state(&cache);
        cache.truncate(0, 4).unwrap();
        assert_eq!(f.state(&cache), before);
        // To the start (lengths are `usize`: there is nothing before it): an empty sequence,
        // whose query sees no key.
        cache.truncate(0, 0).unwrap();
        let (lens, out, lse) = f.state(&cache);
        assert_eq!(lens, [0, 5]);
        let rows = SMALL_HEADS * SMALL[3];
        assert!(out[..rows].iter().all(|&x| x == 0), "an empty sequence attends to 0");
        assert!(lse[..SMALL_HEADS].iter().all(|&x| x == f32::NEG_INFINITY.to_bits()));
        // An empty sequence refills from position 0.
        append(&mut cache, 0, k, v, 0, 4).unwrap();
        assert_eq!(f.state(&cache), before, "window {window:?}: refilled");
    }
}

#[test]
fn window_outside_1_to_capacity_is_refused() {
    let [batch, kv_heads, head_dim, value_dim] = SMALL;
    let cfg = |capacity, window| KvCacheConfig {
        batch,
        kv_heads,
        head_dim,
        value_dim,
        capacity,
        dtype: KvDtype::F32,
        window,
    };
    for (capacity, window) in [(8, 0), (8, 9), (0, 1), (0, 0), (8, usize::MAX)] {
        let result = KvCache::new(cfg(capacity, Some(window)));
        assert!(
            matches!(result, Err(Error::InvalidParameter(_))),
            "capacity {capacity}, window {window}: {:?}",
            result.map(|c| *c.config())
        );
    }
    for (capacity, window) in [(8, 1), (8, 8), (1, 1)] {
        KvCache::new(cfg(capacity, Some(window))).unwrap();
    }
    // Sizes that overflow are refused before allocating.
    assert!(matches!(KvCache::new(cfg(usize::MAX / 2, None)), Err(Error::InvalidParameter(_))));
}

#[test]
fn attend_with_a_wider_window_than_the_ring_is_refused() {
    let f = Fixture::new(2, 20, 6);
    let (k, v) = (&f.k, &f.v);
    let mut ring = f.cache(6, Some(4), KvDtype::F32);
    let q = f.q.rows(0, 2, 0, 1);
    // Before wrapping, and after.
    for len in [3, 6, 8, 20] {
        for p in ring.len(0).unwrap()..len {
            append_all(&mut ring, k, v, p, 1).unwrap();
        }
        for left in [Some(4), Some(5), Some(usize::MAX)] {
            let mut out = Tensor::filled([2, SMALL_HEADS, 1, SMALL[3]], SENTINEL);
            let params = causal(Some(Window { left, right: Some(0) }), None);
            let result = ring.attend(q, out.view_mut(), None, &params);
            assert!(
                matches!(result, Err(Error::InvalidParameter(_))),
                "len {len}, left {left:?}: {result:?}"
            );
            assert!(out.data.iter().all(|&x| x == SENTINEL), "a refused attend wrote to the output");
        }
        // The ring's own window, given or not (an unbounded left side means the ring's).
        let own = attend(&ring, q, &causal(None, None)).unwrap();
        for window in [last(4), Window { left: None, right: Some(0) }, Window { left: None, right: None }] {
            let given = attend(&ring, q, &causal(Some(window), None)).unwrap();
            assert_eq!(given.out.bits(), own.out.bits(), "len {len}, {window:?}");
        }
    }
}

#[test]
fn refused_attend_calls_leave_the_output_untouched() {
    let f = Fixture::new(2, 12, 7);
    let (k, v) = (&f.k, &f.v);
    let [batch, _, d, dv] = SMALL;
    let h = SMALL_HEADS;
    let mut plain = f.cache(12, None, KvDtype::F32);
    let mut ring = f.cache(4, Some(3), KvDtype::F16);
    for p in 0..7 {
        append_all(&mut plain, k, v, p, 1).unwrap();
        append_all(&mut ring, k, v, p, 1).unwrap();
        // (q shape, out shape, lse shape): each wrong in one way.
        let cases = [
            ([1, h, 1, d], [1, h, 1, dv], [1, h, 1, 1]),
            ([3, h, 1, d], [3, h, 1, dv], [3, h, 1, 1]),
            ([batch, 3, 1, d], [batch, 3, 1, dv], [batch, 3, 1, 1]),
            ([batch, h, 1, d + 1], [batch, h, 1, dv], [batch, h, 1, 1]),
            ([batch, h, 1, d], [batch, h, 1, dv + 1], [batch, h, 1, 1]),
            ([batch, h, 1, d], [batch, h, 2, dv], [batch, h, 1, 1]),
            ([batch, h, 1, d], [batch, h, 1, dv], [batch, h, 2, 1]),
        ];
        for (qs, os, ls) in cases {
            for (name, cache) in [("plain", &plain), ("ring", &ring)] {
                let q = Tensor::filled(qs, 0.25);
                let mut out = Tensor::filled(os, SENTINEL);
                let mut lse = vec![SENTINEL; ls.iter().product()];
                let lse_view = View4Mut::bhld(&mut lse, ls).unwrap();
                let result = cache.attend(q.view(), out.view_mut(), Some(lse_view), &causal(None, None));
                assert!(
                    matches!(result, Err(Error::ShapeMismatch(_))),
                    "{name} at {p}: Q {qs:?}, out {os:?}, lse {ls:?}: {result:?}"
                );
                assert!(
                    out.data.iter().chain(&lse).all(|&x| x == SENTINEL),
                    "{name} at {p}: a refused attend wrote to the output"
                );
            }
        }
    }
}

/// A ring of one sequence (batch 1, shaped like [`SMALL`]) fed positions `0..cur` one at a time.
fn ring_of(f: &Fixture, capacity: usize, w: usize, cur: usize) -> KvCache {
    let mut ring = f.cache(capacity, Some(w), KvDtype::F32);
    for p in 0..cur {
        append_all(&mut ring, &f.k, &f.v, p, 1).expect("one position at a time always fits");
    }
    ring
}

/// Whether attending the newest `q_len` positions of `cache` (holding the first `len` true
/// positions of `f`) either is refused or gives the windowed reference.
fn refused_or_exact(
    f: &Fixture,
    cache: &KvCache,
    w: usize,
    len: usize,
    q_len: usize,
) -> Result<(), TestCaseError> {
    let q = f.q.rows(0, 1, len - q_len, q_len);
    let Ok(got) = attend(cache, q, &causal(None, None)) else { return Ok(()) };
    let expected =
        Expected::new(q, f.k.rows(0, 1, 0, len), f.v.rows(0, 1, 0, len), &causal(Some(last(w)), None));
    expected.check("attend", &got, [0, 0, 1, 0])
}

/// A wrapped ring of capacity C and window w holds positions `cur − C .. cur`; the next query
/// (position `len`, once re-appended) sees `len + 1 − w ..= len`. A truncation is recoverable
/// exactly when those are all still stored, and then append + attend gives the reference.
#[test]
fn ring_truncate_past_the_oldest_recoverable_position_is_refused() {
    for capacity in [2, 4, 7] {
        let f = Fixture::new(1, 3 * capacity + 1, capacity as u64);
        for w in 1..=capacity {
            for cur in capacity + 1..=3 * capacity {
                let filled = ring_of(&f, capacity, w, cur);
                for len in 0..=cur {
                    let mut cache = filled.clone();
                    let what = format!("capacity {capacity}, window {w}: {cur} positions truncated to {len}");
                    if len + 1 < cur - capacity + w {
                        f.refused(&mut cache, &what, invalid, |c| c.truncate(0, len));
                        continue;
                    }
                    cache.truncate(0, len).unwrap_or_else(|e| panic!("{what}: {e}"));
                    append_all(&mut cache, &f.k, &f.v, len, 1).unwrap();
                    refused_or_exact(&f, &cache, w, len + 1, 1).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(attend(&cache, f.q.rows(0, 1, len, 1), &causal(None, None)).is_ok(), "{what}");
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct RollbackCase {
    /// `(window, capacity)` of a ring, or a plain cache.
    ring: Option<(usize, usize)>,
    dtype: KvDtype,
    prefix: usize,
    draft: usize,
    accepted: usize,
    rest: usize,
    /// Rejected draft positions hold NaN (else other random values).
    nan_draft: bool,
    seed: u64,
}

fn rollback_cases() -> impl Strategy<Value = RollbackCase> {
    (
        prop_oneof![Just(None), (1..=12usize, 0..=6usize).prop_map(|(w, extra)| Some((w, w + extra)))],
        select(vec![KvDtype::F32, KvDtype::F16, KvDtype::Bf16]),
        0..=40usize,
        1..=7usize,
        0.0..=1.0f64,
        1..=30usize,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(ring, dtype, prefix, draft, frac, rest, nan_draft, seed)| {
            // A ring takes at most capacity − window + 1 positions per append.
            let draft = ring.map_or(draft, |(w, c)| draft.min(c - w + 1));
            let accepted = (frac * draft as f64) as usize;
            RollbackCase { ring, dtype, prefix, draft, accepted, rest, nan_draft, seed }
        })
}

/// Speculative decoding on sequence 0 of 2: a draft of `draft` positions is appended and
/// attended, then rolled back to `accepted` of them; the rest of the sequence must then give,
/// bit for bit, what a cache that never saw the rejected positions gives (and the reference).
fn check_rollback(case: &RollbackCase) -> Result<(), TestCaseError> {
    let RollbackCase { dtype, prefix, draft, accepted, rest, .. } = *case;
    let total = prefix + accepted + rest;
    let f = Fixture::new(2, total + draft, case.seed);
    let (k, v) = (&f.k, &f.v);
    let (window, capacity) = case.ring.map_or((None, total + draft), |(w, c)| (Some(w), c));
    let max_chunk = window.map_or(usize::MAX, |w| capacity - w + 1);
    // The draft: `accepted` true positions, then rejected ones.
    let mut rng = Rng::new(case.seed ^ 0x5eed);
    let garbage = |rng: &mut Rng| if case.nan_draft { f32::NAN } else { rng.uniform() };
    let [_, kv_heads, d, dv] = SMALL;
    let mut dk = Tensor::filled([1, kv_heads, draft, d], 0.0);
    let mut dvt = Tensor::filled([1, kv_heads, draft, dv], 0.0);
    for (t, src) in [(&mut dk, k), (&mut dvt, v)] {
        let dim = t.shape[3];
        for idx in
            (0..kv_heads).flat_map(|h| (0..draft).flat_map(move |i| (0..dim).map(move |c| [0, h, i, c])))
        {
            let [_, h, i, c] = idx;
            let at = t.index(idx);
            t.data[at] = if i < accepted { src.at([0, h, prefix + i, c]) } else { garbage(&mut rng) };
        }
    }
    let chunks = |from: usize, to: usize| {
        let mut out = Vec::new();
        let mut at = from;
        while at < to {
            let n = (1 + (at * 7 + 3) % 5).min(max_chunk).min(to - at);
            out.push((at, n));
            at += n;
        }
        out
    };
    let expected = Expected::new(
        f.q.view(),
        k.stored(dtype).view(),
        v.stored(dtype).view(),
        &causal(window.map(last), None),
    );

    for isa in available_isas() {
        let params = causal(None, Some(isa));
        let mut drafted = f.cache(capacity, window, dtype);
        let mut clean = f.cache(capacity, window, dtype);
        for (at, n) in chunks(0, prefix) {
            append_all(&mut drafted, k, v, at, n).unwrap();
            append_all(&mut clean, k, v, at, n).unwrap();
        }
        drafted.append(0, dk.view(), dvt.view()).unwrap();
        attend(&drafted, f.q.rows(0, 2, prefix, draft), &params).unwrap();
        drafted.truncate(0, prefix + accepted).map_err(|e| TestCaseError::fail(format!("{case:?}: {e}")))?;
        for (at, n) in chunks(prefix, prefix + accepted) {
            append(&mut drafted, 1, k, v, at, n).unwrap();
            append_all(&mut clean, k, v, at, n).unwrap();
        }
        prop_assert_eq!(drafted.len(0), clean.len(0));
        prop_assert_eq!(drafted.len(1), clean.len(1));
        for (at, n) in chunks(prefix + accepted, total) {
            append_all(&mut drafted, k, v, at, n).unwrap();
            append_all(&mut clean, k, v, at, n).unwrap();
            let q = f.q.rows(0, 2, at, n);
            let (got, want) = (attend(&drafted, q, &params).unwrap(), attend(&clean, q, &params).unwrap());
            let what = format!("{isa:?} positions {at}..{}", at + n);
            expected.check(&what, &got, [0, 0, 2, at])?;
            prop_assert_eq!(got.out.bits(), want.out.bits(), "{}: rolled back ≠ never drafted", what);
            prop_assert_eq!(&got.lse, &want.lse, "{}: lse", what);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// Test 5: truncate then re-append reproduces never having appended the rejected positions.
    #[test]
    fn rollback_then_reappend_equals_never_drafting(case in rollback_cases()) {
        check_rollback(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Ring bookkeeping: every accepted call must leave a cache that attends exactly or refuses.

/// Before a ring wraps nothing has been overwritten, so every rollback is recoverable.
#[test]
fn ring_truncate_before_wrapping_accepts_any_length() {
    for capacity in 1..=6 {
        let f = Fixture::new(1, capacity + 1, 10 + capacity as u64);
        for w in 1..=capacity {
            for cur in 0..=capacity {
                for len in 0..=cur {
                    let mut cache = ring_of(&f, capacity, w, cur);
                    let what = format!("capacity {capacity}, window {w}: {cur} positions truncated to {len}");
                    cache.truncate(0, len).unwrap_or_else(|e| panic!("{what}: refused: {e}"));
                    append_all(&mut cache, &f.k, &f.v, len, 1).unwrap();
                    let q = f.q.rows(0, 1, len, 1);
                    let got = attend(&cache, q, &causal(None, None)).unwrap();
                    let expected = Expected::new(
                        q,
                        f.k.rows(0, 1, 0, len + 1),
                        f.v.rows(0, 1, 0, len + 1),
                        &causal(Some(last(w)), None),
                    );
                    expected.check(&what, &got, [0, 0, 1, 0]).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

/// Two truncations in a row must not reach positions that a single one could not: the slots of
/// rolled-back positions stay overwritten.
#[test]
fn ring_truncating_twice_cannot_reach_overwritten_positions() {
    for capacity in 2..=5 {
        let f = Fixture::new(1, 2 * capacity + 1, 20 + capacity as u64);
        for w in 1..=capacity {
            for cur in capacity + 1..=2 * capacity {
                for mid in 0..=cur {
                    for len in 0..=mid {
                        let mut cache = ring_of(&f, capacity, w, cur);
                        if cache.truncate(0, mid).is_err() || cache.truncate(0, len).is_err() {
                            continue;
                        }
                        append_all(&mut cache, &f.k, &f.v, len, 1).unwrap();
                        refused_or_exact(&f, &cache, w, len + 1, 1).unwrap_or_else(|e| {
                            panic!(
                                "capacity {capacity}, window {w}: {cur} positions appended one at a time, \
                                 truncated to {mid}, then to {len} (both accepted), position {len} \
                                 re-appended; attending it reads an overwritten slot: {e}"
                            )
                        });
                    }
                }
            }
        }
    }
}

/// On a wrapped ring, the first of `q_len` newest queries sees back to `cur − q_len + 1 − w`;
/// beyond `q_len = capacity − w + 1` that position is overwritten: refuse, do not drop keys.
#[test]
fn ring_attend_of_queries_whose_window_was_overwritten_is_refused_or_exact() {
    for capacity in 2..=5 {
        let f = Fixture::new(1, 2 * capacity + 1, 30 + capacity as u64);
        for w in 1..=capacity {
            for cur in capacity + 1..=2 * capacity {
                let cache = ring_of(&f, capacity, w, cur);
                for q_len in 1..=capacity {
                    refused_or_exact(&f, &cache, w, cur, q_len).unwrap_or_else(|e| {
                        panic!(
                            "capacity {capacity}, window {w}: {cur} positions appended one at a time; \
                             attending the newest {q_len} silently drops keys: {e}"
                        )
                    });
                }
            }
        }
    }
}

/// Attending right after an accepted rollback (before re-appending) asks the newest kept
/// position's query, which sees back to `len − w`: refuse, or be exact.
#[test]
fn ring_attend_right_after_truncate_is_refused_or_exact() {
    for capacity in 2..=5 {
        let f = Fixture::new(1, 2 * capacity + 1, 40 + capacity as u64);
        for w in 1..=capacity {
            for cur in capacity + 1..=2 * capacity {
                for len in 1..=cur {
                    let mut cache = ring_of(&f, capacity, w, cur);
                    if cache.truncate(0, len).is_err() {
                        continue;
                    }
                    refused_or_exact(&f, &cache, w, len, 1).unwrap_or_else(|e| {
                        panic!(
                            "capacity {capacity}, window {w}: {cur} positions appended one at a time, \
                             truncated to {len} (accepted); attending position {} reads an overwritten \
                             slot: {e}",
                            len - 1
                        )
                    });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Refused calls leave no trace: afterwards the cache behaves, bit for bit, as a twin that never
// saw the call.

/// What a caller can observe of a cache holding positions of a [`Fixture`].
#[derive(Debug, PartialEq)]
struct Observed {
    /// Per sequence: length, held positions, rollback floor.
    held: Vec<(usize, std::ops::Range<usize>, usize)>,
    key_columns: usize,
    /// Bits of output and lse of attending the newest 1, 2 and 3 queries (or the error).
    attends: Vec<crate::Result<(Vec<u32>, Vec<u32>)>>,
    /// Per sequence, whether `truncate` to each length up to one past the current one is accepted.
    truncations: Vec<Vec<bool>>,
    /// Bits of attending one query after rolling every sequence back to its floor and appending
    /// one position: this reads the oldest slots still held, which a refused call must not touch.
    after_rollback: crate::Result<(Vec<u32>, Vec<u32>)>,
}

fn bits(run: Run) -> (Vec<u32>, Vec<u32>) {
    (run.out.bits(), run.lse.iter().map(|x| x.to_bits()).collect())
}

fn observe(f: &Fixture, cache: &KvCache) -> Observed {
    let batch = cache.config().batch;
    let seqs = 0..batch;
    let held = seqs
        .clone()
        .map(|b| (cache.len(b).unwrap(), cache.positions(b).unwrap(), cache.rollback_floor(b).unwrap()))
        .collect::<Vec<_>>();
    let attends =
        (1..=3).map(|n| attend(cache, f.q.rows(0, batch, 0, n), &causal(None, None)).map(bits)).collect();
    let truncations = held
        .iter()
        .enumerate()
        .map(|(b, &(len, _, _))| (0..=len + 1).map(|to| cache.clone().truncate(b, to).is_ok()).collect())
        .collect();
    let mut rolled = cache.clone();
    for (b, (_, _, floor)) in held.iter().enumerate() {
        rolled.truncate(b, *floor).unwrap();
        append(&mut rolled, b, &f.k, &f.v, *floor, 1).unwrap();
    }
    let after_rollback = attend(&rolled, f.q.rows(0, batch, 0, 1), &causal(None, None)).map(bits);
    Observed { held, key_columns: cache.key_columns(), attends, truncations, after_rollback }
}

/// Asserts that `call` is refused (with an error `kind` accepts) and leaves no trace: the cache
/// and a twin that never saw the call observe alike now and after each of a few more appends.
fn leaves_no_trace(
    f: &Fixture,
    cache: &KvCache,
    what: &str,
    kind: fn(&Error) -> bool,
    call: impl FnOnce(&mut KvCache) -> crate::Result<()>,
) {
    let (mut refused, mut twin) = (cache.clone(), cache.clone());
    match call(&mut refused) {
        Err(e) => assert!(kind(&e), "{what}: wrong error {e:?}"),
        Ok(()) => panic!("{what}: accepted"),
    }
    for round in 0..3 {
        assert_eq!(observe(f, &refused), observe(f, &twin), "{what}: differs from its twin (round {round})");
        for c in [&mut refused, &mut twin] {
            for b in 0..c.config().batch {
                let len = c.len(b).unwrap();
                append(c, b, &f.k, &f.v, len, 1).unwrap();
            }
        }
    }
}

/// Fills `chunk` (`[batch, heads, n, dim]`) with the next `n` positions of each sequence of `src`,
/// sequence b holding `lens[b]` so far.
fn copy_next(chunk: &mut Tensor, src: &Tensor, lens: &[usize]) {
    let [batch, heads, n, dim] = chunk.shape;
    for idx in (0..batch).flat_map(|b| {
        (0..heads).flat_map(move |h| (0..n).flat_map(move |i| (0..dim).map(move |c| [b, h, i, c])))
    }) {
        let [b, h, i, c] = idx;
        let at = chunk.index(idx);
        chunk.data[at] = src.at([b, h, lens[b] + i, c]);
    }
}

/// Caches of two sequences in the states where a refused call could do harm: a plain cache, a
/// full ring that has not wrapped (window 4, capacity 6), and wrapped rings (f32 and f16) whose
/// sequences hold different positions.
fn refusal_states(f: &Fixture) -> Vec<(&'static str, KvCache)> {
    let fill = |capacity, window, dtype, lens: [usize; 2]| {
        let mut cache = f.cache(capacity, window, dtype);
        for (b, len) in lens.into_iter().enumerate() {
            for p in 0..len {
                append(&mut cache, b, &f.k, &f.v, p, 1).unwrap();
            }
        }
        cache
    };
    vec![
        ("plain", fill(16, None, KvDtype::F32, [5, 3])),
        ("full ring", fill(6, Some(4), KvDtype::F32, [6, 6])),
        ("wrapped ring", fill(6, Some(4), KvDtype::F32, [9, 7])),
        ("wrapped f16 ring", fill(6, Some(3), KvDtype::F16, [11, 8])),
    ]
}

/// The case first: on a full ring (window 4, capacity 6) an `append_and_attend` refused for
/// a window wider than the ring must not move the oldest recoverable position, so `truncate(0, 5)`
/// stays accepted. Then every other refusal of `append_and_attend`, on every state.
#[test]
fn refused_append_and_attend_leaves_no_trace() {
    let f = Fixture::new(2, 40, 50);
    let [_, kv_heads, d, dv] = SMALL;
    let h = SMALL_HEADS;
    for (state, cache) in refusal_states(&f) {
        let lens: Vec<usize> = (0..2).map(|b| cache.len(b).unwrap()).collect();
        // The next `n` positions of each sequence, as one batch chunk.
        let chunk = |n: usize| -> (Tensor, Tensor) {
            let mut k = Tensor::filled([2, kv_heads, n, d], 0.0);
            let mut v = Tensor::filled([2, kv_heads, n, dv], 0.0);
            for (t, src) in [(&mut k, &f.k), (&mut v, &f.v)] {
                copy_next(t, src, &lens);
            }
            (k, v)
        };
        let ring = cache.config().window.is_some();
        let max_n = if ring { 3 } else { 2 };
        for n in 1..=max_n {
            let (k, v) = chunk(n);
            let q = Tensor::filled([2, h, n, d], 0.5);
            let refuse = |what: &str,
                          kind: fn(&Error) -> bool,
                          params: AttentionParams<'_>,
                          q_shape,
                          out_shape,
                          lse_shape: [usize; 4]| {
                let what = format!("{state}, chunk of {n}: {what}");
                leaves_no_trace(&f, &cache, &what, kind, |c| {
                    let q = Tensor::filled(q_shape, 0.5);
                    let mut out = Tensor::filled(out_shape, SENTINEL);
                    let mut lse = vec![SENTINEL; lse_shape.iter().product()];
                    let r = c.append_and_attend(
                        (k.view(), v.view()),
                        q.view(),
                        out.view_mut(),
                        Some(View4Mut::bhld(&mut lse, lse_shape).unwrap()),
                        &params,
                    );
                    assert!(out.data.iter().chain(&lse).all(|&x| x == SENTINEL), "{what}: wrote the output");
                    r
                });
            };
            let (qs, os, ls) = (q.shape, [2, h, n, dv], [2, h, n, 1]);
            if ring {
                for left in [Some(4), Some(9), Some(usize::MAX)] {
                    let params = causal(Some(Window { left, right: Some(0) }), None);
                    refuse(&format!("window left {left:?}"), invalid, params, qs, os, ls);
                }
                // The first of 7 queries reaches back past what the ring holds.
                refuse("7 queries", invalid, causal(None, None), [2, h, 7, d], [2, h, 7, dv], [2, h, 7, 1]);
            }
            let lens_given = [1, 1];
            refuse(
                "key lengths given",
                invalid,
                AttentionParams { key_lengths: Some(&lens_given), ..causal(None, None) },
                qs,
                os,
                ls,
            );
            for scale in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
                refuse(
                    &format!("scale {scale}"),
                    invalid,
                    AttentionParams { scale: Some(scale), ..causal(None, None) },
                    qs,
                    os,
                    ls,
                );
            }
            let mut after = cache.clone();
            after.append_all(k.view(), v.view()).unwrap();
            let cols = after.key_columns();
            for width in [cols - 1, cols + 1, cache.config().capacity + 1] {
                let bias = Tensor::filled([2, 1, n, width], 0.0);
                let params = AttentionParams { bias: Some(bias.view()), ..causal(None, None) };
                refuse(&format!("bias of {width} columns"), mismatch, params, qs, os, ls);
                let mask_bits = vec![true; 2 * n * width];
                let mask = View4::bhld(&mask_bits, [2, 1, n, width]).unwrap();
                let params = AttentionParams { mask: Some(mask), ..causal(None, None) };
                refuse(&format!("mask of {width} columns"), mismatch, params, qs, os, ls);
            }
            refuse("Q with 3 heads", mismatch, causal(None, None), [2, 3, n, d], [2, 3, n, dv], [2, 3, n, 1]);
            refuse("Q of batch 1", mismatch, causal(None, None), [1, h, n, d], [1, h, n, dv], [1, h, n, 1]);
            refuse("Q dim 9", mismatch, causal(None, None), [2, h, n, d + 1], os, ls);
            refuse("output dim 7", mismatch, causal(None, None), qs, [2, h, n, dv - 1], ls);
            refuse("lse one row long", mismatch, causal(None, None), qs, os, [2, h, n + 1, 1]);
        }
        // Chunks the cache refuses before attending.
        let room = if ring { 6 - cache.config().window.unwrap() + 1 } else { 16 - lens[0] };
        let (k, v) = chunk(room + 1);
        let q = Tensor::filled([2, h, room + 1, d], 0.5);
        leaves_no_trace(&f, &cache, &format!("{state}: chunk of {}", room + 1), invalid, |c| {
            let mut out = Tensor::filled([2, h, room + 1, dv], SENTINEL);
            c.append_and_attend((k.view(), v.view()), q.view(), out.view_mut(), None, &causal(None, None))
        });
        let (k1, v1) = (Tensor::filled([1, kv_heads, 1, d], 0.5), Tensor::filled([1, kv_heads, 1, dv], 0.5));
        let q1 = Tensor::filled([2, h, 1, d], 0.5);
        leaves_no_trace(&f, &cache, &format!("{state}: chunk of batch 1"), mismatch, |c| {
            let mut out = Tensor::filled([2, h, 1, dv], SENTINEL);
            c.append_and_attend((k1.view(), v1.view()), q1.view(), out.view_mut(), None, &causal(None, None))
        });
    }
}

/// Every refusal of `append`, `append_all`, `truncate` and `reset`, on every state.
#[test]
fn refused_appends_truncations_and_resets_leave_no_trace() {
    let f = Fixture::new(2, 40, 51);
    let [_, kv_heads, d, dv] = SMALL;
    for (state, cache) in refusal_states(&f) {
        let cfg = *cache.config();
        let room = cfg.window.map_or_else(|| cfg.capacity - cache.len(0).unwrap(), |w| cfg.capacity - w + 1);
        let at = |b: usize| cache.len(b).unwrap();
        let no_trace =
            |what: &str, kind: fn(&Error) -> bool, call: &dyn Fn(&mut KvCache) -> crate::Result<()>| {
                leaves_no_trace(&f, &cache, &format!("{state}: {what}"), kind, call)
            };
        no_trace("append beyond the room", invalid, &|c| append(c, 0, &f.k, &f.v, at(0), room + 1));
        no_trace("append_all beyond the room", invalid, &|c| {
            c.append_all(f.k.rows(0, 2, 0, room + 1), f.v.rows(0, 2, 0, room + 1))
        });
        no_trace("append to sequence 2", mismatch, &|c| {
            c.append(2, f.k.rows(0, 1, 0, 1), f.v.rows(0, 1, 0, 1))
        });
        let (k, v) = (Tensor::filled([1, kv_heads, 1, d], 0.5), Tensor::filled([1, kv_heads, 1, dv], 0.5));
        let (k3, v3) = (Tensor::filled([1, 3, 1, d], 0.5), Tensor::filled([1, 3, 1, dv], 0.5));
        no_trace("append of 3 heads", mismatch, &|c| c.append(0, k3.view(), v3.view()));
        no_trace("append with V as K", mismatch, &|c| c.append(0, k.view(), k.view()));
        no_trace("append_all of batch 1", mismatch, &|c| c.append_all(k.view(), v.view()));
        if cfg.dtype != KvDtype::F32 {
            // One value past f16's range, in the last row of a chunk whose first rows are fine.
            let mut big = f.v.clone();
            let last = big.index([0, kv_heads - 1, at(0) + 1, dv - 1]);
            big.data[last] = 1e6;
            no_trace("a value that overflows f16", invalid, &|c| append(c, 0, &f.k, &big, at(0), 2));
        }
        no_trace("truncate past the length", invalid, &|c| c.truncate(1, at(1) + 1));
        no_trace("truncate to usize::MAX", invalid, &|c| c.truncate(0, usize::MAX));
        no_trace("truncate sequence 2", mismatch, &|c| c.truncate(2, 0));
        no_trace("reset sequence 2", mismatch, &|c| c.reset(2));
        let floor = cache.rollback_floor(0).unwrap();
        if floor > 0 {
            no_trace("truncate below the floor", invalid, &|c| c.truncate(0, floor - 1));
            no_trace("truncate to 0", invalid, &|c| c.truncate(0, 0));
        }
    }
}

/// `append_and_attend` gives bit for bit what `append_all` then `attend` give, whether it writes
/// first (free slots) or attends first (a ring overwriting held positions).
#[test]
fn append_and_attend_equals_append_all_then_attend() {
    let f = Fixture::new(2, 40, 52);
    let [_, kv_heads, d, dv] = SMALL;
    for (state, cache) in refusal_states(&f) {
        let ring = cache.config().window.is_some();
        let lens: Vec<usize> = (0..2).map(|b| cache.len(b).unwrap()).collect();
        for n in 1..=3 {
            let mut k = Tensor::filled([2, kv_heads, n, d], 0.0);
            let mut v = Tensor::filled([2, kv_heads, n, dv], 0.0);
            copy_next(&mut k, &f.k, &lens);
            copy_next(&mut v, &f.v, &lens);
            if !ring && n > 2 {
                continue;
            }
            let q = f.q.rows(0, 2, 0, n);
            let (mut one, mut two) = (cache.clone(), cache.clone());
            let mut out = Tensor::filled([2, SMALL_HEADS, n, dv], SENTINEL);
            let mut lse = vec![SENTINEL; 2 * SMALL_HEADS * n];
            one.append_and_attend(
                (k.view(), v.view()),
                q,
                out.view_mut(),
                Some(View4Mut::bhld(&mut lse, [2, SMALL_HEADS, n, 1]).unwrap()),
                &causal(None, None),
            )
            .unwrap();
            two.append_all(k.view(), v.view()).unwrap();
            let want = attend(&two, q, &causal(None, None)).unwrap();
            assert_eq!(bits(Run { out, lse }), bits(want), "{state}, chunk of {n}");
            assert_eq!(observe(&f, &one), observe(&f, &two), "{state}, chunk of {n}: state");
        }
    }
}

#[test]
fn key_lengths_set_by_the_caller_are_refused() {
    let f = Fixture::new(2, 8, 53);
    let mut cache = f.cache(8, None, KvDtype::F32);
    append_all(&mut cache, &f.k, &f.v, 0, 4).unwrap();
    for lens in [[4, 4], [2, 3], [0, 0]] {
        let params = AttentionParams { key_lengths: Some(&lens), ..causal(None, None) };
        let result = attend(&cache, f.q.rows(0, 2, 0, 1), &params);
        assert!(matches!(result, Err(Error::InvalidParameter(_))), "{lens:?}: {:?}", result.map(bits));
    }
}

/// `rollback_floor` is exactly the shortest length `truncate` accepts, on every small ring.
#[test]
fn rollback_floor_is_the_shortest_accepted_truncation() {
    for capacity in 1..=6 {
        let f = Fixture::new(1, 3 * capacity + 1, 60 + capacity as u64);
        for w in 1..=capacity {
            for cur in 0..=3 * capacity {
                let cache = ring_of(&f, capacity, w, cur);
                let floor = cache.rollback_floor(0).unwrap();
                let accepted: Vec<usize> =
                    (0..=cur + 1).filter(|&l| cache.clone().truncate(0, l).is_ok()).collect();
                let what = format!("capacity {capacity}, window {w}, {cur} positions");
                assert_eq!(accepted, (floor..=cur).collect::<Vec<_>>(), "{what}");
                assert_eq!(floor == 0, cur <= capacity, "{what}: floor {floor}");
            }
        }
    }
}

/// A wrapped ring reset to empty serves a new request exactly as a sequence that was empty
/// from the start, and the other sequence keeps its positions.
#[test]
fn reset_after_wrapping_equals_a_fresh_cache() {
    let f = Fixture::new(2, 40, 54);
    for (dtype, window) in [(KvDtype::F32, 3), (KvDtype::Bf16, 5)] {
        let mut cache = f.cache(5, Some(window), dtype);
        for p in 0..17 {
            append_all(&mut cache, &f.k, &f.v, p, 1).unwrap();
        }
        assert!(cache.truncate(0, 0).is_err(), "a wrapped ring cannot roll back to 0");
        cache.reset(0).unwrap();
        assert_eq!((cache.len(0), cache.positions(0), cache.rollback_floor(0)), (Ok(0), Ok(0..0), Ok(0)));
        assert_eq!(cache.len(1), Ok(17));
        let mut kept = f.cache(5, Some(window), dtype);
        for p in 0..17 {
            append(&mut kept, 1, &f.k, &f.v, p, 1).unwrap();
        }
        for p in 0..9 {
            append(&mut cache, 0, &f.k, &f.v, p, 1).unwrap();
            append(&mut kept, 0, &f.k, &f.v, p, 1).unwrap();
            let q = f.q.rows(0, 2, 0, 1);
            let got = attend(&cache, q, &causal(None, None)).unwrap();
            let want = attend(&kept, q, &causal(None, None)).unwrap();
            assert_eq!(bits(got), bits(want), "{dtype:?}: position {p} after the reset");
        }
    }
}

/// A bias and a mask address the cached positions, `positions(b).start + j`: on a plain cache they
/// are the attention's own over the stored K and V; on a wrapped ring (sequences holding different
/// positions) they equal a bias over all positions, each column moved to its position.
#[test]
fn bias_and_mask_have_one_column_per_cached_position() {
    let f = Fixture::new(2, 40, 55);
    let mut rng = Rng::new(56);
    for (capacity, window, lens) in [(20, None, [13, 9]), (6, Some(4), [17, 14]), (7, Some(3), [9, 8])] {
        let mut cache = f.cache(capacity, window, KvDtype::F32);
        for (b, len) in lens.into_iter().enumerate() {
            for p in 0..len {
                append(&mut cache, b, &f.k, &f.v, p, 1).unwrap();
            }
        }
        let room = window.map_or_else(|| capacity - lens[0], |w| capacity - w + 1);
        let cols = cache.key_columns();
        let starts: Vec<usize> = (0..2).map(|b| cache.positions(b).unwrap().start).collect();
        assert_eq!(cols, (0..2).map(|b| cache.positions(b).unwrap().len()).max().unwrap());
        let full_len = lens[0].max(lens[1]);
        for n in 1..=room.min(3) {
            let bias = Tensor::random([2, 1, n, cols], &mut rng);
            let mask: Vec<bool> = (0..2 * n * cols).map(|i| (i * 7 + n) % 5 != 0).collect();
            // The same, over every position 0..full_len.
            let mut full_bias = Tensor::filled([2, 1, n, full_len], 0.0);
            let mut full_mask = vec![false; 2 * n * full_len];
            for b in 0..2 {
                for i in 0..n {
                    for j in 0..cols {
                        let p = starts[b] + j;
                        if p < lens[b] {
                            let at = full_bias.index([b, 0, i, p]);
                            full_bias.data[at] = bias.at([b, 0, i, j]);
                            full_mask[(b * n + i) * full_len + p] = mask[(b * n + i) * cols + j];
                        }
                    }
                }
            }
            let mask_view = View4::bhld(&mask, [2, 1, n, cols]).unwrap();
            let full_mask_view = View4::bhld(&full_mask, [2, 1, n, full_len]).unwrap();
            let q = f.q.rows(0, 2, 0, n);
            let params =
                AttentionParams { bias: Some(bias.view()), mask: Some(mask_view), ..causal(None, None) };
            let got = attend(&cache, q, &params).unwrap();
            let full_params = AttentionParams {
                bias: Some(full_bias.view()),
                mask: Some(full_mask_view),
                key_lengths: Some(&lens),
                ..causal(window.map(last), None)
            };
            let expected =
                Expected::new(q, f.k.rows(0, 2, 0, full_len), f.v.rows(0, 2, 0, full_len), &full_params);
            expected
                .check(&format!("capacity {capacity}, window {window:?}, {n} queries"), &got, [0, 0, 2, 0])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
