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
        let len = Self::len_for(k, n);
        let buf = &mut buf[..len];
        for (strip, out) in buf
            .chunks_exact_mut(NR * k.max(1))
            .enumerate()
            .take(n.div_ceil(NR))
        {
            let j0 = strip * NR;
            let nr = NR.min(n - j0);
            if b.col_stride() == 1 || nr < NR {
                for (p, row) in out.chunks_exact_mut(NR).enumerate() {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = if j < nr { b.at(p, j0 + j) } else { 0.0 };
                    }
                }
            } else {
                // Column-strided B (a transposed row-major matrix, e.g. Kᵀ): read each column
                // contiguously along p, scatter into the strip.
                for j in 0..NR {
                    for p in 0..k {
                        out[p * NR + j] = b.at(p, j0 + j);
                    }
                }
            }
        }
        PackedB {
            data: buf,
            depth: k,
            cols: n,
        }
    }

    /// A handle on a buffer whose strips were packed piecewise (each piece by [`PackedB::pack`] on
    /// whole strips, e.g. on different threads). Panics if `buf` is shorter than [`PackedB::len_for`].
    pub fn from_buffer(buf: &'a [f32], k: usize, n: usize) -> PackedB<'a> {
        PackedB {
            data: &buf[..Self::len_for(k, n)],
            depth: k,
            cols: n,
        }
    }

    /// Columns `j0..j0 + cols` as a packed operand; `j0` must start a strip. Panics otherwise.
    pub fn sub_cols(&self, j0: usize, cols: usize) -> PackedB<'a> {
        assert!(
            j0 % NR == 0 && j0 + cols <= self.cols,
            "sub_cols({j0}, {cols}) of {} columns",
            self.cols
        );
        PackedB {
            data: &self.data[j0 * self.depth..],
            depth: self.depth,
            cols,
        }
    }

    /// Rows (the k of the product).
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Columns before padding.
    pub fn cols(&self) -> usize {
        self.cols
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
        let len = Self::len_for(m, k);
        let buf = &mut buf[..len];
        for (strip, out) in buf
            .chunks_exact_mut(MR * k.max(1))
            .enumerate()
            .take(m.div_ceil(MR))
        {
            let i0 = strip * MR;
            let mr = MR.min(m - i0);
            for (p, col) in out.chunks_exact_mut(MR).enumerate() {
                for (i, x) in col.iter_mut().enumerate() {
                    *x = if i < mr { a.at(i0 + i, p) } else { 0.0 };
                }
            }
        }
        PackedA {
            data: buf,
            rows: m,
            depth: k,
        }
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
