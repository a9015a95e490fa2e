//! The inner two loops of a BLIS-style GEMM and the packing that feeds them.
//!
//! The caller (flashcpu's `matmul`, or an attention tile) runs loops 5–3 and calls in here with a
//! `kc × nc` panel of B and an `mc × kc` panel of A, each packed or read in place:
//!
//! ```text
//! LOOP 2 (JR): nc in NR-wide strips of B_pack
//!   LOOP 1 (IR): mc in MR-tall strips of A
//!     microkernel: C[MR×NR] = α·(A_strip · B_strip) + β·C[MR×NR]
//! ```

mod microkernel;
mod pack;

pub use microkernel::{MAX_MR, MAX_NR, MR};
pub use pack::{PackedA, PackedB};

use crate::isa::{Isa, IsaKind, Simd, dispatch};
use crate::view::{MatMut, MatRef};
use microkernel::{CTile, LhsStrip, microkernel};
pub(crate) use microkernel::{mr_for, nr_for};

/// Rows of the register tile that `isa` runs: [`MR`], or two strips of it ([`MAX_MR`]) under
/// AVX-512, whose 32 registers hold a 12 × 32 tile.
pub fn mr_of(isa: Isa) -> usize {
    // The 32-wide tile is the 16-lane token's, as is the 12-row one (see `mr_for`).
    if nr_of(isa) == MAX_NR { MAX_MR } else { MR }
}

/// Columns of the register tile that `isa` runs (NR): two vectors, so 16, or 32 under AVX-512.
/// Packed right operands are laid out in strips of this width.
pub fn nr_of(isa: Isa) -> usize {
    match isa.kind() {
        IsaKind::Portable => nr_for::<crate::isa::Portable>(),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2Fma => nr_for::<crate::isa::Avx2Fma>(),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => nr_for::<crate::isa::Avx512>(),
        #[cfg(not(target_arch = "x86_64"))]
        IsaKind::Avx2Fma | IsaKind::Avx512 => unreachable!("Isa::new never yields an x86 ISA off x86-64"),
    }
}

