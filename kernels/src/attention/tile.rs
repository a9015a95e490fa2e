//! The body of one attention work item, generic over the ISA.
//!
//! Prefill items (more than `ROWWISE_MAX_ROWS` stacked query rows) run transposed, queries in
//! the SIMD lanes:
//! - `Sᵀ = K·Qᵀ` (keys × queries): K tile rows are the microkernel's left operand read in place (no
//!   per-tile transpose); Qᵀ is packed once per item;
//! - the online softmax reduces down the columns of Sᵀ, one query per lane, with no horizontal
//!   reductions, and leaves P = e^(Sᵀ − m) in place;
//! - `Oᵀ += Vᵀ·P`: V tile columns are the left operand read in place, and P is already laid out as
//!   the packed right operand (Sᵀ is computed one strip of NR queries at a time, each strip a
//!   dense n × NR block), so nothing is packed per tile. Rescaling Oᵀ by α is a vector multiply
//!   per row. NR is the register tile's width, two vectors: 32 queries under AVX-512, 16 otherwise.
//!
//! Decode items (a few stacked rows) keep S and O row-major and use the kernels of `rows`, which
//! read K and V in place in their storage type. Decoding streams the cache from memory once, so
//! each tile's `O += P·V` is deferred to the next tile's pass, which reads that V tile beside its
//! own K tile (f32) or right after it (half precision; see `rows`), two scores buffers taking
//! turns holding S and the deferred P; the next tiles are prefetched at the pace this one is read.
//!
//! Scratch, for M stacked query rows (heads × rows) padded to Mp (a multiple of 32) and Bc keys per
//! tile: Q M×d · Qᵀ packed d×Mp · Sᵀ Bc×Mp · Oᵀ dv×Mp · V spare Bc×dv (only for V tiles holding
//! NaN/∞ or with strided columns) · K and V widened Bc×d, Bc×dv (only for half precision or
//! strided columns) · m, l, α Mp each. The hot part at M = 64, d = dv = 128, Bc = 192:
//! 32+32+48+32 KiB ≈ 144 KiB, inside a 512 KiB L2 beside the K and V tiles (96 KiB each); at
//! d = 64 with Bc = 384 it is 16+16+96+16 KiB with 96 KiB K and V tiles. During each product one
//! strip of the right operand (at d = 128 and NR = 32, Qᵀ 16 KiB, P 24 KiB) stays in L1 while the
//! left operand's rows stream past it.

use super::{AheadRows, Element, KvMat, RowLayout, TileJob, rows};
use crate::gemm::{Lhs, MAX_NR, PackedB, Rhs, macro_kernel_body, nr_for};
use crate::isa::{MAX_LANES, Simd};
use crate::softmax::{all_finite, exp_nonpositive, mul_rows, scale_row, softcap_row};
use crate::view::{MatMut, MatRef};
use half::{bf16, f16};

/// Query columns of Sᵀ and Oᵀ that scratch holds: padded to whole register-tile strips of the
/// widest ISA (`MAX_NR`, a multiple of every NR), so every column op is whole vectors and P can be
/// read in place as the right operand. Padding columns hold stale values: each column is
/// independent and padding is never read back as a query.
pub(super) fn padded_rows(rows: usize) -> Option<usize> {
    rows.checked_next_multiple_of(MAX_NR)
}

/// Whether an item of `m_rows` stacked query rows (heads × rows) runs in the row-wise layout.
pub(super) fn is_rowwise(m_rows: usize) -> bool {
    m_rows <= ROWWISE_MAX_ROWS
}

