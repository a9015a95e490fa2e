//! The AVX-512 macro-kernel: loops 2 and 1 over a 6×32 register tile.
//!
//! The tile spans two neighbouring NR strips of B, one zmm register each, so the packed layouts
//! stay those of the AVX2 path. Per step p of the k loop: two zmm loads of B, six broadcasts of
//! A's column p, twelve FMAs into twelve zmm accumulators (14 of the 32 registers, so nothing
//! spills). Twelve independent chains cover the FMA latency (4 cycles) × 2 pipes of Zen 4/5 and
//! Skylake-X. A lone last strip (n mod 32 ≤ 16) takes the 6×16 AVX2 tile.

use super::microkernel::{C_AHEAD, CTile, LhsStrip, MR, NR, line_pieces, microkernel, store_scalar};
use super::{Lhs, Rhs};
use crate::isa::Avx512;
use crate::view::MatMut;
use core::arch::x86_64::*;

/// Columns of the AVX-512 tile: two NR strips.
const NR2: usize = 2 * NR;

/// [`super::macro_kernel`] on AVX-512; shapes already agree.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C (the token proves it).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn macro_kernel_avx512<const FETCH: bool>(
    s: Avx512,
    a: Lhs<'_>,
    b: Rhs<'_>,
    mut c: MatMut<'_>,
    alpha: f32,
    beta: f32,
) {
    let (m, n, k) = (c.rows(), c.cols(), b.depth());
    if m == 0 || n == 0 {
        return;
    }
    let narrow = s.avx2();
    let (c_rs, c_cs) = (c.row_stride(), c.col_stride());
    let c_ptr = c.ptr();
    // LOOP 2 (JR): n in pairs of NR strips.
    for jr in (0..n).step_by(NR2) {
        let nr = NR2.min(n - jr);
        let b0 = b.strip(jr);
        let b1 = (nr > NR).then(|| b.strip(jr + NR));
        // LOOP 1 (IR): m in MR strips of A.
        for ir in (0..m).step_by(MR) {
            let mr = MR.min(m - ir);
            let ptr = c_ptr.wrapping_add(ir * c_rs + jr * c_cs);
            let c_tile = CTile { ptr, rs: c_rs, cs: c_cs, rows: mr, cols: nr, alpha, beta };
            let a_strip = a.strip_for::<FETCH>(ir);
            // SAFETY: the strip pointers cover k columns of A rows (clamped into the panel) and
            // k rows of each B strip (a second strip exists when nr > NR); C rows ir..ir+mr and
            // columns jr..jr+nr are inside the view.
            unsafe {
                match b1 {
                    Some(b1) => tile::<FETCH>(s, k, a_strip, [b0, b1], c_tile),
                    None => microkernel::<_, FETCH>(narrow, k, a_strip, b0, c_tile),
                }
            }
        }
    }
}

/// `C[..mr, ..nr] = α·(A·[B0 B1]) + β·C[..mr, ..nr]` for the tile `c_tile` (`mr × nr`), the MR×k
/// strip `a` and two k×NR strips `(start, row_step)`; with `β = 0` C is not read. With `FETCH`,
/// the next strip of A is hinted into L2 as `a` is read.
///
/// # Safety
/// AVX-512F is available; `a`'s rows are readable for k columns; `start + p·row_step` is NR
/// readable floats for `p < k` in both strips; `ptr + i·rs + j·cs` of the tile is writable for
/// `i < mr ≤ MR`, `j < nr ≤ 2·NR`, and no other thread accesses those elements during the call.
#[inline(always)]
unsafe fn tile<const FETCH: bool>(
    s: Avx512,
    k: usize,
    a: LhsStrip,
    b: [(*const f32, usize); 2],
    c_tile: CTile,
) {
    let CTile { ptr: c, rs: c_rs, cs: c_cs, rows: mr, cols: nr, .. } = c_tile;
    // SAFETY: forwarded contract; every k range lies inside 0..k.
    unsafe {
        let zero = [[_mm512_setzero_ps(); 2]; MR];
        let prefetch_c = |far: bool| {
            for i in 0..mr {
                let row = c.wrapping_add(i * c_rs);
                for p in [row, row.wrapping_add(NR * c_cs), row.wrapping_add((nr - 1) * c_cs)] {
                    if far {
                        _mm_prefetch::<_MM_HINT_T1>(p.cast());
                    } else {
                        _mm_prefetch::<_MM_HINT_T0>(p.cast());
                    }
                }
            }
        };
        // C into L2 as the tile starts, into L1 near its end. At twice the FMA rate a C tile
        // still in L3 or DRAM at the store stalled every tile: 2048³ went from about 166 to 225
        // GFLOP/s with the early L2 hint. Into L1 this early, rows 4 KiB apart would be evicted
        // by the A and B lines before the store (see `C_AHEAD`).
        prefetch_c(true);
        let late = k.min(C_AHEAD);
        let acc = k_loop_fetching::<FETCH>(s, zero, 0..k - late, a, b);
        prefetch_c(false);
        let acc = k_loop_fetching::<FETCH>(s, acc, k - late..k, a, b);
        store(&acc, c_tile);
    }
}