/// The left operand of a macro-kernel call: packed into MR strips, or read in place through its
/// strides (cheaper unless its columns are strided: each k step then lands in a new cache line).
#[derive(Clone, Copy, Debug)]
pub enum Lhs<'a> {
    /// Packed by [`PackedA::pack`].
    Packed(PackedA<'a>),
    /// Read in place; any strides. For a panel already in cache (attention's K and V tiles).
    Strided(MatRef<'a>),
    /// Read in place like `Strided`, for a panel that comes from memory: while a strip of A is
    /// read for the first register tile column, the next strip's rows are hinted into L2, one
    /// line of each row per cache line of A read, at the same columns. Only a panel with unit
    /// column stride and more than MR rows fetches; any other is read as `Strided`. The hardware
    /// prefetchers, which train per 4 KiB page, track six short row streams poorly: a tall A read
    /// in place from memory lost about a tenth of the peak without the hints.
    Streamed(MatRef<'a>),
}

impl Lhs<'_> {
    fn rows(&self) -> usize {
        match self {
            Lhs::Packed(a) => a.rows(),
            Lhs::Strided(a) | Lhs::Streamed(a) => a.rows(),
        }
    }
    fn depth(&self) -> usize {
        match self {
            Lhs::Packed(a) => a.depth(),
            Lhs::Strided(a) | Lhs::Streamed(a) => a.cols(),
        }
    }

    /// Rows `i0..i0 + rows` (`rows ≤ MAX_MR`; more than [`MR`] only where all of them exist) as
    /// two halves of MR rows that share their offsets (for packed A, two consecutive strips). Rows
    /// past the end of a panel read in place repeat its last row (their results are never stored),
    /// so nothing is read out of bounds and the inner loop needs no branch.
    #[inline(always)]
    fn strip(&self, i0: usize, rows: usize) -> LhsStrip {
        match self {
            Lhs::Packed(a) => {
                // Every MR rows are a packed strip: a 12-row tile's second half is the next one.
                let second = if rows > MR { MR * a.depth() } else { 0 };
                let offs = core::array::from_fn(|i| i);
                LhsStrip { base: a.strip_ptr(i0 / MR), offs, second, col_step: MR, next_strip: 0 }
            }
            Lhs::Strided(a) | Lhs::Streamed(a) => {
                let (last, rs) = (a.rows() - 1, a.row_stride());
                // Wrapping: with no columns (k = 0) any row stride is valid and nothing is read.
                let base = a.ptr().wrapping_add(i0.wrapping_mul(rs));
                let offs = core::array::from_fn(|i| ((i0 + i).min(last) - i0).wrapping_mul(rs));
                LhsStrip { base, offs, second: MR.wrapping_mul(rs), col_step: a.col_stride(), next_strip: 0 }
            }
        }
    }

    /// [`Lhs::strip`]; with `FETCH`, also the distance to the strip after it, to fetch while this
    /// one is read (0, the strip itself, for the last one). `FETCH` only ever comes with a panel
    /// that [`Lhs::fetches_ahead`].
    #[inline(always)]
    fn strip_for<const FETCH: bool>(&self, i0: usize, rows: usize) -> LhsStrip {
        let strip = self.strip(i0, rows);
        match self {
            // Wrapping: as in `strip`, a panel without columns may have any row stride.
            Lhs::Streamed(a) if FETCH && i0 + rows < a.rows() => {
                LhsStrip { next_strip: rows.wrapping_mul(a.row_stride()), ..strip }
            }
            _ => strip,
        }
    }

    /// Whether every strip has `offs[i] = i` (a packed, zero-padded panel), which the microkernel
    /// then addresses from two pointers with constant displacements. Panels read in place keep
    /// their offsets in registers: Vᵀ of a row-major V also has rows one float apart, but the
    /// constant-offset loop ran attention prefill 7 % slower there.
    #[inline(always)]
    fn unit_rows(&self) -> bool {
        matches!(self, Lhs::Packed(_))
    }

    /// Rows of the register tile that reads this operand on `S`. A streamed panel stays with MR
    /// rows: its k loop also carries the next strip's fetch, and with twelve rows its row
    /// addresses spilled to the stack (2048³ on one AVX-512 core: 64 % of the FMA peak, against
    /// 69 % with six rows; `matmul` packs A for the tall tile instead, 81 %).
    #[inline(always)]
    fn tile_rows<S: Simd>(&self) -> usize {
        if matches!(self, Lhs::Streamed(_)) { MR } else { mr_for::<S>() }
    }

    /// Whether this is a streamed panel that can fetch ahead: unit column stride, more than one
    /// strip. Any other streamed panel is read exactly as a strided one.
    fn fetches_ahead(&self) -> bool {
        matches!(self, Lhs::Streamed(a) if a.col_stride() == 1 && a.rows() > MR)
    }
}

/// The right operand of a macro-kernel call: packed into NR strips, or read in place when its
/// rows are already unit-stride and a whole number of strips wide (a V tile with d_v = 64, 128…).
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    /// Packed by [`PackedB::pack`].
    Packed(PackedB<'a>),
    /// Read in place; made by [`Rhs::direct`].
    Direct(DirectB<'a>),
}

/// A right operand the microkernel can read in place: unit column stride, columns a multiple of
/// the NR it was checked for.
#[derive(Clone, Copy, Debug)]
pub struct DirectB<'a> {
    b: MatRef<'a>,
    nr: usize,
}

impl<'a> From<PackedB<'a>> for Rhs<'a> {
    fn from(b: PackedB<'a>) -> Self {
        Rhs::Packed(b)
    }
}

