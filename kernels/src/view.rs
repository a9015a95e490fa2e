//! Strided 2-D views over f32 storage, checked once at construction.
//!
//! A view's constructor proves that every element index `(i, j)` maps inside its slice, so the
//! kernels can index without per-element bounds checks. [`MatMut`] also proves that distinct
//! indices map to distinct elements, which is what makes splitting it across threads sound even
//! when the pieces interleave in memory (a column-major matrix split into row blocks).

use core::marker::PhantomData;

/// Offset of the last element of a `rows × cols` view, or `None` on overflow. Zero-size views have
/// no elements and need no storage.
fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(row_stride)?
        .checked_add((cols - 1).checked_mul(col_stride)?)?
        .checked_add(1)
}

/// Whether `(i, j) ↦ i·rs + j·cs` is one-to-one on a `rows × cols` grid. Sufficient (not necessary)
/// condition: one stride steps over the whole span of the other, as in every dense layout.
fn strides_are_injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows <= 1 && cols <= 1 {
        return true;
    }
    if rows <= 1 {
        return cs >= 1;
    }
    if cols <= 1 {
        return rs >= 1;
    }
    let row_span = (cols - 1).checked_mul(cs).and_then(|x| x.checked_add(1));
    let col_span = (rows - 1).checked_mul(rs).and_then(|x| x.checked_add(1));
    (cs >= 1 && row_span.is_some_and(|s| rs >= s)) || (rs >= 1 && col_span.is_some_and(|s| cs >= s))
}

/// A read-only `rows × cols` matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// The view, if every element lies inside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Option<Self> {
        let needed = extent(rows, cols, row_stride, col_stride)?;
        (needed <= data.len()).then_some(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The transpose; free, it swaps the strides.
    pub fn t(self) -> MatRef<'a> {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Element `(i, j)`; panics when out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "MatRef::at({i}, {j}) outside {}×{}",
            self.rows,
            self.cols
        );
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// The block of rows `r0..r0 + rows` and columns `c0..c0 + cols`; panics when it does not fit.
    pub fn block(&self, r0: usize, c0: usize, rows: usize, cols: usize) -> MatRef<'a> {
        assert!(
            r0 + rows <= self.rows && c0 + cols <= self.cols,
            "block outside the view"
        );
        let start = if rows == 0 || cols == 0 {
            0
        } else {
            r0 * self.row_stride + c0 * self.col_stride
        };
        MatRef {
            data: &self.data[start..],
            rows,
            cols,
            ..*self
        }
    }

    /// Pointer to element `(0, 0)`. Every `(i, j)` in range is at `ptr + i·rs + j·cs`.
    pub(crate) fn ptr(&self) -> *const f32 {
        self.data.as_ptr()
    }
}

/// A mutable `rows × cols` matrix whose indices map to distinct elements.
///
/// Holds a pointer rather than a slice so that disjoint row or column blocks can be handed to
/// different threads even when their memory interleaves.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a MatMut is an exclusive borrow of the elements it indexes (distinct from those of every
// other MatMut split from the same borrow), so moving it to another thread is like moving `&mut [f32]`.
unsafe impl Send for MatMut<'_> {}
// SAFETY: `&MatMut` gives no access to elements except through `&self` readers, as `&[f32]` would.
unsafe impl Sync for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// The view, if every element lies inside `data` and no two indices share an element.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Option<Self> {
        let needed = extent(rows, cols, row_stride, col_stride)?;
        (needed <= data.len() && strides_are_injective(rows, cols, row_stride, col_stride))
            .then_some(MatMut {
                ptr: data.as_mut_ptr(),
                rows,
                cols,
                row_stride,
                col_stride,
                _borrow: PhantomData,
            })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// A shorter-lived view of the same elements.
    pub fn rb(&mut self) -> MatMut<'_> {
        MatMut {
            _borrow: PhantomData,
            ..*self
        }
    }

    /// Element `(i, j)`; panics when out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "MatMut::at({i}, {j}) outside {}×{}",
            self.rows,
            self.cols
        );
        // SAFETY: (i, j) is in range, so the offset lies inside the borrowed slice (checked in `new`).
        unsafe { *self.ptr.add(i * self.row_stride + j * self.col_stride) }
    }

    /// Writes element `(i, j)`; panics when out of range.
    pub fn set(&mut self, i: usize, j: usize, value: f32) {
        assert!(
            i < self.rows && j < self.cols,
            "MatMut::set({i}, {j}) outside {}×{}",
            self.rows,
            self.cols
        );
        // SAFETY: (i, j) is in range, so the offset lies inside the exclusively borrowed slice.
        unsafe { *self.ptr.add(i * self.row_stride + j * self.col_stride) = value }
    }

    /// Splits into rows `0..r` and `r..rows`; panics when `r > rows`.
    pub fn split_at_row(self, r: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(r <= self.rows, "split row {r} beyond {} rows", self.rows);
        let top = MatMut {
            rows: r,
            _borrow: PhantomData,
            ..self
        };
        let offset = if r == self.rows || self.cols == 0 {
            0
        } else {
            r * self.row_stride
        };
        // SAFETY: when rows remain below `r`, (r, 0) is an element of this view, so the offset is in bounds.
        let ptr = unsafe { self.ptr.add(offset) };
        (
            top,
            MatMut {
                ptr,
                rows: self.rows - r,
                ..self
            },
        )
    }

    /// Splits into columns `0..c` and `c..cols`; panics when `c > cols`.
    pub fn split_at_col(self, c: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(
            c <= self.cols,
            "split column {c} beyond {} columns",
            self.cols
        );
        let left = MatMut {
            cols: c,
            _borrow: PhantomData,
            ..self
        };
        let offset = if c == self.cols || self.rows == 0 {
            0
        } else {
            c * self.col_stride
        };
        // SAFETY: when columns remain right of `c`, (0, c) is an element of this view, so the offset is in bounds.
        let ptr = unsafe { self.ptr.add(offset) };
        (
            left,
            MatMut {
                ptr,
                cols: self.cols - c,
                ..self
            },
        )
    }

    /// Pointer to element `(0, 0)`. Every `(i, j)` in range is at `ptr + i·rs + j·cs`.
    pub(crate) fn ptr(&mut self) -> *mut f32 {
        self.ptr
    }
}