/// The whole item on `S`'s vectors: the transposed layout's strips are `S`'s register tile wide
/// (NR = 2·LANES queries). `ROWWISE` promises that the item is row-wise ([`is_rowwise`]): an
/// instantiation made for decoding alone then carries none of the transposed layout's code.
#[inline(always)]
pub(super) fn attend_body<S: Simd, const ROWWISE: bool>(s: S, mut job: TileJob<'_>, scratch: &mut [f32]) {
    let g = job.heads.len();
    let rows = job.heads.first().map_or(0, |h| h.q.rows());
    let (d, dv, bc) = (job.k.cols(), job.v.cols(), job.bc);
    let m_rows = g * rows;
    if m_rows == 0 {
        return;
    }
    // Scratch is laid out for the widest strips; each layout pads to what its vectors need.
    let mp_alloc = padded_rows(m_rows).expect("checked by scratch_len");
    assert!(!ROWWISE || is_rowwise(m_rows), "attend_body: a row-wise instantiation got a prefill item");
    let rowwise = ROWWISE || is_rowwise(m_rows);
    // Queries per strip of the transposed layout.
    let w = nr_for::<S>();
    let mp = if rowwise { m_rows.next_multiple_of(S::LANES) } else { m_rows.next_multiple_of(w) };
    let (q_rows, rest) = scratch.split_at_mut(m_rows * d);
    let (q_buf, rest) = rest.split_at_mut(d * mp_alloc);
    let (st_all, rest) = rest.split_at_mut(scores_len(bc, m_rows).expect("checked by scratch_len"));
    let (v_buf, rest) = rest.split_at_mut(bc * dv);
    let (k_conv, rest) = rest.split_at_mut(bc * d);
    let (v_conv, rest) = rest.split_at_mut(bc * dv);
    let (o_buf, rest) = rest.split_at_mut(dv * mp_alloc);
    let (m_buf, rest) = rest.split_at_mut(mp_alloc);
    let (l_buf, rest) = rest.split_at_mut(mp_alloc);
    let (m_buf, l_buf, alpha_buf) = (&mut m_buf[..mp], &mut l_buf[..mp], &mut rest[..mp]);

    // Q, pre-scaled (S = (scale·Q)·Kᵀ saves a pass per tile), stacked head by head; the
    // transposed layout then packs it as Qᵀ strips of NR queries.
    for (h, head) in job.heads.iter().enumerate() {
        for i in 0..rows {
            let dst = &mut q_rows[(h * rows + i) * d..][..d];
            match head.q.row_slice(i) {
                Some(src) => dst.iter_mut().zip(src).for_each(|(x, &q)| *x = q * job.scale),
                None => dst.iter_mut().enumerate().for_each(|(p, x)| *x = head.q.at(i, p) * job.scale),
            }
        }
        let sink = head.sink.unwrap_or(f32::NEG_INFINITY);
        m_buf[h * rows..][..rows].fill(sink);
        // A sink contributes e^(sink − m) = 1 at m = sink.
        l_buf[h * rows..][..rows].fill(if head.sink.is_some() { 1.0 } else { 0.0 });
    }
    m_buf[m_rows..].fill(f32::NEG_INFINITY);
    l_buf[m_rows..].fill(0.0);
    o_buf.fill(0.0);
    let q_mat = MatRef::new(&*q_rows, m_rows, d, d, 1).expect("scratch sized by scratch_len");
    // Few stacked rows (decoding): queries in lanes would leave most lanes empty, so scores are
    // dot products along d, one row of S per query, and O is kept row-major (see `rows`).
    let layout = if rowwise {
        Layout::Rows { dv, ld: row_ld(bc).expect("bc checked by scratch_len") }
    } else {
        Layout::Transposed { mp, w }
    };
    let q_pack = matches!(layout, Layout::Transposed { .. }).then(|| PackedB::pack_with(s, q_mat.t(), q_buf));
    // The row layout's scores are two buffers (see `scores_len`): the second holds P of the
    // tile whose O += P·V is deferred (`pending`).
    let (mut st_buf, mut p_prev) = match layout {
        Layout::Rows { ld, .. } => st_all.split_at_mut(m_rows * ld),
        Layout::Transposed { .. } => st_all.split_at_mut(st_all.len()),
    };
    let mut pending: Option<(usize, usize)> = None;

    let first = job.q_start;
    let last = first + rows - 1;
    let k_lo = job.rule.range(first).0.max(job.keys.0);
    let k_hi = job.rule.range(last).1.min(job.keys.1);
    let mut bad_keys = Vec::new();
    for kt in (k_lo..k_hi).step_by(bc) {
        let n = bc.min(k_hi - kt);
        let ke = kt + n;
        // Ranges are non-decreasing in the row, so corner rows decide "full"; a tile that no row
        // reaches (possible with narrow windows) is skipped without reading K or V.
        let full = job.rule.range(last).0 <= kt && job.rule.range(first).1 >= ke;
        let reached = (first..=last).any(|i| {
            let (lo, hi) = job.rule.range(i);
            lo < ke && hi > kt && lo < hi
        });
        if !reached {
            continue;
        }

        // Keys of this tile that some row of query strip `strip` sees: the rest, past the
        // causal diagonal, are masked for the whole strip, and neither product computes them.
        let strip_seen = |strip: usize| {
            if full {
                return n;
            }
            let q0 = strip * w;
            let hi = (q0..m_rows.min(q0 + w)).map(|r| job.rule.range(first + r % rows).1).max();
            hi.unwrap_or(kt).clamp(kt, ke) - kt
        };

        // Keys in the next tile, for decoding's prefetch. Prefill reuses each K/V tile across
        // every Q tile and finds it in L2/L3: no software prefetch there (measured slower).
        let next = bc.min(k_hi - ke);

        match layout {
            Layout::Transposed { .. } => {
                // Sᵀ = K_tile · (scale·Q)ᵀ: f32 K rows read in place (half precision widened first).
                let k_tile = job.k.rows_f32(s, kt, n, k_conv, RowLayout::Dense);
                // One product per query strip, so that Sᵀ (then P) lands strip by strip,
                // exactly as the packed right operand of `Oᵀ += Vᵀ·P` below.
                let q_pack = q_pack.expect("packed for the transposed layout");
                for (strip, st) in st_buf.chunks_exact_mut(n * w).take(mp / w).enumerate() {
                    let q0 = strip * w;
                    let cols = w.min(m_rows - q0);
                    // Keys past the last one any row of the strip sees (the causal diagonal) are
                    // not computed: `transform_scores` overwrites their stale scores with −∞.
                    let seen = strip_seen(strip);
                    if seen == 0 {
                        continue;
                    }
                    let st_mat = MatMut::new(st, seen, cols, w, 1).expect("scratch sized by scratch_len");
                    let q_strip = Rhs::Packed(q_pack.sub_cols(q0, cols));
                    let k_seen = k_tile.block(0, 0, seen, d);
                    macro_kernel_body::<_, false>(s, Lhs::Strided(k_seen), q_strip, st_mat, 1.0, 0.0);
                }
            }
            Layout::Rows { ld, .. } => {
                // One pass reads this K tile and the deferred V tile side by side, and fetches
                // row j of the next K tile and of this V tile as it reads their row j.
                let ahead = [job.k.ahead_rows(ke, next), job.v.ahead_rows(kt, n)];
                // Contiguous rows are read in place, in their storage type.
                let k_tile = if job.k.unit_cols() {
                    job.k.block(kt, n)
                } else {
                    KvMat::F32(job.k.rows_f32(s, kt, n, k_conv, RowLayout::UnitCols))
                };
                let v_prev = pending.take().map(|(pt, pn)| job.v.block(pt, pn));
                stream_rows(s, q_mat, Some(k_tile), st_buf, p_prev, ld, v_prev, o_buf, ahead);
            }
        }
        transform_scores(s, &job, rows, layout, kt, n, full, st_buf);
        match layout {
            Layout::Transposed { mp, w } => online_softmax(s, (mp, w), n, st_buf, m_buf, l_buf, alpha_buf),
            Layout::Rows { ld, .. } => {
                rows::online_softmax(s, m_rows, n, st_buf, ld, m_buf, l_buf, alpha_buf)
            }
        }
        if alpha_buf.iter().any(|&a| a != 1.0) {
            match layout {
                Layout::Transposed { .. } => {
                    for o_row in o_buf.chunks_exact_mut(mp) {
                        // SAFETY: `o_row` and `alpha_buf` are both mp floats.
                        unsafe { mul_rows(s, o_row.as_mut_ptr(), alpha_buf.as_ptr(), mp) };
                    }
                }
                Layout::Rows { .. } => {
                    for (o_row, &a) in o_buf.chunks_exact_mut(dv.max(1)).zip(&alpha_buf[..m_rows]) {
                        // SAFETY: `o_row` is dv writable floats.
                        unsafe { scale_row(s, o_row.as_mut_ptr(), o_row.len(), a) };
                    }
                }
            }
        }

        // Oᵀ += Vᵀ·P (O += P·V), V read in place. Where every row sees every key of the tile,
        // NaN or ∞ in V may go straight through the product: it reaches exactly the rows that see
        // it, which is all of them. Otherwise non-finite V rows are kept out of the product (0·NaN
        // would poison rows that cannot see them) and added back only where the weight is
        // non-zero; they, and V with strided columns, go through a dense copy.
        let all_see_all = full && job.heads.iter().all(|h| h.bias.is_none() && h.mask.is_none());
        bad_keys.clear();
        if let (true, Layout::Rows { .. }, true) = (all_see_all, layout, job.v.unit_cols()) {
            // Deferred to the next pass (or the one after the last tile), P kept in `p_prev`.
            pending = Some((kt, n));
            core::mem::swap(&mut st_buf, &mut p_prev);
            continue;
        }
        // The transposed layout reads V many times (once per query strip): dense rows, as K above.
        let v_need = if rowwise { RowLayout::Any } else { RowLayout::Dense };
        let v_tile = job.v.rows_f32(s, kt, n, v_conv, v_need);
        // SAFETY: with unit column stride each of the tile's n rows is dv readable floats.
        let clean = v_tile.col_stride() == 1
            && (all_see_all
                || job.v_known_finite
                || unsafe { all_finite(s, v_tile.ptr(), n, dv, v_tile.row_stride()) });
        let v_lhs = if clean {
            v_tile
        } else {
            for (j, row) in v_buf.chunks_exact_mut(dv.max(1)).take(n).enumerate() {
                let mut bad = false;
                for (c, x) in row.iter_mut().enumerate() {
                    let v = v_tile.at(j, c);
                    bad |= !v.is_finite();
                    *x = if v.is_finite() { v } else { 0.0 };
                }
                if bad {
                    bad_keys.push(j);
                }
            }
            MatRef::new(&*v_buf, n, dv, dv, 1).expect("scratch sized by scratch_len")
        };
        match layout {
            Layout::Transposed { .. } => {
                // P is already packed: strip by strip, each n × 16 (see the product above). One
                // product per strip, over the keys it sees (the others have P = 0).
                for (strip, p_strip) in st_buf.chunks_exact(n * w).take(mp / w).enumerate() {
                    let seen = strip_seen(strip);
                    if seen == 0 || dv == 0 {
                        continue;
                    }
                    let p_rhs = Rhs::Packed(PackedB::from_buffer_with(s, p_strip, seen, w));
                    let o_cols = &mut o_buf[strip * w..];
                    let o_mat = MatMut::new(o_cols, dv, w, mp, 1).expect("scratch sized by scratch_len");
                    let v_seen = v_lhs.block(0, 0, seen, dv).t();
                    macro_kernel_body::<_, false>(s, Lhs::Strided(v_seen), p_rhs, o_mat, 1.0, 1.0);
                }
            }
            Layout::Rows { ld, .. } => stream_rows(
                s,
                q_mat,
                None,
                &mut [],
                st_buf,
                ld,
                Some(KvMat::F32(v_lhs)),
                o_buf,
                [AheadRows::NONE; 2],
            ),
        }
        for &j in &bad_keys {
            for r in 0..m_rows {
                let p = st_buf[layout.p_index(r, j, n)];
                if p != 0.0 {
                    // The product already holds this row's finite values (only the others were
                    // zeroed in the dense copy); add just the non-finite ones.
                    for c in 0..dv {
                        let v = v_tile.at(j, c);
                        if !v.is_finite() {
                            o_buf[layout.o_index(r, c)] += p * v;
                        }
                    }
                }
            }
        }
    }

    if let (Some((kt, n)), Layout::Rows { ld, .. }) = (pending, layout) {
        stream_rows(
            s,
            q_mat,
            None,
            &mut [],
            p_prev,
            ld,
            Some(job.v.block(kt, n)),
            o_buf,
            [AheadRows::NONE; 2],
        );
    }

    // Finish: O /= l, lse = m + ln l; a row that saw nothing has l = 0 and gets O = 0, lse = −∞.
    for (h, head) in job.heads.iter_mut().enumerate() {
        for i in 0..rows {
            let r = h * rows + i;
            let l = l_buf[r];
            let (inv, lse) = if l == 0.0 { (0.0, f32::NEG_INFINITY) } else { (1.0 / l, m_buf[r] + l.ln()) };
            let value = |c: usize| if l == 0.0 { 0.0 } else { o_buf[layout.o_index(r, c)] * inv };
            match head.out.row_mut(i) {
                Some(row) => row.iter_mut().enumerate().for_each(|(c, x)| *x = value(c)),
                None => (0..dv).for_each(|c| head.out.set(i, c, value(c))),
            }
            if let Some(out) = head.lse.as_deref_mut() {
                out[i] = lse;
            }
        }
    }
}

