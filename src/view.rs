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
            .ok_or_else(|| Error::OutOfBounds(describe(rows, cols, row_stride, col_stride, data.len())))
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
            return Err(Error::OutOfBounds(describe(rows, cols, row_stride, col_stride, len)));
        }
        kv::MatMut::new(data, rows, cols, row_stride, col_stride)
            .map(MatMut)
            .ok_or_else(|| Error::OverlappingOutput(describe(rows, cols, row_stride, col_stride, len)))
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

fn describe4(shape: [usize; 4], strides: [usize; 4], len: usize) -> String {
    format!("shape {shape:?} with strides {strides:?} over a slice of {len}")
}

/// The memory order of a dense 4-D tensor, outermost dimension first.
#[derive(Clone, Copy)]
enum Layout {
    Bhld,
    Blhd,
}

/// The strides of a dense tensor of logical shape `[batch, heads, len, dim]` stored in `layout`
/// order; `Err` when its element count overflows `usize`. A tensor without elements needs no
/// storage, whatever its other dimensions, and gets zero strides.
fn dense_strides(shape: [usize; 4], layout: Layout) -> Result<[usize; 4]> {
    if shape.contains(&0) {
        return Ok([0; 4]);
    }
    let outermost_first = match layout {
        Layout::Bhld => [0, 1, 2, 3],
        Layout::Blhd => [0, 2, 1, 3],
    };
    let mut strides = [0; 4];
    let mut step = 1usize;
    for &dim in outermost_first.iter().rev() {
        strides[dim] = step;
        step = step.checked_mul(shape[dim]).ok_or_else(|| {
            Error::OutOfBounds(format!("shape {shape:?} has more than usize::MAX elements"))
        })?;
    }
    Ok(strides)
}

/// A read-only 4-D tensor, indexed `[batch, heads, len, dim]` whatever its memory layout.
/// `f32` for Q, K, V and biases; `bool` for masks.
#[derive(Debug)]
pub struct View4<'a, T = f32>(pub(crate) kv::View4<'a, T>);

impl<T> Clone for View4<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for View4<'_, T> {}

impl<'a, T: Copy> View4<'a, T> {
    /// A view with explicit strides (in elements) for `[batch, heads, len, dim]`.
    pub fn new(data: &'a [T], shape: [usize; 4], strides: [usize; 4]) -> Result<Self> {
        kv::View4::new(data, shape, strides)
            .map(View4)
            .ok_or_else(|| Error::OutOfBounds(describe4(shape, strides, data.len())))
    }
    /// Dense memory in `[batch, heads, len, dim]` order (PyTorch's default, Hugging Face KV caches).
    pub fn bhld(data: &'a [T], shape: [usize; 4]) -> Result<Self> {
        Self::new(data, shape, dense_strides(shape, Layout::Bhld)?)
    }
    /// Dense memory in `[batch, len, heads, dim]` order (FlashAttention's layout, a projection's
    /// output). `shape` is the logical `[batch, heads, len, dim]`, as for every constructor.
    pub fn blhd(data: &'a [T], shape: [usize; 4]) -> Result<Self> {
        Self::new(data, shape, dense_strides(shape, Layout::Blhd)?)
    }
    /// `[batch, heads, len, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.0.shape()
    }
}

/// A mutable 4-D tensor `[batch, heads, len, dim]`; its strides must map distinct indices to
/// distinct elements.
#[derive(Debug)]
pub struct View4Mut<'a>(pub(crate) kv::View4Mut<'a>);

impl<'a> View4Mut<'a> {
    /// A view with explicit strides (in elements) for `[batch, heads, len, dim]`.
    pub fn new(data: &'a mut [f32], shape: [usize; 4], strides: [usize; 4]) -> Result<Self> {
        let len = data.len();
        if kv::View4::new(&*data, shape, strides).is_none() {
            return Err(Error::OutOfBounds(describe4(shape, strides, len)));
        }
        kv::View4Mut::new(data, shape, strides)
            .map(View4Mut)
            .ok_or_else(|| Error::OverlappingOutput(describe4(shape, strides, len)))
    }
    /// Dense memory in `[batch, heads, len, dim]` order.
    pub fn bhld(data: &'a mut [f32], shape: [usize; 4]) -> Result<Self> {
        Self::new(data, shape, dense_strides(shape, Layout::Bhld)?)
    }
    /// Dense memory in `[batch, len, heads, dim]` order; `shape` is the logical
    /// `[batch, heads, len, dim]`.
    pub fn blhd(data: &'a mut [f32], shape: [usize; 4]) -> Result<Self> {
        Self::new(data, shape, dense_strides(shape, Layout::Blhd)?)
    }
    /// `[batch, heads, len, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.0.shape()
    }
}
