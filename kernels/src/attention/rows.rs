//! The two products of a decode item, whose few stacked query rows (at most
//! `ROWWISE_MAX_ROWS`) would leave most lanes of the transposed layout empty:
//! - scores `S[r][j] = Q[r]·K[j]`: dot products along d, each K vector loaded once and used by
//!   every row of a block;
//! - `O[r] += Σⱼ P[r][j]·V[j]`: each V vector loaded once and used by every row of a block, O
//!   streaming through L1.
//!
//! [`stream_tiles`] runs both in one pass, a few keys at a time: the scores of one K tile beside
//! `O += P·V` for another V tile (when decoding, the previous one, whose softmax is done).
//! Decoding reads the cache from memory once, and the prefetchers keep up best with streams read
//! in order and without pauses: at kv_len 16384, reading K and V side by side, each row front to
//! back, took 15 % off the time of a whole K tile and then a whole V tile read column block by
//! column block (what these kernels did before, to keep a block of O in registers), on 1 and 2
//! threads alike. Half-precision K/V halves the bytes for the same arithmetic and is bound by
//! the latter: there V goes right after the scores, by column blocks with a block of O in
//! registers, which spares the O loads and stores of every key step.
//!
//! Blocks of rows and keys are sized so that accumulators, the streamed vectors and the
//! broadcasts fit the 16 vector registers of AVX2. Rows beyond a block go in further blocks,
//! which find the step's K and V rows in L1. The 16-lane AVX-512 build keeps these sizes (its
//! column blocks are then twice as wide), and a head dimension that is 8 past a multiple of 16
//! sends its last 8 columns through the scalar tails.
//!
//! No closures touch SIMD values here: a closure does not inherit the caller's target features,
//! so the intrinsics inside it would become calls (measured: a fifth of the time).

use super::{AheadRows, Element};
use crate::isa::Simd;
use crate::softmax::{exp_nonpositive, exp_sub_sum, row_max};
use crate::view::MatRef;
use core::ops::Range;

/// Keys per step of [`stream_tiles`]: 2 K rows, then 2 V rows (1 KiB each in f32 at d = 128).
/// Steps of 4 keys, with 2-row blocks for `O += P·V` to halve its stores, were 8–15 % slower at
/// kv_len 16384 on 1 and 2 threads: the two streams then alternate in coarser bursts.
const KEY_STEP: usize = 2;

/// Rows per register block: 4 rows × 2 keys make 8 score accumulators or 8 broadcast weights.
const ROW_BLOCK: usize = 4;

/// Row `i` of `m` (wrapping: a view without columns may carry any row stride, and then the
/// pointer is never read).
#[inline(always)]
fn row_ptr<T: Copy>(m: &MatRef<'_, T>, i: usize) -> *const T {
    m.ptr().wrapping_add(i.wrapping_mul(m.row_stride()))
}