impl<'a> Rhs<'a> {
    /// `b` read in place by `isa`'s register tile if its layout allows (unit column stride,
    /// whole NR strips), else `None` (pack it instead).
    pub fn direct(isa: Isa, b: MatRef<'a>) -> Option<Rhs<'a>> {
        Self::direct_for(nr_of(isa), b)
    }
    fn direct_for(nr: usize, b: MatRef<'a>) -> Option<Rhs<'a>> {
        (b.col_stride() == 1 && b.cols().is_multiple_of(nr)).then_some(Rhs::Direct(DirectB { b, nr }))
    }
    /// Rows (the k of the product).
    pub fn depth(&self) -> usize {
        match self {
            Rhs::Packed(b) => b.depth(),
            Rhs::Direct(d) => d.b.rows(),
        }
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        match self {
            Rhs::Packed(b) => b.cols(),
            Rhs::Direct(d) => d.b.cols(),
        }
    }
    /// The NR this operand's strips were laid out or checked for.
    fn strip_width(&self) -> usize {
        match self {
            Rhs::Packed(b) => b.strip_width(),
            Rhs::Direct(d) => d.nr,
        }
    }
    /// Columns `j0..j0 + cols`; `j0` is a multiple of NR, and for a direct B so is `cols`.
    fn sub_cols(&self, j0: usize, cols: usize) -> Rhs<'a> {
        match self {
            Rhs::Packed(b) => Rhs::Packed(b.sub_cols(j0, cols)),
            Rhs::Direct(d) => {
                assert!(j0.is_multiple_of(d.nr), "sub_cols({j0}, {cols}) of a direct B");
                Rhs::direct_for(d.nr, d.b.block(0, j0, d.b.rows(), cols))
                    .expect("whole strips of a direct B are direct")
            }
        }
    }
    /// Start of the NR strip at column `j0` and the distance between its rows.
    #[inline(always)]
    fn strip(&self, j0: usize) -> (*const f32, usize) {
        match self {
            Rhs::Packed(b) => (b.strip_ptr(j0 / b.strip_width()), b.strip_width()),
            Rhs::Direct(d) => (d.b.ptr().wrapping_add(j0), d.b.row_stride()),
        }
    }
}

/// `C ← α·A·B + β·C` for one `mc × kc` panel of A and one packed `kc × nc` panel of B, where
/// `C` is `mc × nc`. With `β = 0`, C is written without being read.
///
/// Panics if the shapes disagree, or if B was packed or checked for another ISA's tile width
/// (O(1) checks per call).
pub fn macro_kernel<'b>(isa: Isa, a: Lhs<'_>, b: impl Into<Rhs<'b>>, c: MatMut<'_>, alpha: f32, beta: f32) {
    let b = b.into();
    assert!(
        a.rows() == c.rows() && b.cols() == c.cols() && a.depth() == b.depth(),
        "macro_kernel: A {}×{}, B {}×{}, C {}×{}",
        a.rows(),
        a.depth(),
        b.depth(),
        b.cols(),
        c.rows(),
        c.cols()
    );
    if a.fetches_ahead() {
        // The first tile column reads the panel from memory and fetches each next strip as it
        // goes; the other columns find it in cache. Two instantiations, not a branch in one
        // loop: with both loops in one function, the A row pointers spilled to the stack in the
        // loop without hints too (an extra load per broadcast; 1024³ fell from 89 to 86 % of peak).
        let first = nr_of(isa).min(c.cols());
        let (c_first, c_rest) = c.split_at_col(first);
        run_loops::<true>(isa, a, b.sub_cols(0, first), c_first, alpha, beta);
        if c_rest.cols() > 0 {
            run_loops::<false>(isa, a, b.sub_cols(first, c_rest.cols()), c_rest, alpha, beta);
        }
    } else {
        run_loops::<false>(isa, a, b, c, alpha, beta);
    }
}