/// [`rows::stream_tiles`] over a K tile and a V tile in their storage types, either absent (a
/// lone tile gets an empty partner of its own type). A pair of two types (a strided
/// half-precision K tile widened to f32 beside a V tile read in place) goes in two passes. Every
/// call site inlines this whole body, so it holds one call of the kernel per storage type and no
/// more: with one per combination of types the crate took four times as long to compile.
#[allow(clippy::too_many_arguments)] // two tiles, each with its operand and its result
#[inline(always)]
fn stream_rows<S: Simd>(
    s: S,
    q: MatRef<'_>,
    k: Option<KvMat<'_>>,
    st: &mut [f32],
    p: &[f32],
    ld: usize,
    v: Option<KvMat<'_>>,
    o: &mut [f32],
    ahead: [AheadRows; 2],
) {
    let same_type = match (k, v) {
        (Some(k), Some(v)) => core::mem::discriminant(&k) == core::mem::discriminant(&v),
        _ => true,
    };
    let passes = if same_type { [(k, v), (None, None)] } else { [(k, None), (None, v)] };
    for (k, v) in passes {
        match k.or(v) {
            None => {}
            Some(KvMat::F32(_)) => stream_typed::<S, f32>(s, q, k, st, p, ld, v, o, ahead),
            Some(KvMat::F16(_)) => stream_typed::<S, f16>(s, q, k, st, p, ld, v, o, ahead),
            Some(KvMat::Bf16(_)) => stream_typed::<S, bf16>(s, q, k, st, p, ld, v, o, ahead),
        }
    }
}

