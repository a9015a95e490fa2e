//! Packing: copy a panel into the order the microkernel walks it, zero-padded to whole strips.
//!
//! `PackedB`: `ceil(n/NR)` strips, each `k × NR` row by row (strip j, row p at `(j·k + p)·NR`),
//! where NR is the register tile's width on the ISA that packs it (16, or 32 under AVX-512).
//! `PackedA`: `ceil(m/MR)` strips, each `k × MR` column by column (strip i, column p at `(i·k + p)·MR`).
//! The zero padding makes every edge strip a full one, so the microkernel never branches on size.

use super::microkernel::{MR, nr_for};
#[cfg(target_arch = "x86_64")]
use crate::isa::{Avx2Fma, Avx512};
use crate::isa::{Isa, Portable, Simd, dispatch};
use crate::view::MatRef;

/// A `k × n` right operand packed into NR-wide strips for one ISA's register tile.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    data: &'a [f32],
    depth: usize,
    cols: usize,
    /// Strip width: the NR of the ISA it was packed for.
    nr: usize,
}

/// An `m × k` left operand packed into MR-tall strips.
#[derive(Clone, Copy, Debug)]
pub struct PackedA<'a> {
    data: &'a [f32],
    rows: usize,
    depth: usize,
}

impl<'a> PackedB<'a> {
    /// Floats needed to pack a `k × n` panel for `isa`.
    ///
    /// Panics if that count overflows `usize` (no such buffer could exist).
    pub fn len_for(isa: Isa, k: usize, n: usize) -> usize {
        packed_len(super::nr_of(isa), n, k)
    }

