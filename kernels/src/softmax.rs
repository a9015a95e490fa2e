//! Vector exp and the row operations of the online softmax.
//!
//! Online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022), per query row, for
//! each new tile of scores S:
//! `m' = max(m, rowmax(S));  l' = l·e^(m−m') + Σ e^(S−m');  O' = O·e^(m−m') + e^(S−m')·V`
//! The −∞ cases are explicit: while every score seen is −∞ (all masked), `m' = −∞`, P = 0 and
//! nothing is rescaled; `m = −∞ < m'` gives a rescale factor of exactly 0.

use crate::isa::Simd;

/// Below this, `exp` returns exactly 0 (2⁻¹²⁷ has a zero exponent field): e^−88 ≈ 6e−39 is
/// already subnormal, and a masked (−∞) score must contribute nothing, not a tiny weight.
const EXP_LO: f32 = -88.0;
/// Above this, e^x would round past the largest exponent that [`Simd::pow2i`] can build.
const EXP_HI: f32 = 88.0;

/// e^x on every lane: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial (the Cephes
/// `expf` coefficients), then scaled by 2ⁿ built in the exponent bits.
///
/// Accuracy: relative error below 3·10⁻⁷ (about 2.5 ulp) on [−87, 88], checked against f64 in the
/// tests; exactly 0 for x ≤ −88 and for −∞; e^88 for x > 88; NaN stays NaN.
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| ≤ 128 (LN2_HI has 12 significant bits).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Data last: max/min return their second operand's NaN.
    let x = s.min(s.splat(EXP_HI), s.max(s.splat(EXP_LO), x));
    let n = s.round(s.mul(x, s.splat(LOG2E)));
    let r = s.mul_add(n, s.splat(-LN2_HI), x);
    let r = s.mul_add(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = s.mul_add(p, r, s.splat(c));
    }
    let r2 = s.mul(r, r);
    let e_r = s.add(s.mul_add(p, r2, r), s.splat(1.0));
    s.mul(e_r, s.pow2i(n))
}

/// e^x for the online softmax, where x = score − running max ≤ 0 (or NaN): computed in base 2,
/// `t = x·log₂e = n + f` with n = round(t), `2^f` by its degree-6 Taylor polynomial on
/// |f| ≤ ½ (truncation < 1.3·10⁻⁷), scaled by 2ⁿ. Four operations fewer than [`exp`]: no
/// upper clamp and no two-part ln 2 reduction. The price is the rounding of `x·log₂e`, a relative
/// error of about |x|·6·10⁻⁸, which matters only where e^x is already small: the absolute error of
/// a softmax weight stays below 2·10⁻⁸ (|x|·e^x ≤ 1/e). Bound checked in the tests:
/// relative error ≤ 3·10⁻⁷ + |x|·1.2·10⁻⁷ on [−87, 0]; exactly 0 for x ≤ −127·ln 2 and −∞.
#[inline(always)]
pub fn exp_nonpositive<S: Simd>(s: S, x: S::V) -> S::V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Data last: max returns its second operand's NaN. −127 makes pow2i build exactly 0.
    let t = s.max(s.splat(-127.0), s.mul(x, s.splat(LOG2E)));
    let n = s.round(t);
    let f = s.sub(t, n);
    // (ln 2)^k / k!, highest first.
    let mut p = s.splat(1.540_353e-4);
    for c in [1.333_355_8e-3, 9.618_129e-3, 5.550_411e-2, 0.240_226_5, std::f32::consts::LN_2, 1.0] {
        p = s.mul_add(p, f, s.splat(c));
    }
    s.mul(p, s.pow2i(n))
}

/// tanh(x) = 1 − 2/(e^{2x} + 1) on every lane. Absolute error below 3·10⁻⁷; ±1 in the limits;
/// NaN stays NaN. (Relative error grows near 0, where the result itself is tiny; logit softcapping
/// multiplies by the cap, so what matters is the absolute error.)
#[inline(always)]
pub fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let e = exp(s, s.add(x, x));
    s.sub(one, s.div(s.splat(2.0), s.add(e, one)))
}

/// Maximum of `row` (−∞ for an empty row).
///
/// # Safety
/// Every index in `0..len` of `row` must be readable.
#[inline(always)]
pub unsafe fn row_max<S: Simd>(s: S, row: *const f32, len: usize) -> f32 {
    let lanes = S::LANES;
    let mut acc = s.splat(f32::NEG_INFINITY);
    let mut j = 0;
    while j + lanes <= len {
        // SAFETY: j + LANES ≤ len.
        acc = s.max(acc, unsafe { s.load(row.add(j)) });
        j += lanes;
    }
    let mut m = s.reduce_max(acc);
    while j < len {
        // SAFETY: j < len.
        let x = unsafe { *row.add(j) };
        // As the vector max: a NaN score wins, so it is not silently dropped.
        m = if x > m || x.is_nan() { x } else { m };
        j += 1;
    }
    m
}