/// [`stream_rows`] for tiles stored in `T`, at least one of them present.
#[allow(clippy::too_many_arguments)] // two tiles, each with its operand and its result
#[inline(always)]
fn stream_typed<S: Simd, T: Element>(
    s: S,
    q: MatRef<'_>,
    k: Option<KvMat<'_>>,
    st: &mut [f32],
    p: &[f32],
    ld: usize,
    v: Option<KvMat<'_>>,
    o: &mut [f32],
    ahead: [AheadRows; 2],
) {
    let (k, v) = (k.and_then(T::typed), v.and_then(T::typed));
    let empty = k.or(v).expect("one tile is present, stored in T").block(0, 0, 0, 0);
    let (k, v) = (k.unwrap_or(empty), v.unwrap_or(empty));
    // Outlined: inlined into every call site, an unoptimised build's frame grew past 1 MiB.
    s.outlined(
        #[inline(always)]
        |s| rows::stream_tiles(s, q, k, st, p, ld, v, o, ahead),
    );
}

/// Stacked rows up to which an item uses the row-wise layout (4 query rows of a 4-head group,
/// say, as in speculative decoding). Against the transposed layout the row layout wins up to 16
/// rows (most at 8 and fewer) and loses at 32, where the register tile's strips fill up.
const ROWWISE_MAX_ROWS: usize = 16;

