//! The two products of a decode item, whose few stacked query rows (at most
//! `ROWWISE_MAX_ROWS`) would leave most lanes of the transposed layout empty. Both keep a block
//! of rows in registers and stream the K or V tile past it once per block:
//! - scores `S[r][j] = Q[r]·K[j]`: dot products along d, each K vector loaded once and used by
//!   every row of the block;
//! - `O[r] += Σⱼ P[r][j]·V[j]`: an R × CB block of O in registers, each V vector loaded once per
//!   block and each P element broadcast once per key.
//!
//! Blocks are sized so that accumulators, the streamed vectors and the broadcast fit the 16
//! vector registers of AVX2 and every load feeds at least one FMA. (Before these kernels, the
//! general 6 × 16 microkernel spent a third of its FMAs on absent rows of 4-row items, and the
//! score loop issued more loads than FMAs.) Rows beyond [`ROW_BLOCK`] go in further blocks,
//! re-reading the tile from L1/L2.

use super::Element;
use crate::isa::Simd;
use crate::softmax::{exp_nonpositive, exp_sub_sum, row_max};
use crate::view::MatRef;

/// Rows per register block.
const ROW_BLOCK: usize = 4;

/// Row `i` of `m` (wrapping: a view without columns may carry any row stride, and then the
/// pointer is never read).
#[inline(always)]
fn row_ptr<T: Copy>(m: &MatRef<'_, T>, i: usize) -> *const T {
    m.ptr().wrapping_add(i.wrapping_mul(m.row_stride()))
}

/// `st[r·ld + j] = q[r]·k[j]` for every row of `q` and key of `k`, half-precision keys widened as
/// they are loaded. `ahead(j)` is called once per key, so the caller can spread prefetches of the
/// next tile over this one's work.
///
/// Panics unless `q` and `k` have unit column stride, equal widths, and `st` holds the scores.
#[inline(always)]
pub(super) fn scores<S: Simd, T: Element>(
    s: S,
    q: MatRef<'_>,
    k: MatRef<'_, T>,
    st: &mut [f32],
    ld: usize,
    ahead: impl Fn(usize),
) {
    let (rows, n) = (q.rows(), k.rows());
    assert!(q.cols() == k.cols() && (q.col_stride() == 1 || q.cols() <= 1));
    assert!(k.col_stride() == 1 || k.cols() <= 1);
    assert!(rows == 0 || n == 0 || st.len() >= (rows - 1) * ld + n && ld >= n);
    for r0 in (0..rows).step_by(ROW_BLOCK) {
        let q = q.block(r0, 0, ROW_BLOCK.min(rows - r0), q.cols());
        let st = &mut st[r0 * ld..];
        // Prefetches go with the first block only: later blocks find the tile in cache.
        let ahead = |j: usize| {
            if r0 == 0 {
                ahead(j)
            }
        };
        // Keys per step so that R·KB accumulators, R query vectors and KB key vectors fit.
        match q.rows() {
            1 => scores_block::<S, T, 1, 8>(s, q, k, st, ld, ahead),
            2 => scores_block::<S, T, 2, 4>(s, q, k, st, ld, ahead),
            3 => scores_block::<S, T, 3, 2>(s, q, k, st, ld, ahead),
            _ => scores_block::<S, T, 4, 2>(s, q, k, st, ld, ahead),
        }
    }
}

/// [`scores`] for one block of `R` rows, `KB` keys per step (then single keys).
#[inline(always)]
fn scores_block<S: Simd, T: Element, const R: usize, const KB: usize>(
    s: S,
    q: MatRef<'_>,
    k: MatRef<'_, T>,
    st: &mut [f32],
    ld: usize,
    ahead: impl Fn(usize),
) {
    let n = k.rows();
    let mut j = 0;
    while j + KB <= n {
        (j..j + KB).for_each(&ahead);
        dots::<S, T, R, KB>(s, &q, &k, j, st, ld);
        j += KB;
    }
    for j in j..n {
        ahead(j);
        dots::<S, T, R, 1>(s, &q, &k, j, st, ld);
    }
}

