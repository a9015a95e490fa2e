//! The MR×NR register-tiled microkernel: one body for every ISA, NR = two vectors of the token.
//!
//! Per step p of the k loop: load one NR-wide row of the B strip (2 vectors), broadcast MR values
//! of A's column p, and issue MR·2 FMAs into the accumulators:
//!
//! - 16 vector registers (AVX2, portable), `MR = 6, NR = 2·LANES`: 12 accumulators + 2 B vectors +
//!   1 broadcast = 15 registers. 12 independent FMA chains cover the FMA latency (4 cycles) × 2
//!   pipes.
//! - 32 zmm registers (AVX-512), `MR = 12, NR = 32`: 24 accumulators + 2 + 1 = 27 registers. Per
//!   k step the 6 × 32 tile issues 8 loads for 12 FMAs, and on a core with two 512-bit FMA pipes
//!   it ran at 82 % of the FMA peak with A and B in L1; the 12 × 32 tile (14 loads for 24 FMAs)
//!   ran at 95 %.
//!
//! An A strip is [`MR`] = 6 rows (the packing unit); the 12-row tile reads two strips at once, as
//! two halves whose rows share one set of offsets. Rows left over below the last 12-row strip go
//! through the 6-row tile. On a packed panel the offsets are the constants 0..6 (`UNIT`), so the
//! k loop addresses all 12 rows from two pointers; read in place, the offsets stay in general
//! registers, and a k loop that also fetches ahead (`Lhs::Streamed`) ran out of them.

use crate::isa::Simd;

/// Rows of one A strip: the packing unit, and the register tile's rows on ISAs with 16 vector
/// registers. AVX-512's tile takes two strips at once ([`mr_of`](crate::gemm::mr_of)).
pub const MR: usize = 6;
/// The most rows of any register tile.
pub const MAX_MR: usize = 2 * MR;
/// Vectors per row of the register tile.
const VECS: usize = 2;
/// The widest NR of any token: 2 × 16 lanes.
pub const MAX_NR: usize = VECS * crate::isa::MAX_LANES;

/// Columns of `S`'s register tile: two vectors.
#[inline(always)]
pub(crate) const fn nr_for<S: Simd>() -> usize {
    VECS * S::LANES
}

/// Rows of `S`'s register tile: two strips where the ISA has 32 vector registers (AVX-512, the
/// only 16-lane token), one elsewhere.
#[inline(always)]
pub(crate) const fn mr_for<S: Simd>() -> usize {
    if S::LANES == 16 { MAX_MR } else { MR }
}

/// Where the rows of an A strip (up to [`MAX_MR`]) live: row `i` at `base + offs[i % MR]`, plus
/// `second` for the second half (`i ≥ MR`), `col_step` floats between columns, and how far below
/// them (in floats) the next strip's rows lie, to be hinted into L2 as this strip is read when the
/// kernel fetches (see `Lhs::Streamed`).
#[derive(Clone, Copy)]
pub(crate) struct LhsStrip {
    pub base: *const f32,
    pub offs: [usize; MR],
    pub second: usize,
    pub col_step: usize,
    pub next_strip: usize,
}

/// Floats per 64-byte cache line: k steps per line of a unit-stride A row.
const LINE_STEPS: usize = 16;

impl LhsStrip {
    /// Offset of row `i` from `base`; with `UNIT` (the caller's promise that `offs[i] = i`) a
    /// constant within each half.
    #[inline(always)]
    fn row_offset<const UNIT: bool>(&self, i: usize) -> usize {
        let within = if UNIT { i % MR } else { self.offs[i % MR] };
        within + (i / MR) * self.second
    }

    /// Hints the line at column `p` of each of the next strip's first `R` rows into L2. Called
    /// once per [`LINE_STEPS`] steps, this fetches the next strip line by line at the pace this
    /// one is read, a strip ahead. An offset from this strip's rows, not more pointers, which
    /// would crowd the general registers of the k loop.
    #[inline(always)]
    fn fetch_next_strip<S: Simd, const R: usize>(&self, s: S, p: usize) {
        for i in 0..R {
            // The strip before a short last one reaches past the panel's last row: a hint never
            // faults, and the line goes unused.
            let row = self.base.wrapping_add(self.row_offset::<false>(i));
            s.prefetch_far(row.wrapping_add(self.next_strip + p));
        }
    }
}

/// `steps` cut into pieces of [`LINE_STEPS`], the last one shorter.
#[inline(always)]
fn line_pieces(steps: core::ops::Range<usize>) -> impl Iterator<Item = core::ops::Range<usize>> {
    let end = steps.end;
    steps.step_by(LINE_STEPS).map(move |p| p..(p + LINE_STEPS).min(end))
}