/// Offset of Sᵀ(j, r) (key j, stacked query r) in a tile of `n` keys stored as `mp / w`
/// strips of `w` queries (the register tile's NR), each `n × w` row-major: the layout of a packed
/// right operand, so P feeds `Oᵀ += Vᵀ·P` without a copy and the product reads it sequentially.
#[inline(always)]
fn strip_index(r: usize, j: usize, n: usize, w: usize) -> usize {
    (r / w) * n * w + j * w + r % w
}

/// Floats of scratch for one tile of scores, in either layout: Sᵀ is `bc × mp`; the row layout
/// holds two `rows × ld` buffers, S of this tile and P of the tile whose `O += P·V` is deferred.
pub(super) fn scores_len(bc: usize, rows: usize) -> Option<usize> {
    let ld = row_ld(bc)?;
    if rows <= ROWWISE_MAX_ROWS { ld.checked_mul(2 * rows) } else { ld.checked_mul(padded_rows(rows)?) }
}

/// Distance between score rows of the row layout: whole vectors of any token.
fn row_ld(bc: usize) -> Option<usize> {
    bc.checked_next_multiple_of(MAX_LANES)
}

/// Where S (then P) and O live in scratch.
#[derive(Clone, Copy)]
enum Layout {
    /// Sᵀ `n × mp` stored in strips of `w` queries (see [`strip_index`]) and Oᵀ `dv × mp`:
    /// queries in lanes (prefill).
    Transposed { mp: usize, w: usize },
    /// S `rows × ld` and O `rows × dv` (decoding).
    Rows { dv: usize, ld: usize },
}

