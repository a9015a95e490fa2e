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
    (rows - 1).checked_mul(row_stride)?.checked_add((cols - 1).checked_mul(col_stride)?)?.checked_add(1)
}

/// Whether `(i, j) ↦ i·rs + j·cs` is one-to-one on a `rows × cols` grid. Sufficient (not necessary)
/// condition: one stride steps over the whole span of the other, as in every dense layout.
fn strides_are_injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    injective(&mut [(rows, rs), (cols, cs)])
}

/// Whether `index ↦ Σ index[d]·stride[d]` is one-to-one over the grid `dims = [(size, stride)]`.
/// Sufficient condition, met by every dense or padded layout: ordered by stride, each stride is at
/// least the span of all smaller ones.
fn injective(dims: &mut [(usize, usize)]) -> bool {
    if dims.iter().any(|&(size, _)| size == 0) {
        return true; // no elements, nothing can overlap
    }
    dims.sort_by_key(|&(_, stride)| stride);
    let mut span = 1usize; // elements covered by the dimensions seen so far
    for &(size, stride) in dims.iter().filter(|&&(size, _)| size > 1) {
        if stride < span {
            return false;
        }
        let Some(next) = (size - 1).checked_mul(stride).and_then(|x| x.checked_add(span)) else {
            return false;
        };
        span = next;
    }
    true
}

/// A read-only `rows × cols` matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
/// f32 for operands; `bool` for attention masks.
#[derive(Debug)]
pub struct MatRef<'a, T = f32> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<'_, T> {}

impl<'a, T: Copy> MatRef<'a, T> {
    /// The view, if every element lies inside `data`.
    pub fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Option<Self> {
        let needed = extent(rows, cols, row_stride, col_stride)?;
        (needed <= data.len()).then_some(MatRef { data, rows, cols, row_stride, col_stride })
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
    /// Whether the rows are contiguous and back to back, as in dense row-major storage (with
    /// one row or one column, the other stride does not matter).
    pub fn has_dense_rows(&self) -> bool {
        (self.col_stride == 1 || self.cols <= 1) && (self.row_stride == self.cols || self.rows <= 1)
    }

    /// The transpose; free, it swaps the strides.
    pub fn t(self) -> MatRef<'a, T> {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Element `(i, j)`; panics when out of range.
    pub fn at(&self, i: usize, j: usize) -> T {
        assert!(i < self.rows && j < self.cols, "MatRef::at({i}, {j}) outside {}×{}", self.rows, self.cols);
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// The block of rows `r0..r0 + rows` and columns `c0..c0 + cols`; panics when it does not fit
    /// (an end past `usize::MAX` included).
    pub fn block(&self, r0: usize, c0: usize, rows: usize, cols: usize) -> MatRef<'a, T> {
        let fits =
            |start: usize, len: usize, all: usize| start.checked_add(len).is_some_and(|end| end <= all);
        assert!(fits(r0, rows, self.rows) && fits(c0, cols, self.cols), "block outside the view");
        let start = if rows == 0 || cols == 0 { 0 } else { r0 * self.row_stride + c0 * self.col_stride };
        MatRef { data: &self.data[start..], rows, cols, ..*self }
    }

    /// Row `i` as a slice when the columns are contiguous (unit column stride), else `None`.
    pub fn row_slice(&self, i: usize) -> Option<&'a [T]> {
        assert!(i < self.rows, "row {i} outside {} rows", self.rows);
        if self.cols == 0 {
            return Some(&[]); // a view without elements may not reach row i's offset at all
        }
        (self.col_stride == 1 || self.cols == 1).then(|| &self.data[i * self.row_stride..][..self.cols])
    }

    /// Pointer to element `(0, 0)`. Every `(i, j)` in range is at `ptr + i·rs + j·cs`.
    pub(crate) fn ptr(&self) -> *const T {
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
        (needed <= data.len() && strides_are_injective(rows, cols, row_stride, col_stride)).then_some(
            MatMut { ptr: data.as_mut_ptr(), rows, cols, row_stride, col_stride, _borrow: PhantomData },
        )
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
        MatMut { _borrow: PhantomData, ..*self }
    }

    /// Element `(i, j)`; panics when out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "MatMut::at({i}, {j}) outside {}×{}", self.rows, self.cols);
        // SAFETY: (i, j) is in range, so the offset lies inside the borrowed slice (checked in `new`).
        unsafe { *self.ptr.add(i * self.row_stride + j * self.col_stride) }
    }

    /// Row `i` as a mutable slice when the columns are contiguous (unit column stride), else `None`;
    /// panics when `i` is out of range.
    pub fn row_mut(&mut self, i: usize) -> Option<&mut [f32]> {
        assert!(i < self.rows, "row {i} outside {} rows", self.rows);
        if self.cols == 0 {
            return Some(&mut []); // no elements, and no offset to take
        }
        (self.col_stride == 1 || self.cols == 1).then(|| {
            // SAFETY: with unit column stride (or one column) row i is `cols` consecutive
            // elements inside the borrowed slice (checked in `new`), owned exclusively by this view.
            unsafe { core::slice::from_raw_parts_mut(self.ptr.add(i * self.row_stride), self.cols) }
        })
    }

    /// Writes element `(i, j)`; panics when out of range.
    pub fn set(&mut self, i: usize, j: usize, value: f32) {
        assert!(i < self.rows && j < self.cols, "MatMut::set({i}, {j}) outside {}×{}", self.rows, self.cols);
        // SAFETY: (i, j) is in range, so the offset lies inside the exclusively borrowed slice.
        unsafe { *self.ptr.add(i * self.row_stride + j * self.col_stride) = value }
    }

    /// Splits into rows `0..r` and `r..rows`; panics when `r > rows`.
    pub fn split_at_row(self, r: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(r <= self.rows, "split row {r} beyond {} rows", self.rows);
        let top = MatMut { rows: r, _borrow: PhantomData, ..self };
        let offset = if r == self.rows || self.cols == 0 { 0 } else { r * self.row_stride };
        // SAFETY: when rows remain below `r`, (r, 0) is an element of this view, so the offset is in bounds.
        let ptr = unsafe { self.ptr.add(offset) };
        (top, MatMut { ptr, rows: self.rows - r, ..self })
    }

    /// Splits into columns `0..c` and `c..cols`; panics when `c > cols`.
    pub fn split_at_col(self, c: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(c <= self.cols, "split column {c} beyond {} columns", self.cols);
        let left = MatMut { cols: c, _borrow: PhantomData, ..self };
        let offset = if c == self.cols || self.rows == 0 { 0 } else { c * self.col_stride };
        // SAFETY: when columns remain right of `c`, (0, c) is an element of this view, so the offset is in bounds.
        let ptr = unsafe { self.ptr.add(offset) };
        (left, MatMut { ptr, cols: self.cols - c, ..self })
    }

    /// Pointer to element `(0, 0)`. Every `(i, j)` in range is at `ptr + i·rs + j·cs`.
    pub(crate) fn ptr(&mut self) -> *mut f32 {
        self.ptr
    }
}