/// The `rows × cols` corner of C that one register tile writes (`rows ≤ MAX_MR`), with its strides,
/// and the scalars of `C ← α·(A·B) + β·C`.
#[derive(Clone, Copy)]
pub(crate) struct CTile {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// `C[..mr, ..nr] = α·(A·B) + β·C[..mr, ..nr]` for the tile `c` (`mr × nr` = its rows × cols),
/// where A is the mr×k strip `a` and B the k×NR strip `b = (start, row_step)` (row_step = NR when
/// packed). Only the tile is touched; with `β = 0`, C is not read. With `FETCH`, the next strip of
/// A is hinted into L2 as `a` is read.
///
/// With `UNIT`, the strip's rows are one float apart within each half (`offs[i] = i`: a packed
/// strip), and the k loop addresses them from two pointers with constant displacements instead of
/// keeping one offset per row in a register.
///
/// # Safety
/// `mr ≤ mr_for::<S>()`; with `UNIT`, `offs[i] = i` for every `i`. For every row `i` of `a` below
/// [`MR`] (below [`MAX_MR`] when `mr > MR`), `base + offs[i % MR] + (i / MR)·second + p·col_step`
/// is readable for `p < k`; `start + p·row_step` is NR readable floats for `p < k`;
/// `c.ptr + i·c.rs + j·c.cs` is writable for `i < mr`, `j < nr ≤ NR`, and no other thread
/// accesses those elements during the call.
#[inline(always)]
pub(crate) unsafe fn microkernel<S: Simd, const FETCH: bool, const UNIT: bool>(
    s: S,
    k: usize,
    a: LhsStrip,
    (b, b_step): (*const f32, usize),
    c: CTile,
) {
    let (mr, nr) = (c.rows, c.cols);
    const { assert!(nr_for::<S>() <= MAX_NR && mr_for::<S>() <= MAX_MR) };
    debug_assert!(mr <= mr_for::<S>() && nr <= nr_for::<S>());
    // The lines of the C tile: the first column, the last, and under AVX-512 (a 128-byte row)
    // the one 16 floats (a cache line) in.
    let prefetch_c = |far: bool| {
        let fetch = |p: *const f32| if far { s.prefetch_far(p) } else { s.prefetch(p) };
        for i in 0..mr {
            let row = c.ptr.wrapping_add(i * c.rs);
            fetch(row);
            if nr_for::<S>() > 16 && nr > 16 {
                fetch(row.wrapping_add(16 * c.cs));
            }
            fetch(row.wrapping_add((nr - 1) * c.cs));
        }
    };
    // Edge strips of at most 2 rows (the last 2 rows of a 128-wide head, say) skip the FMAs of
    // the absent rows instead of computing them and dropping them at the store. Only where
    // vectors are single registers: the portable build, already short of registers, ran slower
    // with the second loop.
    // SAFETY: forwarded contract on A and B (each arm reads R ≥ mr rows of the strip).
    let acc = unsafe {
        match mr {
            1..=2 if S::ONE_REGISTER => product::<S, 2, FETCH, UNIT>(s, k, a, (b, b_step), prefetch_c),
            1..=MR => product::<S, MR, FETCH, UNIT>(s, k, a, (b, b_step), prefetch_c),
            _ => product::<S, MAX_MR, FETCH, UNIT>(s, k, a, (b, b_step), prefetch_c),
        }
    };
    // SAFETY: forwarded contract on C.
    unsafe { store_tile(s, &acc, c) }
}

/// k steps before the end of the k loop at which the C tile is prefetched into L1 (about 200
/// cycles, enough for a line from L2).
///
/// Not earlier: when C's row stride is a multiple of 4 KiB (a 2048-wide C, say), every row of a
/// tile falls into the same L1 set, and lines fetched at the start of the loop were evicted by the
/// A and B lines streaming through that set before the stores came. Into L2 they go at the start:
/// at two zmm FMAs a cycle, a C tile still in L3 or memory at the store stalls every tile.
const C_AHEAD: usize = 32;

/// The k loop for the first `R` rows, with C hinted into L2 as it starts and into L1
/// [`C_AHEAD`] steps before its end (`prefetch_c(far)`).
///
/// # Safety
/// As for [`microkernel`]'s A and B.
#[inline(always)]
unsafe fn product<S: Simd, const R: usize, const FETCH: bool, const UNIT: bool>(
    s: S,
    k: usize,
    a: LhsStrip,
    b: (*const f32, usize),
    prefetch_c: impl Fn(bool),
) -> [[S::V; VECS]; MAX_MR] {
    let zero = [[s.splat(0.0); VECS]; MAX_MR];
    // SAFETY: every range lies inside 0..k (forwarded contract).
    unsafe {
        if !S::ONE_REGISTER {
            // Split in two, the portable build's loop (its accumulators already spill) ran 9 %
            // slower: there the tile is fetched up front.
            prefetch_c(false);
            return k_loop_fetching::<S, R, FETCH, UNIT>(s, zero, 0..k, a, b);
        }
        prefetch_c(true);
        let late = k.min(C_AHEAD);
        let acc = k_loop_fetching::<S, R, FETCH, UNIT>(s, zero, 0..k - late, a, b);
        prefetch_c(false);
        k_loop_fetching::<S, R, FETCH, UNIT>(s, acc, k - late..k, a, b)
    }
}

/// [`k_loop`], fetching the next strip's rows line by line when `FETCH`.
///
/// # Safety
/// As for [`microkernel`]'s A and B.
#[inline(always)]
unsafe fn k_loop_fetching<S: Simd, const R: usize, const FETCH: bool, const UNIT: bool>(
    s: S,
    mut acc: [[S::V; VECS]; MAX_MR],
    steps: core::ops::Range<usize>,
    a: LhsStrip,
    b: (*const f32, usize),
) -> [[S::V; VECS]; MAX_MR] {
    if !FETCH {
        // SAFETY: forwarded contract.
        return unsafe { k_loop::<S, R, UNIT>(s, acc, steps, a, b) };
    }
    for piece in line_pieces(steps) {
        a.fetch_next_strip::<S, R>(s, piece.start);
        // SAFETY: forwarded contract; each piece lies inside `steps`.
        acc = unsafe { k_loop::<S, R, UNIT>(s, acc, piece, a, b) };
    }
    acc
}

/// `acc + Σₚ A[i][p]·B[p]` over `steps` for the first `R` rows of the strip (the other rows keep
/// their value): per step p, one NR-wide row of B (2 vectors), R broadcasts of A's column p, R·2 FMAs.
/// The accumulators are returned by value: through a reference, the portable build kept them in
/// memory (half the speed).
///
/// # Safety
/// As for [`microkernel`]'s A and B.
#[inline(always)]
unsafe fn k_loop<S: Simd, const R: usize, const UNIT: bool>(
    s: S,
    mut acc: [[S::V; VECS]; MAX_MR],
    steps: core::ops::Range<usize>,
    a: LhsStrip,
    (b, b_step): (*const f32, usize),
) -> [[S::V; VECS]; MAX_MR] {
    let cs = a.col_step;
    for p in steps {
        // SAFETY: p < k, so the B row p and A column p are inside the strips (contract above).
        unsafe {
            let bp = b.add(p * b_step);
            let b0 = s.load(bp);
            let b1 = s.load(bp.add(S::LANES));
            for (i, acc_i) in acc.iter_mut().enumerate().take(R) {
                let ai = s.splat(*a.base.add(a.row_offset::<UNIT>(i) + p * cs));
                acc_i[0] = s.mul_add(ai, b0, acc_i[0]);
                acc_i[1] = s.mul_add(ai, b1, acc_i[1]);
            }
        }
    }
    acc
}

/// Writes `α·acc + β·C` into the `mr × nr` corner of C. Tiles whose rows are whole (nr = NR) with
/// unit column stride go straight from registers, row by row; column edges and strided C go
/// through a stack tile, so an edge costs one small copy rather than a scalar k loop.
///
/// # Safety
/// As for [`microkernel`]'s C.
#[inline(always)]
unsafe fn store_tile<S: Simd>(s: S, acc: &[[S::V; VECS]; MAX_MR], c_tile: CTile) {
    let CTile { ptr: c, rs: c_rs, cs: c_cs, rows: mr, cols: nr, alpha, beta } = c_tile;
    let (va, vb) = (s.splat(alpha), s.splat(beta));
    if nr == nr_for::<S>() && c_cs == 1 {
        for (i, row) in acc.iter().enumerate().take(mr) {
            for (v, &x) in row.iter().enumerate() {
                // SAFETY: row i < mr, whole row, unit column stride: columns v·LANES.. + LANES are
                // inside C.
                unsafe {
                    let p = c.add(i * c_rs + v * S::LANES);
                    let ab = if alpha == 1.0 { x } else { s.mul(va, x) };
                    let out = if beta == 0.0 { ab } else { s.mul_add(vb, s.load(p), ab) };
                    s.store(p, out);
                }
            }
        }
        return;
    }
    let mut tile = [0.0f32; MAX_MR * MAX_NR];
    let ld = nr_for::<S>();
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: the stack tile holds MAX_MR rows of MAX_NR ≥ NR floats; row i, vector v starts
            // at i·NR + v·LANES.
            unsafe { s.store(tile.as_mut_ptr().add(i * ld + v * S::LANES), x) };
        }
    }
    // SAFETY: forwarded contract on C; the stack tile holds mr ≤ MAX_MR rows of NR floats.
    unsafe { store_scalar(&tile, ld, c_tile) }
}

/// Writes `α·tile + β·C` element by element into the `mr × nr` corner of C, from a row-major
/// stack tile with rows `ld` apart: the edge and strided-C path of every register tile.
///
/// # Safety
/// `tile` holds `mr` rows of `ld ≥ nr` floats; `ptr + i·rs + j·cs` of `c_tile` is writable for
/// `i < mr`, `j < nr`, and no other thread accesses those elements during the call.
#[inline(always)]
unsafe fn store_scalar(tile: &[f32], ld: usize, c_tile: CTile) {
    let CTile { ptr: c, rs: c_rs, cs: c_cs, rows: mr, cols: nr, alpha, beta } = c_tile;
    for i in 0..mr {
        for (j, &x) in tile[i * ld..i * ld + nr].iter().enumerate() {
            // SAFETY: i < mr, j < nr: inside C by the contract.
            unsafe {
                let p = c.add(i * c_rs + j * c_cs);
                let ab = alpha * x;
                *p = if beta == 0.0 { ab } else { beta.mul_add(*p, ab) };
            }
        }
    }
}
