//! The storage types K and V may have: f32, or half precision widened inside the kernel.

use crate::view::View4;
use flashcpu_kernels::attention::KvMat;
use half::{bf16, f16};

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