/// Loops 2 and 1 on `isa`; with `FETCH`, every A strip fetches the next one as it is read.
fn run_loops<const FETCH: bool>(isa: Isa, a: Lhs<'_>, b: Rhs<'_>, c: MatMut<'_>, alpha: f32, beta: f32) {
    dispatch!(isa,
        portable => macro_kernel_body::<_, FETCH>(crate::isa::Portable, a, b, c, alpha, beta),
        // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
        avx2 => unsafe { macro_kernel_avx2::<FETCH>(crate::isa::Avx2Fma::new_unchecked(), a, b, c, alpha, beta) },
        // SAFETY: an Isa of kind Avx512 is only made after detecting AVX-512F, AVX2, FMA and F16C.
        avx512 => unsafe { macro_kernel_avx512::<FETCH>(crate::isa::Avx512::new_unchecked(), a, b, c, alpha, beta) },
    )
}

/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn macro_kernel_avx512<const FETCH: bool>(
    s: crate::isa::Avx512,
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: MatMut<'_>,
    alpha: f32,
    beta: f32,
) {
    macro_kernel_body::<_, FETCH>(s, a, b, c, alpha, beta)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn macro_kernel_avx2<const FETCH: bool>(
    s: crate::isa::Avx2Fma,
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: MatMut<'_>,
    alpha: f32,
    beta: f32,
) {
    macro_kernel_body::<_, FETCH>(s, a, b, c, alpha, beta)
}

/// Loops 2 and 1 around the microkernel; shapes already agree and B's strips are `S`'s NR wide.
/// With `FETCH`, each A strip hints the next one into L2 as it is read (see [`Lhs::Streamed`]).
#[inline(always)]
pub(crate) fn macro_kernel_body<S: Simd, const FETCH: bool>(
    s: S,
    a: Lhs<'_>,
    b: Rhs<'_>,
    mut c: MatMut<'_>,
    alpha: f32,
    beta: f32,
) {
    debug_assert!(a.rows() == c.rows() && b.cols() == c.cols() && a.depth() == b.depth());
    assert_eq!(b.strip_width(), nr_for::<S>(), "B laid out for another ISA's tile");
    let (m, n, k, nr_s) = (c.rows(), c.cols(), b.depth(), nr_for::<S>());
    if m == 0 || n == 0 {
        return;
    }
    let (c_rs, c_cs) = (c.row_stride(), c.col_stride());
    let c_ptr = c.ptr();
    let (tile_rows, unit) = (a.tile_rows::<S>(), a.unit_rows());
    // LOOP 2 (JR): n in NR strips of the packed B panel.
    for jr in (0..n).step_by(nr_s) {
        let b_strip = b.strip(jr);
        let nr = nr_s.min(n - jr);
        // LOOP 1 (IR): m in strips of the tile's rows; what is left below the last whole one goes
        // in strips of MR (packed A strips are MR rows, so every strip starts on one).
        let mut ir = 0;
        while ir < m {
            let mr = if m - ir >= tile_rows { tile_rows } else { MR.min(m - ir) };
            let ptr = c_ptr.wrapping_add(ir * c_rs + jr * c_cs);
            let c_tile = CTile { ptr, rs: c_rs, cs: c_cs, rows: mr, cols: nr, alpha, beta };
            let a_strip = a.strip_for::<FETCH>(ir, mr);
            // SAFETY: mr ≤ mr_for::<S>(), and a strip of more than MR rows is whole; the strip
            // covers k columns of MR (or all mr) A rows, clamped into the panel, and a k×NR B
            // strip (its width checked above); C rows ir..ir+mr and columns jr..jr+nr are inside
            // the view. `unit` holds only where `offs[i] = i` for the rows read.
            unsafe {
                if unit {
                    microkernel::<S, FETCH, true>(s, k, a_strip, b_strip, c_tile)
                } else {
                    microkernel::<S, FETCH, false>(s, k, a_strip, b_strip, c_tile)
                }
            };
            ir += mr;
        }
    }
}
