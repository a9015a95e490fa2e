//! The inner two loops of a BLIS-style GEMM and the packing that feeds them.
//!
//! The caller (flashcpu's `matmul`, or an attention tile) runs loops 5–3 and calls in here with a
//! packed `kc × nc` panel of B and an `mc × kc` panel of A, packed or read in place:
//!
//! ```text
//! LOOP 2 (JR): nc in NR-wide strips of B_pack
//!   LOOP 1 (IR): mc in MR-tall strips of A
//!     microkernel: C[MR×NR] = α·(A_strip · B_strip) + β·C[MR×NR]
//! ```

#[cfg(target_arch = "x86_64")]
mod avx512;
mod microkernel;
mod pack;

pub use microkernel::{MR, NR};
pub use pack::{PackedA, PackedB};

use crate::isa::{Isa, Simd, dispatch};
use crate::view::{MatMut, MatRef};
use microkernel::{CTile, LhsStrip, microkernel};

/// The left operand of a macro-kernel call: packed into MR strips, or read in place through its
/// strides (cheaper when the panel is small or already hot in cache).
#[derive(Clone, Copy, Debug)]
pub enum Lhs<'a> {
    /// Packed by [`PackedA::pack`].
    Packed(PackedA<'a>),
    /// Read in place; any strides.
    Strided(MatRef<'a>),
}

impl Lhs<'_> {
    fn rows(&self) -> usize {
        match self {
            Lhs::Packed(a) => a.rows(),
            Lhs::Strided(a) => a.rows(),
        }
    }
    fn depth(&self) -> usize {
        match self {
            Lhs::Packed(a) => a.depth(),
            Lhs::Strided(a) => a.cols(),
        }
    }

    /// Row pointers and column step of the MR strip starting at row `i0`. Rows past the end of a
    /// strided panel repeat its last row (their results are never stored), so nothing is read out
    /// of bounds and the inner loop needs no branch.
    #[inline(always)]
    fn strip(&self, i0: usize) -> LhsStrip {
        match self {
            Lhs::Packed(a) => {
                let base = a.strip_ptr(i0 / MR);
                LhsStrip { rows: core::array::from_fn(|i| base.wrapping_add(i)), col_step: MR }
            }
            Lhs::Strided(a) => {
                let last = a.rows() - 1;
                // Wrapping: with no columns (k = 0) any row stride is valid and nothing is read.
                let rows = core::array::from_fn(|i| {
                    a.ptr().wrapping_add((i0 + i).min(last).wrapping_mul(a.row_stride()))
                });
                LhsStrip { rows, col_step: a.col_stride() }
            }
        }
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

/// A right operand the microkernel can read in place: unit column stride, columns a multiple of NR.
#[derive(Clone, Copy, Debug)]
pub struct DirectB<'a>(MatRef<'a>);

impl<'a> From<PackedB<'a>> for Rhs<'a> {
    fn from(b: PackedB<'a>) -> Self {
        Rhs::Packed(b)
    }
}

impl<'a> Rhs<'a> {
    /// `b` read in place if its layout allows, else `None` (pack it instead).
    pub fn direct(b: MatRef<'a>) -> Option<Rhs<'a>> {
        (b.col_stride() == 1 && b.cols().is_multiple_of(NR)).then_some(Rhs::Direct(DirectB(b)))
    }
    /// Rows (the k of the product).
    pub fn depth(&self) -> usize {
        match self {
            Rhs::Packed(b) => b.depth(),
            Rhs::Direct(b) => b.0.rows(),
        }
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        match self {
            Rhs::Packed(b) => b.cols(),
            Rhs::Direct(b) => b.0.cols(),
        }
    }
    /// Start of the NR strip at column `j0` and the distance between its rows.
    #[inline(always)]
    fn strip(&self, j0: usize) -> (*const f32, usize) {
        match self {
            Rhs::Packed(b) => (b.strip_ptr(j0 / NR), NR),
            Rhs::Direct(b) => (b.0.ptr().wrapping_add(j0), b.0.row_stride()),
        }
    }
}

/// `C ← α·A·B + β·C` for one `mc × kc` panel of A and one packed `kc × nc` panel of B, where
/// `C` is `mc × nc`. With `β = 0`, C is written without being read.
///
/// Panics if the shapes disagree (an O(1) check per call).
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
    dispatch!(isa,
        portable => macro_kernel_body(crate::isa::Portable, a, b, c, alpha, beta),
        // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
        avx2 => unsafe { macro_kernel_avx2(crate::isa::Avx2Fma::new_unchecked(), a, b, c, alpha, beta) },
        // SAFETY: an Isa of kind Avx512 is only made after detecting AVX-512F, AVX2, FMA and F16C.
        avx512 => unsafe { avx512::macro_kernel_avx512(crate::isa::Avx512::new_unchecked(), a, b, c, alpha, beta) },
    )
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn macro_kernel_avx2(
    s: crate::isa::Avx2Fma,
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: MatMut<'_>,
    alpha: f32,
    beta: f32,
) {
    macro_kernel_body(s, a, b, c, alpha, beta)
}

/// Loops 2 and 1 around the microkernel; shapes already agree.
#[inline(always)]
pub(crate) fn macro_kernel_body<S: Simd>(
    s: S,
    a: Lhs<'_>,
    b: Rhs<'_>,
    mut c: MatMut<'_>,
    alpha: f32,
    beta: f32,
) {
    debug_assert!(a.rows() == c.rows() && b.cols() == c.cols() && a.depth() == b.depth());
    let (m, n, k) = (c.rows(), c.cols(), b.depth());
    if m == 0 || n == 0 {
        return;
    }
    let (c_rs, c_cs) = (c.row_stride(), c.col_stride());
    let c_ptr = c.ptr();
    // LOOP 2 (JR): n in NR strips of the packed B panel.
    for jr in (0..n).step_by(NR) {
        let b_strip = b.strip(jr);
        let nr = NR.min(n - jr);
        // LOOP 1 (IR): m in MR strips of A.
        for ir in (0..m).step_by(MR) {
            let mr = MR.min(m - ir);
            let ptr = c_ptr.wrapping_add(ir * c_rs + jr * c_cs);
            let c_tile = CTile { ptr, rs: c_rs, cs: c_cs, rows: mr, cols: nr, alpha, beta };
            // SAFETY: the strip pointers cover k columns of A rows (clamped into the panel) and a
            // k×NR packed B strip; C rows ir..ir+mr and columns jr..jr+nr are inside the view.
            unsafe { microkernel(s, k, a.strip(ir), b_strip, c_tile) };
        }
    }
}