impl Layout {
    /// Offset of S(r, j) (then P) in scratch.
    #[inline(always)]
    fn p_index(self, r: usize, j: usize, n: usize) -> usize {
        match self {
            Layout::Transposed { w, .. } => strip_index(r, j, n, w),
            Layout::Rows { ld, .. } => r * ld + j,
        }
    }

    /// Offset of O(r, c) in scratch.
    #[inline(always)]
    fn o_index(self, r: usize, c: usize) -> usize {
        match self {
            Layout::Transposed { mp, .. } => c * mp + r,
            Layout::Rows { dv, .. } => r * dv + c,
        }
    }
}

/// Softcap, ALiBi, bias and masks on the tile of scores for keys `kt..kt + n`, in that order.
#[allow(clippy::too_many_arguments)] // one tile's geometry; a struct would only rename them
#[inline(always)]
fn transform_scores<S: Simd>(
    s: S,
    job: &TileJob<'_>,
    rows: usize,
    layout: Layout,
    kt: usize,
    n: usize,
    full: bool,
    st: &mut [f32],
) {
    let m_rows = rows * job.heads.len();
    if let Some(cap) = job.softcap {
        // Padding between rows or columns is capped too: harmless, it is never read as a score.
        let extent = layout.p_index(m_rows - 1, n - 1, n) + 1;
        // SAFETY: the scores of the tile end at `extent`, inside `st`.
        unsafe { softcap_row(s, st[..extent].as_mut_ptr(), extent, cap) };
    }
    let at = |r: usize, j: usize| layout.p_index(r, j, n);
    // Score row r is query row i of head h.
    let columns = || (0..m_rows).map(|r| (r, r / rows, r % rows));
    for (r, h, i) in columns() {
        let head = &job.heads[h];
        let i_abs = job.q_start + i;
        if let Some(slope) = head.alibi_slope {
            let diag = i_abs as i64 + job.alibi_offset;
            for j in 0..n {
                st[at(r, j)] -= slope * (diag - (kt + j) as i64).unsigned_abs() as f32;
            }
        }
        if let Some(bias) = head.bias {
            for j in 0..n {
                let b = bias.at(i, kt + j);
                let x = &mut st[at(r, j)];
                // −∞ bias hides the key whatever the score is (even NaN): the same as a false mask bit.
                *x = if b == f32::NEG_INFINITY { b } else { *x + b };
            }
        }
        if let Some(mask) = head.mask {
            for j in 0..n {
                if !mask.at(i, kt + j) {
                    st[at(r, j)] = f32::NEG_INFINITY;
                }
            }
        }
        if !full {
            let (lo, hi) = job.rule.range(i_abs);
            let lo = lo.clamp(kt, kt + n) - kt;
            let hi = hi.clamp(kt, kt + n).max(lo + kt) - kt;
            for j in (0..lo).chain(hi..n) {
                st[at(r, j)] = f32::NEG_INFINITY;
            }
        }
    }
}

