//! The AVX-512 token. It does not implement [`super::Simd`]: the lane-generic kernels are written for
//! 8-lane vectors and run their AVX2 bodies under it (an AVX-512 CPU has AVX2, FMA and F16C). Only
//! the kernels where 16-lane vectors pay, the matmul tile and the peak probe, have 512-bit code.

use super::Avx2Fma;

/// Token proving that the CPU has AVX-512F besides AVX2, FMA and F16C. Only
/// [`Avx512::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    /// The token, if the running CPU (and the OS, which must save zmm state) reports AVX-512F,
    /// AVX2, FMA and F16C.
    pub fn detect() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx512f") && Avx2Fma::detect().is_some();
        ok.then_some(Avx512(()))
    }

    /// The token without detection, for dispatch arms that already hold an [`super::Isa`] of this kind.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX2, FMA and F16C.
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx512(())
    }
}