    /// Packs `b` into the front of `buf` for the register tile of `isa`; panics if `buf` is
    /// shorter than [`PackedB::len_for`].
    pub fn pack(isa: Isa, b: MatRef<'_>, buf: &'a mut [f32]) -> PackedB<'a> {
        dispatch!(isa,
            portable => Self::pack_with(Portable, b, buf),
            // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
            avx2 => unsafe { pack_b_avx2(Avx2Fma::new_unchecked(), b, buf) },
            // SAFETY: an Isa of kind Avx512 is only made after detecting AVX-512F, AVX2, FMA and F16C.
            avx512 => unsafe { pack_b_avx512(Avx512::new_unchecked(), b, buf) },
        )
    }

    /// [`PackedB::pack`] inside a kernel that already holds its ISA token: strips as wide as
    /// `S`'s register tile, copied with its 8-lane token.
    #[inline(always)]
    pub(crate) fn pack_with<S: Simd>(s: S, b: MatRef<'_>, buf: &'a mut [f32]) -> PackedB<'a> {
        let (k, n, nr) = (b.rows(), b.cols(), nr_for::<S>());
        let buf = &mut buf[..packed_len(nr, n, k)];
        let s = s.narrow();
        if k > 0 {
            // The full strips of a row-major B are copied row by row, up to GROUP strips per
            // walk down B; the rest (a strided B, a last partial strip) strip by strip.
            let full = if b.col_stride() == 1 { n / nr } else { 0 };
            let (fulls, rest) = buf.split_at_mut(full * nr * k);
            for (g, out) in fulls.chunks_mut(GROUP * nr * k).enumerate() {
                copy_row_major_strips(s, b, g * GROUP * nr, nr, out);
            }
            for (strip, out) in rest.chunks_exact_mut(nr * k).enumerate() {
                let j0 = (full + strip) * nr;
                // Strip row p holds B[p, j0..j0 + NR]: a NR-wide panel with B's strides.
                pack_panel(s, b, (0, j0), k, (nr.min(n - j0), nr), out);
            }
        }
        PackedB { data: buf, depth: k, cols: n, nr }
    }

    /// A handle on a buffer whose strips were packed for `isa` piecewise (each piece by
    /// [`PackedB::pack`] on whole strips, e.g. on different threads). Panics if `buf` is shorter
    /// than [`PackedB::len_for`].
    pub fn from_buffer(isa: Isa, buf: &'a [f32], k: usize, n: usize) -> PackedB<'a> {
        Self::of_width(super::nr_of(isa), buf, k, n)
    }

    /// [`PackedB::from_buffer`] for `S`'s register tile, inside a kernel.
    pub(crate) fn from_buffer_with<S: Simd>(_: S, buf: &'a [f32], k: usize, n: usize) -> PackedB<'a> {
        Self::of_width(nr_for::<S>(), buf, k, n)
    }

    /// The strips of width `nr` at the front of `buf`.
    fn of_width(nr: usize, buf: &'a [f32], k: usize, n: usize) -> PackedB<'a> {
        PackedB { data: &buf[..packed_len(nr, n, k)], depth: k, cols: n, nr }
    }

    /// Columns `j0..j0 + cols` as a packed operand; `j0` must start a strip. Panics otherwise.
    pub fn sub_cols(&self, j0: usize, cols: usize) -> PackedB<'a> {
        assert!(
            j0.is_multiple_of(self.nr) && cols <= self.cols && j0 <= self.cols - cols,
            "sub_cols({j0}, {cols}) of {} columns",
            self.cols
        );
        PackedB { data: &self.data[j0 * self.depth..], depth: self.depth, cols, nr: self.nr }
    }

    /// Rows (the k of the product).
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Columns before padding.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Width of each strip: the NR of the ISA it was packed for.
    pub fn strip_width(&self) -> usize {
        self.nr
    }
    /// The packed strips (a multiple of NR floats).
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
    /// Start of strip `j` (`k·NR` floats).
    pub(crate) fn strip_ptr(&self, j: usize) -> *const f32 {
        self.data[j * self.nr * self.depth..].as_ptr()
    }
}

/// Floats of `ceil(cols / width)` strips of `width × depth`; panics on overflow, before any buffer
/// of that size is sliced or read.
fn packed_len(width: usize, cols: usize, depth: usize) -> usize {
    cols.div_ceil(width)
        .checked_mul(width)
        .and_then(|x| x.checked_mul(depth))
        .unwrap_or_else(|| panic!("a packed {depth} × {cols} panel overflows usize"))
}

impl<'a> PackedA<'a> {
    /// Floats needed to pack an `m × k` panel.
    ///
    /// Panics if that count overflows `usize` (no such buffer could exist).
    pub fn len_for(m: usize, k: usize) -> usize {
        packed_len(MR, m, k)
    }

    /// Packs `a` into the front of `buf` with the instructions of `isa`; panics if `buf` is
    /// shorter than [`PackedA::len_for`].
    pub fn pack(isa: Isa, a: MatRef<'_>, buf: &'a mut [f32]) -> PackedA<'a> {
        dispatch!(isa,
            portable => Self::pack_with(Portable, a, buf),
            // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
            avx2 => unsafe { pack_a_avx2(Avx2Fma::new_unchecked(), a, buf) },
        )
    }

    #[inline(always)]
    fn pack_with<S: Simd>(s: S, a: MatRef<'_>, buf: &'a mut [f32]) -> PackedA<'a> {
        let (m, k) = (a.rows(), a.cols());
        let buf = &mut buf[..Self::len_for(m, k)];
        if k > 0 {
            for (strip, out) in buf.chunks_exact_mut(MR * k).enumerate() {
                let i0 = strip * MR;
                // Strip column p holds A[i0..i0 + MR, p]: the transpose of an MR-wide panel of Aᵀ.
                pack_panel(s.narrow(), a.t(), (0, i0), k, (MR.min(m - i0), MR), out);
            }
        }
        PackedA { data: buf, rows: m, depth: k }
    }

    /// Rows before padding.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (the k of the product).
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Start of strip `i` (`k·MR` floats).
    pub(crate) fn strip_ptr(&self, i: usize) -> *const f32 {
        self.data[i * MR * self.depth..].as_ptr()
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_b_avx2<'a>(s: Avx2Fma, b: MatRef<'_>, buf: &'a mut [f32]) -> PackedB<'a> {
    PackedB::pack_with(s, b, buf)
}

/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn pack_b_avx512<'a>(s: Avx512, b: MatRef<'_>, buf: &'a mut [f32]) -> PackedB<'a> {
    PackedB::pack_with(s, b, buf)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_a_avx2<'a>(s: Avx2Fma, a: MatRef<'_>, buf: &'a mut [f32]) -> PackedA<'a> {
    PackedA::pack_with(s, a, buf)
}

/// Copies the `depth × width` block of `src` at `(r0, c0)` into `out` as `depth` rows of `w`
/// floats (`out[p·w + j] = src[r0 + p, c0 + j]`), zero-padding columns `width..w`. Picks the loop
/// order that reads `src` contiguously.
///
/// Panics if the block is outside `src`, `out` is shorter than `depth·w`, or `w` is neither below
/// 8 nor a multiple of 8.
#[inline(always)]
fn pack_panel<S: Simd>(
    s: S,
    src: MatRef<'_>,
    (r0, c0): (usize, usize),
    depth: usize,
    (width, w): (usize, usize),
    out: &mut [f32],
) {
    const { assert!(S::LANES == 8, "copies and transposes 8-lane vectors") };
    assert!(w <= 8 || w.is_multiple_of(8));
    assert!(width <= w && depth <= src.rows() - r0.min(src.rows()) && c0 + width <= src.cols());
    assert!(depth.checked_mul(w).is_some_and(|len| out.len() >= len));
    let (rs, cs) = (src.row_stride(), src.col_stride());
    // (r0, c0) is inside the view, or nothing is read through `base` (an empty block, or
    // width 0).
    let base = src.ptr().wrapping_add(r0.wrapping_mul(rs).wrapping_add(c0.wrapping_mul(cs)));
    let at = |p: usize, j: usize| {
        // SAFETY: p < depth and j < width, so (r0 + p, c0 + j) is inside the view (asserted above),
        // and a MatRef guarantees every in-range index lies inside its slice.
        unsafe { *base.add(p * rs + j * cs) }
    };
    if rs == 1 && depth >= 8 && S::ONE_REGISTER {
        // Columns are contiguous (a row-major A, a transposed row-major B): read 8 columns × 8
        // rows as vectors and transpose them in registers. Not on the portable build, where an
        // 8-lane vector spans registers and the transpose was slower than the gather below.
        let whole = depth / 8 * 8;
        for p0 in (0..whole).step_by(8) {
            for j0 in (0..w).step_by(8) {
                let cols: [S::V; 8] = core::array::from_fn(|j| {
                    if j0 + j < width {
                        // SAFETY: column j0 + j < width is inside the view and rows p0..p0 + 8 ≤
                        // depth are contiguous in it (rs = 1).
                        unsafe { s.load(base.add(p0 + (j0 + j) * cs)) }
                    } else {
                        s.splat(0.0)
                    }
                });
                let rows = s.transpose8(cols);
                for (p, row) in rows.iter().enumerate() {
                    let dst = (p0 + p) * w + j0;
                    if dst + 8 <= depth * w {
                        // SAFETY: 8 floats from `dst` lie inside the panel's part of `out`. When
                        // w < 8 the store spills into the next row, which a later store overwrites
                        // (rows go in order; w is below 8 or a multiple of 8, asserted above).
                        unsafe { s.store(out.as_mut_ptr().add(dst), *row) };
                    } else {
                        let mut tmp = [0.0f32; 8];
                        // SAFETY: `tmp` holds 8 floats.
                        unsafe { s.store(tmp.as_mut_ptr(), *row) };
                        let len = (w - j0).min(8);
                        out[dst..dst + len].copy_from_slice(&tmp[..len]);
                    }
                }
            }
        }
        fill_rows(
            &mut out[whole * w..],
            w,
            depth - whole,
            |p, j| {
                if j < width { at(whole + p, j) } else { 0.0 }
            },
        );
    } else {
        fill_rows(out, w, depth, |p, j| if j < width { at(p, j) } else { 0.0 });
    }
}

/// Strips of a row-major B copied in one walk down its rows. One strip alone reads one 64-byte
/// line per row of B, a new 4 KiB page per row once B is 1024 wide; four strips read four
/// adjacent lines per row. 512×1024 from L3 on Zen 5: one strip at a time 245 µs, groups of 4
/// 64 µs, groups of 8 77 µs.
const GROUP: usize = 4;

/// Copies the full `nr`-wide strips of `b` (unit column stride) that start at column `j0` into
/// `out` (`out.len() / (k·nr)` strips of `k × nr`, one after another), walking B's rows once and
/// prefetching [`PACK_AHEAD`] rows ahead: without it the walk down the rows stalls on each line.
///
/// Panics if `b`'s column stride is not 1, `nr` is not a multiple of 8, or the strips are not
/// inside `b`.
#[inline(always)]
fn copy_row_major_strips<S: Simd>(s: S, b: MatRef<'_>, j0: usize, nr: usize, out: &mut [f32]) {
    const { assert!(S::LANES == 8, "copies 8-lane vectors") };
    let (k, rs) = (b.rows(), b.row_stride());
    let strips = out.len() / (nr * k).max(1);
    assert!(nr.is_multiple_of(8) && b.col_stride() == 1 && out.len() == strips * nr * k);
    assert!(j0 <= b.cols() && strips * nr <= b.cols() - j0);
    // Column j0 is inside the view (k > 0 rows and strips > 0, asserted above), or nothing is
    // read.
    let base = b.ptr().wrapping_add(j0);
    for p in 0..k {
        let ahead = base.wrapping_add((p + PACK_AHEAD).wrapping_mul(rs));
        for g in 0..strips {
            s.prefetch(ahead.wrapping_add(g * nr));
            for v in (0..nr).step_by(8) {
                // SAFETY: row p < k and columns j0 + g·nr + v .. + 8 ≤ j0 + strips·nr lie inside
                // the view (asserted above; unit column stride); strip g's row p in `out` holds
                // nr floats at (g·k + p)·nr, inside its strips·nr·k floats.
                unsafe {
                    let x = s.load(base.add(p * rs + g * nr + v));
                    s.store(out.as_mut_ptr().add((g * k + p) * nr + v), x);
                }
            }
        }
    }
}

/// Rows ahead that [`copy_row_major_strips`] prefetches: enough lines in flight to cover a miss
/// to L3 at one row per few cycles.
const PACK_AHEAD: usize = 16;

/// `out[p·w + j] = value(p, j)` for `p < depth`, `j < w`, row by row.
#[inline(always)]
fn fill_rows(out: &mut [f32], w: usize, depth: usize, value: impl Fn(usize, usize) -> f32) {
    for (p, row) in out.chunks_exact_mut(w.max(1)).take(depth).enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = value(p, j);
        }
    }
}