/// [`k_loop`], fetching the next strip's rows line by line when `FETCH`.
///
/// # Safety
/// As for [`tile`]'s A and B, for the steps given.
#[inline(always)]
unsafe fn k_loop_fetching<const FETCH: bool>(
    s: Avx512,
    mut acc: [[__m512; 2]; MR],
    steps: core::ops::Range<usize>,
    a: LhsStrip,
    b: [(*const f32, usize); 2],
) -> [[__m512; 2]; MR] {
    if !FETCH {
        // SAFETY: forwarded contract.
        return unsafe { k_loop(acc, steps, a, b) };
    }
    for piece in line_pieces(steps) {
        a.fetch_next_strip(s, piece.start);
        // SAFETY: forwarded contract; each piece lies inside `steps`.
        acc = unsafe { k_loop(acc, piece, a, b) };
    }
    acc
}

/// `acc + Σₚ A[·][p]·[B0 B1][p]` over `steps`: per step two zmm loads, six broadcasts, twelve FMAs.
///
/// # Safety
/// As for [`tile`]'s A and B, for the steps given.
#[inline(always)]
unsafe fn k_loop(
    mut acc: [[__m512; 2]; MR],
    steps: core::ops::Range<usize>,
    a: LhsStrip,
    [(b0, s0), (b1, s1)]: [(*const f32, usize); 2],
) -> [[__m512; 2]; MR] {
    let cs = a.col_step;
    for p in steps {
        // SAFETY: p < k, so row p of both B strips and column p of the A rows are readable;
        // AVX-512F is available (contract).
        unsafe {
            let v0 = _mm512_loadu_ps(b0.add(p * s0));
            let v1 = _mm512_loadu_ps(b1.add(p * s1));
            for (row, acc_i) in a.rows.iter().zip(acc.iter_mut()) {
                let ai = _mm512_set1_ps(*row.add(p * cs));
                acc_i[0] = _mm512_fmadd_ps(ai, v0, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(ai, v1, acc_i[1]);
            }
        }
    }
    acc
}

/// Writes `α·acc + β·C` into the `mr × nr` corner of C. With unit column stride the edge columns
/// are masked lanes (masked-off lanes are neither read nor written, nor can they fault); a strided
/// C goes through a stack tile.
///
/// # Safety
/// As for [`tile`]'s C.
#[inline(always)]
unsafe fn store(acc: &[[__m512; 2]; MR], c_tile: CTile) {
    let CTile { ptr: c, rs: c_rs, cs: c_cs, rows: mr, cols: nr, alpha, beta } = c_tile;
    // SAFETY: AVX-512F is available (contract).
    let (va, vb) = unsafe { (_mm512_set1_ps(alpha), _mm512_set1_ps(beta)) };
    if c_cs == 1 {
        // Lane masks of the two vectors: all 16 lanes, or the first nr − 16·v.
        let mask = |v: usize| -> __mmask16 {
            let lanes = nr.saturating_sub(v * NR).min(NR);
            ((1u32 << lanes) - 1) as __mmask16
        };
        let masks = [mask(0), mask(1)];
        for (i, row) in acc.iter().enumerate().take(mr) {
            for ((v, &x), &m) in row.iter().enumerate().zip(&masks) {
                // SAFETY: row i < mr and the lanes of `m` are columns < nr: inside C (contract);
                // masked-off lanes are not accessed.
                unsafe {
                    let p = c.add(i * c_rs + v * NR);
                    let ab = if alpha == 1.0 { x } else { _mm512_mul_ps(va, x) };
                    let out =
                        if beta == 0.0 { ab } else { _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, p), ab) };
                    _mm512_mask_storeu_ps(p, m, out);
                }
            }
        }
        return;
    }
    let mut tile = [0.0f32; MR * NR2];
    for (i, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: the stack tile holds MR·2·NR floats; row i, vector v starts at i·2·NR + v·NR.
            unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR2 + v * NR), x) };
        }
    }
    // SAFETY: forwarded contract on C; the stack tile holds mr ≤ MR rows of 2·NR floats.
    unsafe { store_scalar(&tile, NR2, c_tile) }
}