/// The `R × KB` scores of rows `0..R` against keys `j0..j0 + KB`.
#[inline(always)]
fn dots<S: Simd, T: Element, const R: usize, const KB: usize>(
    s: S,
    q: &MatRef<'_>,
    k: &MatRef<'_, T>,
    j0: usize,
    st: &mut [f32],
    ld: usize,
) {
    const { assert!(R * KB <= 8) };
    let d = k.cols();
    let lanes = S::LANES;
    let body = d - d % lanes;
    let qp: [*const f32; R] = core::array::from_fn(|r| row_ptr(q, r));
    let kp: [*const T; KB] = core::array::from_fn(|g| row_ptr(k, j0 + g));
    let mut acc = [[s.splat(0.0); KB]; R];
    for p in (0..body).step_by(lanes) {
        // SAFETY: rows of Q and K have unit column stride (checked by `scores`) and
        // p + LANES ≤ d, so every load is inside a row.
        unsafe {
            let kv: [S::V; KB] = core::array::from_fn(|g| T::load(s, kp[g].add(p)));
            for (acc_r, qr) in acc.iter_mut().zip(&qp) {
                let qv = s.load(qr.add(p));
                for (a, kv) in acc_r.iter_mut().zip(&kv) {
                    *a = s.mul_add(*kv, qv, *a);
                }
            }
        }
    }
    // One transpose-and-add turns up to 8 accumulators into their 8 sums.
    let mut flat = [s.splat(0.0); 8];
    for (i, a) in acc.iter().flatten().enumerate() {
        flat[i] = *a;
    }
    let mut sums = [0.0f32; 16];
    // SAFETY: `sums` holds 16 ≥ LANES floats.
    unsafe { s.store(sums.as_mut_ptr(), s.sum8(flat)) };
    for r in 0..R {
        for g in 0..KB {
            let tail: f32 = (body..d).map(|p| k.at(j0 + g, p).to_f32() * q.at(r, p)).sum();
            st[r * ld + j0 + g] = sums[r * KB + g] + tail;
        }
    }
}

/// `o[r·dv + c] += Σⱼ p[r·ld + j]·v[j][c]` for the `rows` rows of `p` and `o` and every key and
/// column of `v`, half-precision values widened as they are loaded. `ahead(j, c0, c1)` is called
/// as columns `c0..c1` of key j are read, so the caller can fetch the same part of the next tile.
///
/// Panics unless `v` has unit column stride and `p` and `o` hold `rows` rows.
#[inline(always)]
pub(super) fn accumulate_pv<S: Simd, T: Element>(
    s: S,
    p: &[f32],
    ld: usize,
    rows: usize,
    v: MatRef<'_, T>,
    o: &mut [f32],
    ahead: impl Fn(usize, usize, usize),
) {
    let (n, dv) = (v.rows(), v.cols());
    assert!(v.col_stride() == 1 || dv <= 1);
    assert!(rows == 0 || (n == 0 || p.len() >= (rows - 1) * ld + n && ld >= n) && o.len() >= rows * dv);
    for r0 in (0..rows).step_by(ROW_BLOCK) {
        let (p, o) = (&p[r0 * ld..], &mut o[r0 * dv..]);
        // Prefetches go with the first block only: later blocks find the tile in cache.
        let ahead = |j: usize, c0: usize, c1: usize| {
            if r0 == 0 {
                ahead(j, c0, c1)
            }
        };
        // Column vectors per block so that R·CB accumulators, CB value vectors and a broadcast fit.
        match ROW_BLOCK.min(rows - r0) {
            1 => pv_block::<S, T, 1, 8>(s, p, ld, v, o, ahead),
            2 => pv_block::<S, T, 2, 4>(s, p, ld, v, o, ahead),
            3 => pv_block::<S, T, 3, 3>(s, p, ld, v, o, ahead),
            _ => pv_block::<S, T, 4, 2>(s, p, ld, v, o, ahead),
        }
    }
}

/// [`accumulate_pv`] for one block of `R` rows: columns `CB` vectors at a time, then one vector at
/// a time, then one by one.
#[inline(always)]
fn pv_block<S: Simd, T: Element, const R: usize, const CB: usize>(
    s: S,
    p: &[f32],
    ld: usize,
    v: MatRef<'_, T>,
    o: &mut [f32],
    ahead: impl Fn(usize, usize, usize),
) {
    let (n, dv) = (v.rows(), v.cols());
    let lanes = S::LANES;
    let mut c = 0;
    while c + CB * lanes <= dv {
        pv_columns::<S, T, R, CB>(s, p, ld, &v, o, c, &ahead);
        c += CB * lanes;
    }
    while c + lanes <= dv {
        pv_columns::<S, T, R, 1>(s, p, ld, &v, o, c, &ahead);
        c += lanes;
    }
    for c in c..dv {
        for r in 0..R {
            o[r * dv + c] += (0..n).map(|j| p[r * ld + j] * v.at(j, c).to_f32()).sum::<f32>();
        }
    }
}