/// `row[j] = e^(row[j] − m)` in place, returning the sum (in a fixed order: lane-wise, then the
/// lanes, then the tail, so the result never depends on threads).
///
/// # Safety
/// Every index in `0..len` of `row` must be readable and writable.
#[inline(always)]
pub unsafe fn exp_sub_sum<S: Simd>(s: S, row: *mut f32, len: usize, m: f32) -> f32 {
    let lanes = S::LANES;
    let vm = s.splat(m);
    let mut acc = s.splat(0.0);
    let mut j = 0;
    while j + lanes <= len {
        // SAFETY: j + LANES ≤ len.
        unsafe {
            let p = exp_nonpositive(s, s.sub(s.load(row.add(j)), vm));
            s.store(row.add(j), p);
            acc = s.add(acc, p);
        }
        j += lanes;
    }
    let mut sum = s.reduce_sum(acc);
    if j < len {
        // The tail through one padded vector so it gets the same exp as the body.
        let mut tail = [f32::NEG_INFINITY; 16];
        let n = len - j;
        // SAFETY: j + n = len; the stack buffer holds 16 ≥ LANES floats.
        unsafe {
            core::ptr::copy_nonoverlapping(row.add(j), tail.as_mut_ptr(), n);
            let p = exp_nonpositive(s, s.sub(s.load(tail.as_ptr()), vm));
            s.store(tail.as_mut_ptr(), p);
            core::ptr::copy_nonoverlapping(tail.as_ptr(), row.add(j), n);
        }
        sum += tail[..n].iter().sum::<f32>();
    }
    sum
}

/// `row[j] *= f` for `j < len`.
///
/// # Safety
/// Every index in `0..len` of `row` must be readable and writable.
#[inline(always)]
pub unsafe fn scale_row<S: Simd>(s: S, row: *mut f32, len: usize, f: f32) {
    let lanes = S::LANES;
    let vf = s.splat(f);
    let mut j = 0;
    while j + lanes <= len {
        // SAFETY: j + LANES ≤ len.
        unsafe { s.store(row.add(j), s.mul(s.load(row.add(j)), vf)) };
        j += lanes;
    }
    while j < len {
        // SAFETY: j < len.
        unsafe { *row.add(j) *= f };
        j += 1;
    }
}

/// `row[j] *= f[j]` for `j < len`; `len` is a multiple of `S::LANES`.
///
/// # Safety
/// `row` and `f` must each hold `len` readable floats, `row` writable.
#[inline(always)]
pub unsafe fn mul_rows<S: Simd>(s: S, row: *mut f32, f: *const f32, len: usize) {
    debug_assert!(len.is_multiple_of(S::LANES));
    for j in (0..len).step_by(S::LANES) {
        // SAFETY: j + LANES ≤ len.
        unsafe { s.store(row.add(j), s.mul(s.load(row.add(j)), s.load(f.add(j)))) };
    }
}

/// `row[j] = c·tanh(row[j]/c)` for `j < len` (logit soft-capping, as in Gemma 2).
///
/// # Safety
/// Every index in `0..len` of `row` must be readable and writable.
#[inline(always)]
pub unsafe fn softcap_row<S: Simd>(s: S, row: *mut f32, len: usize, cap: f32) {
    let lanes = S::LANES;
    let (vc, vinv) = (s.splat(cap), s.splat(1.0 / cap));
    let mut j = 0;
    while j + lanes <= len {
        // SAFETY: j + LANES ≤ len.
        unsafe { s.store(row.add(j), s.mul(vc, tanh(s, s.mul(s.load(row.add(j)), vinv)))) };
        j += lanes;
    }
    if j < len {
        let mut tail = [0.0f32; 16];
        let n = len - j;
        // SAFETY: j + n = len; the stack buffer holds 16 ≥ LANES floats.
        unsafe {
            core::ptr::copy_nonoverlapping(row.add(j), tail.as_mut_ptr(), n);
            s.store(tail.as_mut_ptr(), s.mul(vc, tanh(s, s.mul(s.load(tail.as_ptr()), vinv))));
            core::ptr::copy_nonoverlapping(tail.as_ptr(), row.add(j), n);
        }
    }
}

/// Whether every element of the `rows × len` block at `p` (rows `stride` apart) is finite:
/// Σ x·0 is 0 unless some x is ±∞ or NaN. Four accumulators keep the FMA chains off the critical path.
///
/// # Safety
/// For every `r < rows`, `p + r·stride .. + len` must be readable.
#[inline(always)]
pub unsafe fn all_finite<S: Simd>(s: S, p: *const f32, rows: usize, len: usize, stride: usize) -> bool {
    if len == 0 {
        return true; // no elements; the rows' offsets may not even lie inside any allocation
    }
    let lanes = S::LANES;
    let zero = s.splat(0.0);
    let mut acc = [zero; 4];
    let mut tail = 0.0f32;
    for r in 0..rows {
        // SAFETY: every offset below is < len within row r (the contract).
        unsafe {
            let row = p.add(r * stride);
            let mut j = 0;
            while j + 4 * lanes <= len {
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = s.mul_add(s.load(row.add(j + u * lanes)), zero, *a);
                }
                j += 4 * lanes;
            }
            while j + lanes <= len {
                acc[0] = s.mul_add(s.load(row.add(j)), zero, acc[0]);
                j += lanes;
            }
            while j < len {
                tail += *row.add(j) * 0.0;
                j += 1;
            }
        }
    }
    s.reduce_sum(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]))) + tail == 0.0
}
