//! Packing: copy a panel into the order the microkernel walks it, zero-padded to whole strips.
//!
//! `PackedB`: `ceil(n/NR)` strips, each `k × NR` row by row (strip j, row p at `(j·k + p)·NR`).
//! `PackedA`: `ceil(m/MR)` strips, each `k × MR` column by column (strip i, column p at `(i·k + p)·MR`).
//! The zero padding makes every edge strip a full one, so the microkernel never branches on size.

use super::microkernel::{MR, NR};
use crate::view::MatRef;

/// A `k × n` right operand packed into NR-wide strips.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    data: &'a [f32],
    depth: usize,
    cols: usize,
}

/// An `m × k` left operand packed into MR-tall strips.
#[derive(Clone, Copy, Debug)]
pub struct PackedA<'a> {
    data: &'a [f32],
    rows: usize,
    depth: usize,
}

impl<'a> PackedB<'a> {
    /// Floats needed to pack a `k × n` panel.
    pub fn len_for(k: usize, n: usize) -> usize {
        n.div_ceil(NR) * NR * k
    }

    /// Packs `b` into the front of `buf`; panics if `buf` is shorter than [`PackedB::len_for`].
    pub fn pack(b: MatRef<'_>, buf: &'a mut [f32]) -> PackedB<'a> {
        let (k, n) = (b.rows(), b.cols());
        let buf = &mut buf[..Self::len_for(k, n)];
        if k > 0 {
            for (strip, out) in buf.chunks_exact_mut(NR * k).enumerate() {
                let j0 = strip * NR;
                // Strip row p holds B[p, j0..j0 + NR]: a NR-wide panel with B's strides.
                pack_panel::<NR>(b, 0, j0, k, NR.min(n - j0), out);
            }
        }
        PackedB { data: buf, depth: k, cols: n }
    }

    /// A handle on a buffer whose strips were packed piecewise (each piece by [`PackedB::pack`] on
    /// whole strips, e.g. on different threads). Panics if `buf` is shorter than [`PackedB::len_for`].
    pub fn from_buffer(buf: &'a [f32], k: usize, n: usize) -> PackedB<'a> {
        PackedB { data: &buf[..Self::len_for(k, n)], depth: k, cols: n }
    }

    /// Columns `j0..j0 + cols` as a packed operand; `j0` must start a strip. Panics otherwise.
    pub fn sub_cols(&self, j0: usize, cols: usize) -> PackedB<'a> {
        assert!(
            j0.is_multiple_of(NR) && j0 + cols <= self.cols,
            "sub_cols({j0}, {cols}) of {} columns",
            self.cols
        );
        PackedB { data: &self.data[j0 * self.depth..], depth: self.depth, cols }
    }

    /// Rows (the k of the product).
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Columns before padding.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The packed strips (a multiple of NR floats).
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
    /// Start of strip `j` (`k·NR` floats).
    pub(crate) fn strip_ptr(&self, j: usize) -> *const f32 {
        self.data[j * NR * self.depth..].as_ptr()
    }
}

impl<'a> PackedA<'a> {
    /// Floats needed to pack an `m × k` panel.
    pub fn len_for(m: usize, k: usize) -> usize {
        m.div_ceil(MR) * MR * k
    }

    /// Packs `a` into the front of `buf`; panics if `buf` is shorter than [`PackedA::len_for`].
    pub fn pack(a: MatRef<'_>, buf: &'a mut [f32]) -> PackedA<'a> {
        let (m, k) = (a.rows(), a.cols());
        let buf = &mut buf[..Self::len_for(m, k)];
        if k > 0 {
            for (strip, out) in buf.chunks_exact_mut(MR * k).enumerate() {
                let i0 = strip * MR;
                // Strip column p holds A[i0..i0 + MR, p]: the transpose of an MR-wide panel of Aᵀ.
                pack_panel::<MR>(a.t(), 0, i0, k, MR.min(m - i0), out);
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

/// Copies the `depth × width` block of `src` at `(r0, c0)` into `out` as `depth` rows of `W`
/// floats (`out[p·W + j] = src[r0 + p, c0 + j]`), zero-padding columns `width..W`. Picks the loop order that reads `src` contiguously.
///
/// Panics if the block is outside `src` or `out` is shorter than `depth·W`.
fn pack_panel<const W: usize>(
    src: MatRef<'_>,
    r0: usize,
    c0: usize,
    depth: usize,
    width: usize,
    out: &mut [f32],
) {
    assert!(width <= W && r0 + depth <= src.rows() && c0 + width <= src.cols() && out.len() >= depth * W);
    let (rs, cs) = (src.row_stride(), src.col_stride());
    let base = src.ptr();
    let at = |p: usize, j: usize| {
        // SAFETY: p < depth and j < width, so (r0 + p, c0 + j) is inside the view (asserted above),
        // and a MatRef guarantees every in-range index lies inside its slice.
        unsafe { *base.add((r0 + p) * rs + (c0 + j) * cs) }
    };
    if width == W && cs == 1 {
        // Unit column stride: each output row is W contiguous floats (vector copies).
        fill_rows::<W>(out, depth, |p, j| {
            // SAFETY: as for `at`; with cs = 1 the offset is (r0 + p)·rs + c0 + j.
            unsafe { *base.add((r0 + p) * rs + c0 + j) }
        });
    } else if width == W {
        // Other strides (a row-major A, a transposed row-major B): W read streams gathered into
        // contiguous output rows.
        fill_rows::<W>(out, depth, at);
    } else {
        for (p, row) in out.chunks_exact_mut(W).take(depth).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = if j < width { at(p, j) } else { 0.0 };
            }
        }
    }
}

/// `out[p·W + j] = value(p, j)` for `p < depth`, `j < W`, row by row.
#[inline(always)]
fn fill_rows<const W: usize>(out: &mut [f32], depth: usize, value: impl Fn(usize, usize) -> f32) {
    for (p, row) in out.chunks_exact_mut(W).take(depth).enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = value(p, j);
        }
    }
}