/// The online-softmax update for one tile, column by column of Sᵀ (one query per lane):
/// `m' = max(m, colmax)`, `P = e^(Sᵀ − m')` in place, `l' = α·l + ΣP`, `α = e^(m − m')` (left in
/// `alpha` for the caller to rescale O). While a column has seen only −∞, `m'` stands in as
/// −f32::MAX for the subtraction, so P = 0 and α = 0 instead of NaN.
///
/// Columns go four vectors at a time, so a tile larger than L1 (192 or 384 keys × 64 queries is
/// 48 or 96 KiB) streams from L2 twice per pass rather than once per vector of columns.
#[inline(always)]
fn online_softmax<S: Simd>(
    s: S,
    (mp, w): (usize, usize),
    n: usize,
    st: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let lanes = S::LANES;
    // The bounds `softmax_columns` reads and writes within.
    assert!(mp.is_multiple_of(w) && w.is_multiple_of(lanes));
    assert!(n.checked_mul(mp).is_some_and(|len| st.len() >= len));
    assert!(m.len() >= mp && l.len() >= mp && alpha.len() >= mp);
    let mut c = 0;
    while c + 4 * lanes <= mp {
        softmax_columns::<S, 4>(s, (c, w), n, st, m, l, alpha);
        c += 4 * lanes;
    }
    while c < mp {
        softmax_columns::<S, 1>(s, (c, w), n, st, m, l, alpha);
        c += lanes;
    }
}

/// [`online_softmax`] for the `G·LANES` columns starting at `c0`.
#[allow(clippy::too_many_arguments)] // the tile and the three state rows
#[inline(always)]
fn softmax_columns<S: Simd, const G: usize>(
    s: S,
    (c0, w): (usize, usize),
    n: usize,
    st: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let lanes = S::LANES;
    let floor = s.splat(-f32::MAX);
    let col = |g: usize| c0 + g * lanes;
    // SAFETY: c0 + G·LANES ≤ mp and j < n, so every access is inside the n·mp tile (each vector
    // within one strip, as LANES divides w) or the mp-long state rows (asserted by the caller).
    unsafe {
        let mut mx = [s.splat(f32::NEG_INFINITY); G];
        for j in 0..n {
            for (g, x) in mx.iter_mut().enumerate() {
                *x = s.max(*x, s.load(st.as_ptr().add(strip_index(col(g), j, n, w))));
            }
        }
        let mut m_safe = [floor; G];
        for (g, safe) in m_safe.iter_mut().enumerate() {
            let m_old = s.load(m.as_ptr().add(col(g)));
            // Data second: max returns its second operand's NaN, so a NaN score sticks.
            let m_new = s.max(m_old, mx[g]);
            *safe = s.max(floor, m_new);
            s.store(m.as_mut_ptr().add(col(g)), m_new);
            s.store(alpha.as_mut_ptr().add(col(g)), exp_nonpositive(s, s.sub(m_old, *safe)));
        }
        let mut sum = [s.splat(0.0); G];
        for j in 0..n {
            for (g, acc) in sum.iter_mut().enumerate() {
                let p_ptr = st.as_mut_ptr().add(strip_index(col(g), j, n, w));
                let p = exp_nonpositive(s, s.sub(s.load(p_ptr), m_safe[g]));
                s.store(p_ptr, p);
                *acc = s.add(*acc, p);
            }
        }
        for (g, acc) in sum.iter().enumerate() {
            let l_ptr = l.as_mut_ptr().add(col(g));
            let a = s.load(alpha.as_ptr().add(col(g)));
            s.store(l_ptr, s.mul_add(s.load(l_ptr), a, *acc));
        }
    }
}