/// In one pass over the keys: `st[r·ld + j] = q[r]·k[j]` for every row of `q` and key of `k`,
/// and `o[r·dv + c] += Σⱼ p[r·ld + j]·v[j][c]` for every key and column of `v`. Either tile may
/// be empty (no rows). Half-precision keys and values are widened as they are loaded.
/// Row j of each of `ahead` is fetched line by line as key j is read, so the rows the next pass
/// reads arrive at the pace this one reads.
///
/// Panics unless `q`, `k` and `v` have unit column stride, `q` and `k` equal widths, and `st`,
/// `p` and `o` hold what is written or read.
#[allow(clippy::too_many_arguments)] // two tiles, each with its operand and its result
#[inline(always)]
pub(super) fn stream_tiles<S: Simd, T: Element>(
    s: S,
    q: MatRef<'_>,
    k: MatRef<'_, T>,
    st: &mut [f32],
    p: &[f32],
    ld: usize,
    v: MatRef<'_, T>,
    o: &mut [f32],
    ahead: [AheadRows; 2],
) {
    let (rows, nk, nv, dv) = (q.rows(), k.rows(), v.rows(), v.cols());
    let fits = |len: usize, n: usize| n == 0 || rows == 0 || len >= (rows - 1) * ld + n && ld >= n;
    assert!(nk == 0 || q.cols() == k.cols() && (q.col_stride() == 1 || q.cols() <= 1));
    assert!(k.col_stride() == 1 || k.cols() <= 1 || nk == 0);
    assert!(v.col_stride() == 1 || dv <= 1 || nv == 0);
    assert!(fits(st.len(), nk) && fits(p.len(), nv) && (nv == 0 || o.len() >= rows * dv));
    // f32 K/V is bound by memory, and V goes beside K row by row. Half-precision K/V reads half
    // the bytes for the same arithmetic and is bound by the latter: V goes after the scores, by
    // column blocks with a block of O in registers, free of the O loads and stores per key step
    // (f16 at kv_len 16384 took 20 % longer beside K, on 1 and 2 threads).
    let v_beside_k = size_of::<T>() == size_of::<f32>();
    let n = if v_beside_k { nk.max(nv) } else { nk };
    let pass = Pass { nk, nv: if v_beside_k { nv } else { 0 }, ld };
    // One block of rows takes all keys in one go: its size is then fixed for the whole pass, so
    // the key loop carries no dispatch and keeps its pointers in registers. More rows go key
    // step by key step, each block finding the step's K and V rows in L1.
    let chunk = if rows <= ROW_BLOCK { n.max(1) } else { KEY_STEP };
    for j in (0..n).step_by(chunk) {
        let keys = j..n.min(j + chunk);
        for r0 in (0..rows).step_by(ROW_BLOCK) {
            let ahead = if r0 == 0 { ahead } else { [AheadRows::NONE; 2] };
            pass.block::<S, T>(s, rows - r0, r0, keys.clone(), ahead, &q, &k, st, p, &v, o);
        }
    }
    if !v_beside_k && nv > 0 {
        for r0 in (0..rows).step_by(ROW_BLOCK) {
            let (p, o) = (&p[r0 * ld..], &mut o[r0 * dv..]);
            // Column vectors per block so that R·CB accumulators, CB V vectors and a broadcast fit
            // the 16 registers of AVX2, or the 32 of AVX-512 (16 lanes).
            match (ROW_BLOCK.min(rows - r0), S::LANES) {
                (1, _) => add_weighted_by_columns::<S, T, 1, 8>(s, p, ld, &v, o),
                (2, _) => add_weighted_by_columns::<S, T, 2, 4>(s, p, ld, &v, o),
                (3, 16) => add_weighted_by_columns::<S, T, 3, 4>(s, p, ld, &v, o),
                (3, _) => add_weighted_by_columns::<S, T, 3, 3>(s, p, ld, &v, o),
                (_, 16) => add_weighted_by_columns::<S, T, ROW_BLOCK, 4>(s, p, ld, &v, o),
                _ => add_weighted_by_columns::<S, T, ROW_BLOCK, 2>(s, p, ld, &v, o),
            }
        }
    }
}

/// What every block of rows in a [`stream_tiles`] pass shares: keys of K (`nk`) and of V read
/// beside them (`nv`), and the row stride of the scores.
#[derive(Clone, Copy)]
struct Pass {
    nk: usize,
    nv: usize,
    ld: usize,
}

impl Pass {
    /// Rows `r0..r0 + min(left, ROW_BLOCK)` over `keys`, [`KEY_STEP`] keys at a time, fetching
    /// row j of each of `ahead` line by line as key j goes by.
    #[allow(clippy::too_many_arguments)] // the operands of both products
    #[inline(always)]
    fn block<S: Simd, T: Element>(
        self,
        s: S,
        left: usize,
        r0: usize,
        keys: Range<usize>,
        ahead: [AheadRows; 2],
        q: &MatRef<'_>,
        k: &MatRef<'_, T>,
        st: &mut [f32],
        p: &[f32],
        v: &MatRef<'_, T>,
        o: &mut [f32],
    ) {
        match left {
            1 => self.steps::<S, T, 1>(s, r0, keys, ahead, q, k, st, p, v, o),
            2 => self.steps::<S, T, 2>(s, r0, keys, ahead, q, k, st, p, v, o),
            3 => self.steps::<S, T, 3>(s, r0, keys, ahead, q, k, st, p, v, o),
            _ => self.steps::<S, T, ROW_BLOCK>(s, r0, keys, ahead, q, k, st, p, v, o),
        }
    }