/// Offset of the last element of a 4-D view plus one, or `None` on overflow (0 when empty).
fn extent4(shape: [usize; 4], strides: [usize; 4]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().zip(strides).try_fold(1usize, |acc, (&n, s)| acc.checked_add((n - 1).checked_mul(s)?))
}

/// A read-only 4-D tensor `[batch, heads, len, dim]` with any strides; `bool` for masks.
#[derive(Debug)]
pub struct View4<'a, T = f32> {
    data: &'a [T],
    shape: [usize; 4],
    strides: [usize; 4],
}

impl<T> Clone for View4<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for View4<'_, T> {}

impl<'a, T: Copy> View4<'a, T> {
    /// The view, if every element lies inside `data`.
    pub fn new(data: &'a [T], shape: [usize; 4], strides: [usize; 4]) -> Option<Self> {
        (extent4(shape, strides)? <= data.len()).then_some(View4 { data, shape, strides })
    }
    /// `[batch, heads, len, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// Strides in elements, in the order of [`View4::shape`].
    pub fn strides(&self) -> [usize; 4] {
        self.strides
    }
    /// Batch entry `b` alone, as a view of batch size 1; panics when out of range.
    pub fn batch_entry(&self, b: usize) -> View4<'a, T> {
        assert!(b < self.shape[0], "View4::batch_entry({b}) out of range");
        let start = if self.shape.contains(&0) { 0 } else { b * self.strides[0] };
        View4 { data: &self.data[start..], shape: [1, self.shape[1], self.shape[2], self.shape[3]], ..*self }
    }

    /// The `len × dim` matrix of batch `b`, head `h`; panics when out of range.
    pub fn matrix(&self, b: usize, h: usize) -> MatRef<'a, T> {
        assert!(b < self.shape[0] && h < self.shape[1], "View4::matrix({b}, {h}) out of range");
        let [_, _, rows, cols] = self.shape;
        let [sb, sh, rs, cs] = self.strides;
        let start = if rows == 0 || cols == 0 { 0 } else { b * sb + h * sh };
        MatRef { data: &self.data[start..], rows, cols, row_stride: rs, col_stride: cs }
    }
}

/// A mutable 4-D tensor `[batch, heads, len, dim]` whose indices map to distinct elements.
#[derive(Debug)]
pub struct View4Mut<'a> {
    ptr: *mut f32,
    shape: [usize; 4],
    strides: [usize; 4],
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> View4Mut<'a> {
    /// The view, if every element lies inside `data` and no two indices share an element.
    pub fn new(data: &'a mut [f32], shape: [usize; 4], strides: [usize; 4]) -> Option<Self> {
        let mut dims = [0, 1, 2, 3].map(|d| (shape[d], strides[d]));
        (extent4(shape, strides)? <= data.len() && injective(&mut dims)).then_some(View4Mut {
            ptr: data.as_mut_ptr(),
            shape,
            strides,
            _borrow: PhantomData,
        })
    }
    /// `[batch, heads, len, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// The `len × dim` matrices of every `(batch, head)`, batch-major. They are disjoint, so each
    /// can go to a different thread. Panics when `batch·heads` overflows (only a view without
    /// elements can have that many).
    pub fn into_matrices(self) -> Vec<MatMut<'a>> {
        let [batch, heads, rows, cols] = self.shape;
        let [sb, sh, rs, cs] = self.strides;
        let empty = rows == 0 || cols == 0;
        let count = batch.checked_mul(heads).expect("View4Mut::into_matrices: batch·heads overflows usize");
        let mut out = Vec::with_capacity(count);
        for b in 0..batch {
            for h in 0..heads {
                let offset = if empty { 0 } else { b * sb + h * sh };
                // SAFETY: for a non-empty matrix, (b, h, 0, 0) is an element of the view, so the
                // offset is inside the borrowed slice (checked in `new`); empty ones stay at the base.
                let ptr = unsafe { self.ptr.add(offset) };
                // Distinct (b, h) own distinct elements because the 4-D strides are injective.
                out.push(MatMut { ptr, rows, cols, row_stride: rs, col_stride: cs, _borrow: PhantomData });
            }
        }
        out
    }
}
