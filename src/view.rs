//! Strided 2-D matrix views for the public API; every constructor checks bounds once.

use crate::error::{Error, Result};
use flashcpu_kernels::view as kv;

/// A read-only `rows × cols` f32 matrix over a slice: element `(i, j)` is
/// `data[i·row_stride + j·col_stride]`. Any strides are allowed, so a transpose is free.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a>(pub(crate) kv::MatRef<'a>);

/// A mutable `rows × cols` f32 matrix over a slice. Its strides must map distinct indices to
/// distinct elements (every dense layout does).
#[derive(Debug)]
pub struct MatMut<'a>(pub(crate) kv::MatMut<'a>);

fn describe(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) -> String {
    format!("{rows}×{cols} with strides ({rs}, {cs}) over a slice of {len}")
}

impl<'a> MatRef<'a> {
    /// A view with explicit strides (in elements).
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        kv::MatRef::new(data, rows, cols, row_stride, col_stride)
            .map(MatRef)
            .ok_or_else(|| {
                Error::OutOfBounds(describe(rows, cols, row_stride, col_stride, data.len()))
            })
    }
    /// A dense row-major view (`row_stride = cols`).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }
    /// A dense column-major view (`col_stride = rows`).
    pub fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }
    /// The transpose (swaps the strides; copies nothing).
    pub fn t(self) -> Self {
        MatRef(self.0.t())
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.0.rows()
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.0.cols()
    }
    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<f32> {
        (i < self.rows() && j < self.cols()).then(|| self.0.at(i, j))
    }
}

impl<'a> MatMut<'a> {
    /// A view with explicit strides (in elements).
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        let len = data.len();
        if kv::MatRef::new(data, rows, cols, row_stride, col_stride).is_none() {
            return Err(Error::OutOfBounds(describe(
                rows, cols, row_stride, col_stride, len,
            )));
        }
        kv::MatMut::new(data, rows, cols, row_stride, col_stride)
            .map(MatMut)
            .ok_or_else(|| {
                Error::OverlappingOutput(describe(rows, cols, row_stride, col_stride, len))
            })
    }
    /// A dense row-major view (`row_stride = cols`).
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }
    /// A dense column-major view (`col_stride = rows`).
    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.0.rows()
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.0.cols()
    }
    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<f32> {
        (i < self.rows() && j < self.cols()).then(|| self.0.at(i, j))
    }
}