    #[allow(clippy::too_many_arguments)] // the operands of both products
    #[inline(always)]
    fn steps<S: Simd, T: Element, const R: usize>(
        self,
        s: S,
        r0: usize,
        keys: Range<usize>,
        ahead: [AheadRows; 2],
        q: &MatRef<'_>,
        k: &MatRef<'_, T>,
        st: &mut [f32],
        p: &[f32],
        v: &MatRef<'_, T>,
        o: &mut [f32],
    ) {
        let Pass { nk, nv, ld } = self;
        let q = q.block(r0, 0, R, q.cols());
        // A product without keys may come with empty buffers.
        let st = st.get_mut(r0 * ld..).unwrap_or_default();
        let p = p.get(r0 * ld..).unwrap_or_default();
        let o = o.get_mut(r0 * v.cols()..).unwrap_or_default();
        let keys_end = keys.end;
        for j in keys.step_by(KEY_STEP) {
            // The next K tile is fetched line by line as K is read, and the V tile ahead as V is
            // read. A step that reads only one of them (in the first or last pass of an item, in
            // a short tile, or in half precision, whose V goes later by column blocks) fetches
            // the other's rows at once.
            let [k_ahead, v_ahead] = ahead;
            for j in j..(j + KEY_STEP).min(keys_end) {
                match (j < nk, j < nv) {
                    (true, false) => v_ahead.fetch_from(s, j, 0),
                    (false, true) => k_ahead.fetch_from(s, j, 0),
                    _ => {}
                }
            }
            match KEY_STEP.min(nk.saturating_sub(j)) {
                0 => {}
                1 => dots::<S, T, R, 1>(s, &q, k, j, st, ld, &k_ahead),
                _ => dots::<S, T, R, KEY_STEP>(s, &q, k, j, st, ld, &k_ahead),
            }
            match KEY_STEP.min(nv.saturating_sub(j)) {
                0 => {}
                1 => add_weighted::<S, T, R, 1>(s, p, ld, v, j, o, &v_ahead),
                _ => add_weighted::<S, T, R, KEY_STEP>(s, p, ld, v, j, o, &v_ahead),
            }
        }
    }
}

/// The `R × KB` scores of rows `0..R` against keys `j0..j0 + KB`, fetching rows `j0..j0 + KB`
/// of `ahead` a line per line of K read.
#[inline(always)]
fn dots<S: Simd, T: Element, const R: usize, const KB: usize>(
    s: S,
    q: &MatRef<'_>,
    k: &MatRef<'_, T>,
    j0: usize,
    st: &mut [f32],
    ld: usize,
    ahead: &AheadRows,
) {
    const { assert!(R * KB <= 8 && S::LANES <= 16, "8 sums, stored through a 16-float array") };
    assert!(st.len() >= (R - 1) * ld + j0 + KB);
    let d = k.cols();
    let lanes = S::LANES;
    let body = d - d % lanes;
    let qp: [*const f32; R] = core::array::from_fn(|r| row_ptr(q, r));
    let kp: [*const T; KB] = core::array::from_fn(|g| row_ptr(k, j0 + g));
    let ahead_rows: [*const u8; KB] = core::array::from_fn(|g| ahead.row_or(j0 + g, kp[g].cast()));
    let mut acc = [[s.splat(0.0); KB]; R];
    // f32 rows go one after the other, each front to back: read two rows a line of each at a
    // time, the prefetchers lost track of the stream, and f32 at kv_len 16384 took 19 % longer
    // on 2 threads (6 % on 1), though at kv_len 4096 (K/V in L3) that order was 5 % faster.
    // Half-precision K is bound by the arithmetic, which the interleaved order does with half
    // the Q loads (f16 took 17 % longer row by row).
    let rows_per_pass = if size_of::<T>() == size_of::<f32>() { 1 } else { KB };
    for g0 in (0..KB).step_by(rows_per_pass) {
        let rows = g0..g0 + rows_per_pass;
        for p in (0..body).step_by(lanes) {
            // SAFETY: rows of Q and K have unit column stride (checked by `stream_tiles`) and
            // p + LANES ≤ d, so every load is inside a row.
            unsafe {
                let mut kv = [s.splat(0.0); KB];
                for g in rows.clone() {
                    kv[g] = T::load(s, kp[g].add(p));
                }
                fetch_lines::<S, T>(s, &ahead_rows[rows.clone()], p);
                for (acc_r, qr) in acc.iter_mut().zip(&qp) {
                    let qv = s.load(qr.add(p));
                    for g in rows.clone() {
                        acc_r[g] = s.mul_add(kv[g], qv, acc_r[g]);
                    }
                }
            }
        }
    }
    fetch_rests::<S, T, KB>(s, ahead, j0, body);
    // One transpose-and-add turns up to 8 accumulators into their 8 sums.
    let mut flat = [s.splat(0.0); 8];
    for (i, a) in acc.iter().flatten().enumerate() {
        flat[i] = *a;
    }
    let mut sums = [0.0f32; 16];
    // SAFETY: `sums` holds 16 ≥ LANES floats (asserted at compile time above).
    unsafe { s.store(sums.as_mut_ptr(), s.sum8(flat)) };
    let stp = st.as_mut_ptr();
    for r in 0..R {
        for g in 0..KB {
            // SAFETY: r·ld + j0 + g < (R − 1)·ld + j0 + KB ≤ st.len() (checked above); a raw
            // store spares a bounds check per score.
            unsafe { *stp.add(r * ld + j0 + g) = sums[r * KB + g] };
        }
    }
    // Apart, so that the common d (a multiple of LANES) carries no call to the scalar sum.
    if body < d {
        for r in 0..R {
            for g in 0..KB {
                st[r * ld + j0 + g] += (body..d).map(|p| k.at(j0 + g, p).to_f32() * q.at(r, p)).sum::<f32>();
            }
        }
    }
}

