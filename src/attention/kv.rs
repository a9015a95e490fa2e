//! The storage types K and V may have: f32, or half precision widened inside the kernel.

use crate::error::{Error, Result};
use crate::matmul::Parallelism;
use crate::scratch::try_filled;
use crate::view::View4;
use flashcpu_kernels::attention::KvMat;
use half::{bf16, f16};
use rayon::prelude::*;

mod sealed {
    use crate::view::View4;
    use flashcpu_kernels::view as kview;
    use half::{bf16, f16};

    /// Seals [`super::KvElement`] and carries its conversion. Both live in this private module,
    /// so no user can name, implement or call them.
    pub trait Sealed: Sized {
        fn kv_view(v: View4<'_, Self>) -> KvView<'_>;
    }
    impl Sealed for f32 {
        fn kv_view(v: View4<'_, Self>) -> KvView<'_> {
            KvView::F32(v.0)
        }
    }
    impl Sealed for f16 {
        fn kv_view(v: View4<'_, Self>) -> KvView<'_> {
            KvView::F16(v.0)
        }
    }
    impl Sealed for bf16 {
        fn kv_view(v: View4<'_, Self>) -> KvView<'_> {
            KvView::Bf16(v.0)
        }
    }

    /// A K or V tensor with its element type erased, so planning code is written once.
    #[derive(Clone, Copy, Debug)]
    pub enum KvView<'a> {
        F32(kview::View4<'a, f32>),
        F16(kview::View4<'a, f16>),
        Bf16(kview::View4<'a, bf16>),
    }
}

pub(crate) use sealed::KvView;

/// An element type that K and V can be stored in: `f32`, `half::f16` or `half::bf16`.
pub trait KvElement: Copy + Send + Sync + sealed::Sealed + 'static {}

impl KvElement for f32 {}
impl KvElement for f16 {}
impl KvElement for bf16 {}

impl<'a> KvView<'a> {
    pub(crate) fn new<T: KvElement>(v: View4<'a, T>) -> Self {
        T::kv_view(v)
    }
    /// The `(batch, head)` matrix for the kernel.
    pub(crate) fn matrix(&self, b: usize, h: usize) -> KvMat<'a> {
        match self {
            KvView::F32(v) => KvMat::F32(v.matrix(b, h)),
            KvView::F16(v) => KvMat::F16(v.matrix(b, h)),
            KvView::Bf16(v) => KvMat::Bf16(v.matrix(b, h)),
        }
    }
    /// The f32 view, when that is the storage.
    pub(crate) fn as_f32(&self) -> Option<flashcpu_kernels::view::View4<'a, f32>> {
        match self {
            KvView::F32(v) => Some(*v),
            _ => None,
        }
    }
}

/// A dense `[B, H_kv, len, d]` copy of K or V whose heads' rows are not stored that way, or
/// `None` when they already are; for prefill, where every query tile of a head reads all of that
/// head's K/V tiles again.
///
/// Why copy: rows a page or more apart (`[B, L, H, D]` with many heads, as a projection leaves
/// them) fall into a few cache sets and each needs its own TLB entry, so they never stay in L2
/// between query tiles; attention over them ran at three quarters of its speed over dense K and
/// V. One pass over them per call costs about 1 % of a prefill. The copy keeps the storage type.
pub(crate) fn dense_copy<T: KvElement>(x: View4<'_, T>, parallelism: Parallelism) -> Result<Option<Vec<T>>> {
    let [batch, heads, len, d] = x.shape();
    // Every head's matrix has the same strides.
    if x.shape().contains(&0) || x.0.matrix(0, 0).has_dense_rows() {
        return Ok(None);
    }
    let count = [batch, heads, len, d]
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| Error::OutOfMemory(format!("a dense copy of K or V of shape {:?}", x.shape())))?;
    let per_head = len * d;
    let mut dense = try_filled(count, x.0.matrix(0, 0).at(0, 0))?;
    let copy_head = |(i, dest): (usize, &mut [T])| {
        let m = x.0.matrix(i / heads, i % heads);
        for (r, row) in dest.chunks_exact_mut(d).enumerate() {
            match m.row_slice(r) {
                Some(src) => row.copy_from_slice(src),
                None => row.iter_mut().enumerate().for_each(|(c, e)| *e = m.at(r, c)),
            }
        }
    };
    match parallelism {
        Parallelism::Rayon => dense.par_chunks_mut(per_head).enumerate().for_each(copy_head),
        Parallelism::Sequential => dense.chunks_mut(per_head).enumerate().for_each(copy_head),
    }
    Ok(Some(dense))
}
