//! The storage types K and V may have: f32, or half precision widened inside the kernel.

use crate::view::View4;
use flashcpu_kernels::attention::KvMat;
use flashcpu_kernels::view as kview;
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type that K and V can be stored in: `f32`, `half::f16` or `half::bf16`.
pub trait KvElement: Copy + Send + Sync + sealed::Sealed + 'static {
    #[doc(hidden)]
    fn kv_view(v: View4<'_, Self>) -> KvView<'_>;
}

impl KvElement for f32 {
    fn kv_view(v: View4<'_, Self>) -> KvView<'_> {
        KvView::F32(v.0)
    }
}
impl KvElement for f16 {
    fn kv_view(v: View4<'_, Self>) -> KvView<'_> {
        KvView::F16(v.0)
    }
}
impl KvElement for bf16 {
    fn kv_view(v: View4<'_, Self>) -> KvView<'_> {
        KvView::Bf16(v.0)
    }
}

/// A K or V tensor with its element type erased, so planning code is written once.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum KvView<'a> {
    /// f32 storage.
    F32(kview::View4<'a, f32>),
    /// f16 storage.
    F16(kview::View4<'a, f16>),
    /// bf16 storage.
    Bf16(kview::View4<'a, bf16>),
}

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
    pub(crate) fn as_f32(&self) -> Option<kview::View4<'a, f32>> {
        match self {
            KvView::F32(v) => Some(*v),
            _ => None,
        }
    }
}