/// `o[r·dv + c] += Σ_g p[r·ld + j0 + g]·v[j0 + g][c]` for rows `0..R`, keys `j0..j0 + KB` and
/// every column, key after key: the `R × KB` weights are broadcast once, then the V rows go by
/// front to back, each vector used by every row. Rows `j0..j0 + KB` of `ahead` are fetched a
/// line per line of V read.
#[allow(clippy::too_many_arguments)] // the product's operands, and the rows to fetch
#[inline(always)]
fn add_weighted<S: Simd, T: Element, const R: usize, const KB: usize>(
    s: S,
    p: &[f32],
    ld: usize,
    v: &MatRef<'_, T>,
    j0: usize,
    o: &mut [f32],
    ahead: &AheadRows,
) {
    let dv = v.cols();
    let lanes = S::LANES;
    let body = dv - dv % lanes;
    assert!(o.len() >= R * dv && p.len() >= (R - 1) * ld + j0 + KB);
    let mut w = [[s.splat(0.0); KB]; R];
    for (r, w_r) in w.iter_mut().enumerate() {
        for (g, w) in w_r.iter_mut().enumerate() {
            // SAFETY: r·ld + j0 + g < (R − 1)·ld + j0 + KB ≤ p.len() (checked above); a raw
            // load spares a bounds check per weight.
            *w = s.splat(unsafe { *p.as_ptr().add(r * ld + j0 + g) });
        }
    }
    let vp: [*const T; KB] = core::array::from_fn(|g| row_ptr(v, j0 + g));
    let ahead_rows: [*const u8; KB] = core::array::from_fn(|g| ahead.row_or(j0 + g, vp[g].cast()));
    let op = o.as_mut_ptr();
    // Row after row, each front to back, as for f32 K in `dots` (the only type read here, see
    // `stream_tiles`): two rows a line of each at a time lost the prefetchers' track.
    for g in 0..KB {
        for c in (0..body).step_by(lanes) {
            // SAFETY: V has unit column stride (checked by `stream_tiles`) and c + LANES ≤ dv, so
            // each V load is inside row j0 + g; o holds R rows of dv (checked above).
            unsafe {
                let vv = T::load(s, vp[g].add(c));
                fetch_lines::<S, T>(s, &ahead_rows[g..=g], c);
                for (r, w_r) in w.iter().enumerate() {
                    let at = op.add(r * dv + c);
                    s.store(at, s.mul_add(w_r[g], vv, s.load(at)));
                }
            }
        }
    }
    fetch_rests::<S, T, KB>(s, ahead, j0, body);
    for c in body..dv {
        for r in 0..R {
            for g in 0..KB {
                o[r * dv + c] += p[r * ld + j0 + g] * v.at(j0 + g, c).to_f32();
            }
        }
    }
}