/// Columns `c0..c0 + CB·LANES` of [`pv_block`]: the `R × CB` block of O stays in registers while
/// every key goes past.
#[inline(always)]
fn pv_columns<S: Simd, T: Element, const R: usize, const CB: usize>(
    s: S,
    p: &[f32],
    ld: usize,
    v: &MatRef<'_, T>,
    o: &mut [f32],
    c0: usize,
    ahead: &impl Fn(usize, usize, usize),
) {
    let (n, dv) = (v.rows(), v.cols());
    let lanes = S::LANES;
    debug_assert!(c0 + CB * lanes <= dv && o.len() >= (R - 1) * dv + c0 + CB * lanes);
    let o_at = |r: usize, b: usize| r * dv + c0 + b * lanes;
    // SAFETY: c0 + CB·LANES ≤ dv (the caller's loop bound) and o holds R rows of dv (checked
    // by `accumulate_pv`), so each O access is inside a row.
    let mut acc: [[S::V; CB]; R] =
        core::array::from_fn(|r| core::array::from_fn(|b| unsafe { s.load(o.as_ptr().add(o_at(r, b))) }));
    // Row pointers into P, hoisted so the key loop keeps them in registers.
    let p_rows: [*const f32; R] = core::array::from_fn(|r| p.as_ptr().wrapping_add(r * ld));
    for j in 0..n {
        ahead(j, c0, c0 + CB * lanes);
        let vp = row_ptr(v, j).wrapping_add(c0);
        // SAFETY: V has unit column stride (checked by `accumulate_pv`) and c0 + CB·LANES ≤ dv, so
        // each load is inside row j; p_rows[r] + j is P[r·ld + j], inside p (checked there too).
        unsafe {
            let vv: [S::V; CB] = core::array::from_fn(|b| T::load(s, vp.add(b * lanes)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let pr = s.splat(*p_rows[r].add(j));
                for (a, vv) in acc_r.iter_mut().zip(&vv) {
                    *a = s.mul_add(pr, *vv, *a);
                }
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (b, a) in acc_r.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { s.store(o.as_mut_ptr().add(o_at(r, b)), *a) };
        }
    }
}

/// The online-softmax update for one tile of scores in the row layout (`st[r·ld + j]`, keys
/// `j < n`): per row `m' = max(m, rowmax)`, `P = e^(S − m')` in place, `l' = α·l + ΣP`, with
/// `α = e^(m − m')` left in `alpha` for the caller to rescale O (padding entries get 1). As in
/// the transposed layout, `m'` stands in as −f32::MAX while a row has seen only −∞, so P = 0 and
/// α = 0 instead of NaN.
///
/// Panics unless `m`, `l` and `alpha` hold at least `rows` entries, `alpha` whole vectors, and
/// `st` the scores.
#[allow(clippy::too_many_arguments)] // the tile and the three state rows
#[inline(always)]
pub(super) fn online_softmax<S: Simd>(
    s: S,
    rows: usize,
    n: usize,
    st: &mut [f32],
    ld: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let lanes = S::LANES;
    assert!(m.len() >= rows && l.len() >= rows && alpha.len() >= rows && alpha.len().is_multiple_of(lanes));
    assert!(rows == 0 || n == 0 || st.len() >= (rows - 1) * ld + n && ld >= n);
    // A NaN maximum stays NaN, so the row's output becomes NaN rather than dropping the score.
    let safe = |m: f32| if m.is_nan() { m } else { m.max(-f32::MAX) };
    for r in 0..rows {
        // SAFETY: row r of the scores is n floats from r·ld (checked above).
        let mx = unsafe { row_max(s, st.as_ptr().add(r * ld), n) };
        let m_old = m[r];
        // As `Simd::max(m_old, mx)`: the data's NaN wins.
        let m_new = if m_old > mx { m_old } else { mx };
        m[r] = m_new;
        alpha[r] = m_old - safe(m_new);
    }
    alpha[rows..].fill(0.0);
    for chunk in alpha.chunks_exact_mut(lanes) {
        // SAFETY: the chunk is LANES floats.
        unsafe { s.store(chunk.as_mut_ptr(), exp_nonpositive(s, s.load(chunk.as_ptr()))) };
    }
    for r in 0..rows {
        // SAFETY: as above.
        let sum = unsafe { exp_sub_sum(s, st.as_mut_ptr().add(r * ld), n, safe(m[r])) };
        l[r] = l[r] * alpha[r] + sum;
    }
}