/// At element `e` of the rows being read, when it starts a 64-byte stretch of them: the line at
/// that offset of each row ahead.
#[inline(always)]
fn fetch_lines<S: Simd, T: Element>(s: S, rows: &[*const u8], e: usize) {
    let offset = e * size_of::<T>();
    if offset.is_multiple_of(64) {
        for row in rows {
            s.prefetch_far(row.wrapping_add(offset).cast());
        }
    }
}

/// After [`fetch_lines`] up to element `body`: the rest of rows `j0..j0 + KB` ahead (past a
/// scalar tail, or rows ahead wider than the rows read).
#[inline(always)]
fn fetch_rests<S: Simd, T: Element, const KB: usize>(s: S, ahead: &AheadRows, j0: usize, body: usize) {
    let from = (body * size_of::<T>()).next_multiple_of(64);
    for g in 0..KB {
        ahead.fetch_from(s, j0 + g, from);
    }
}

/// `o[r·dv + c] += Σⱼ p[r·ld + j]·v[j][c]` for rows `0..R`, every key and every column: an
/// `R × CB` block of O stays in registers while every key goes past, then the next block of
/// columns; the last columns go one vector, then one value, at a time.
#[inline(always)]
fn add_weighted_by_columns<S: Simd, T: Element, const R: usize, const CB: usize>(
    s: S,
    p: &[f32],
    ld: usize,
    v: &MatRef<'_, T>,
    o: &mut [f32],
) {
    let (n, dv) = (v.rows(), v.cols());
    let lanes = S::LANES;
    let mut c = 0;
    while c + CB * lanes <= dv {
        column_block::<S, T, R, CB>(s, p, ld, v, o, c);
        c += CB * lanes;
    }
    while c + lanes <= dv {
        column_block::<S, T, R, 1>(s, p, ld, v, o, c);
        c += lanes;
    }
    for c in c..dv {
        for r in 0..R {
            o[r * dv + c] += (0..n).map(|j| p[r * ld + j] * v.at(j, c).to_f32()).sum::<f32>();
        }
    }
}

/// Columns `c0..c0 + CB·LANES` of [`add_weighted_by_columns`].
#[inline(always)]
fn column_block<S: Simd, T: Element, const R: usize, const CB: usize>(
    s: S,
    p: &[f32],
    ld: usize,
    v: &MatRef<'_, T>,
    o: &mut [f32],
    c0: usize,
) {
    let (n, dv) = (v.rows(), v.cols());
    let lanes = S::LANES;
    assert!(c0 + CB * lanes <= dv && o.len() >= (R - 1) * dv + c0 + CB * lanes);
    assert!(n == 0 || p.len() >= (R - 1) * ld + n);
    let op = o.as_mut_ptr();
    let o_at = |r: usize, b: usize| r * dv + c0 + b * lanes;
    let mut acc = [[s.splat(0.0); CB]; R];
    for (r, acc_r) in acc.iter_mut().enumerate() {
        for (b, a) in acc_r.iter_mut().enumerate() {
            // SAFETY: c0 + CB·LANES ≤ dv and o holds R rows of dv (checked above).
            *a = unsafe { s.load(op.add(o_at(r, b))) };
        }
    }
    let pp = p.as_ptr();
    for j in 0..n {
        let vp = row_ptr(v, j).wrapping_add(c0);
        // SAFETY: V has unit column stride (checked by `stream_tiles`) and c0 + CB·LANES ≤ dv, so
        // each load is inside row j; r·ld + j < p.len() (checked above).
        unsafe {
            let mut vv = [s.splat(0.0); CB];
            for (b, x) in vv.iter_mut().enumerate() {
                *x = T::load(s, vp.add(b * lanes));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let w = s.splat(*pp.add(r * ld + j));
                for (a, vv) in acc_r.iter_mut().zip(&vv) {
                    *a = s.mul_add(w, *vv, *a);
                }
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (b, a) in acc_r.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { s.store(op.add(o_at(r, b)), *a) };
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
