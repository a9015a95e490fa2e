//! The AVX-512 token on `core::arch::x86_64` intrinsics (16 f32 lanes per zmm register).
//!
//! Every kernel body is generic over the lane count and runs here at 16 lanes: the register tile
//! (12×32; 6×32 for panels streamed in place), the attention tiles, the softmax and the decode
//! rows. Packing keeps its 8×8 transposes on the AVX2 token ([`Avx512::avx2`]).

use super::{Avx2Fma, Simd};
use core::arch::x86_64::*;

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

    /// The 8-lane token, for packing's transposes and the 8-lane halves of a few operations:
    /// detecting this one detected its features too.
    #[inline(always)]
    pub fn avx2(self) -> Avx2Fma {
        // SAFETY: an Avx512 token exists only where AVX2, FMA and F16C were detected.
        unsafe { Avx2Fma::new_unchecked() }
    }
}

/// The low and the high eight lanes of `v`.
#[inline(always)]
fn halves(_: Avx512, v: __m512) -> (__m256, __m256) {
    // SAFETY: the token proves AVX-512F.
    unsafe {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        (_mm512_castps512_ps256(v), hi)
    }
}

/// The zmm vector whose low eight lanes are `lo` and high eight lanes `hi`.
#[inline(always)]
fn join(_: Avx512, lo: __m256, hi: __m256) -> __m512 {
    // SAFETY: the token proves AVX-512F.
    unsafe {
        let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
    }
}

// Each method is a single intrinsic or a short fixed sequence. They are `unsafe` to call only
// because of `#[target_feature]`; the token's existence is the proof that the features are present.
impl Simd for Avx512 {
    const LANES: usize = 16;
    const ONE_REGISTER: bool = true;
    type V = __m512;
    type Narrow = Avx2Fma;

    #[inline(always)]
    fn narrow(self) -> Avx2Fma {
        self.avx2()
    }

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats; loadu needs no alignment.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats; storeu needs no alignment.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available. vmaxps returns the second operand on NaN.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available. vminps returns the second operand on NaN.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available. Scale 0 keeps whole numbers.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F is available (integer add and shift on zmm).
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const u16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable values (32 bytes); the token proves AVX-512F.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable values (32 bytes); the token proves AVX-512F.
        unsafe {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
        }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: prefetch is a hint that never faults, even on an invalid address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_far(self, p: *const f32) {
        // SAFETY: prefetch is a hint that never faults, even on an invalid address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
    #[inline(always)]
    fn transpose8(self, v: [__m512; 8]) -> [__m512; 8] {
        // Loops, not closures: a closure does not inherit the caller's target features.
        let (mut lo, mut hi) = ([self.avx2().splat(0.0); 8], [self.avx2().splat(0.0); 8]);
        for ((l, h), &x) in lo.iter_mut().zip(&mut hi).zip(&v) {
            (*l, *h) = halves(self, x);
        }
        let (lo, hi) = (self.avx2().transpose8(lo), self.avx2().transpose8(hi));
        let mut out = v;
        for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
            *o = join(self, l, h);
        }
        out
    }
    #[inline(always)]
    fn sum8(self, v: [__m512; 8]) -> __m512 {
        // Fold each vector's high half onto its low half, then the 8-lane transpose-and-add.
        let mut folded = [self.avx2().splat(0.0); 8];
        for (f, &x) in folded.iter_mut().zip(&v) {
            let (lo, hi) = halves(self, x);
            *f = self.avx2().add(lo, hi);
        }
        join(self, self.avx2().sum8(folded), self.avx2().splat(0.0))
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m512) -> f32 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        // SAFETY: the token proves AVX-512F is available.
        unsafe { _mm512_reduce_max_ps(a) }
    }
    #[inline(always)]
    fn outlined<R>(self, f: impl FnOnce(Self) -> R) -> R {
        // SAFETY: the token proves the features.
        unsafe { outlined_avx512(self, f) }
    }
}

/// [`Simd::outlined`]'s function of its own.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA, F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn outlined_avx512<R>(s: Avx512, f: impl FnOnce(Avx512) -> R) -> R {
    f(s)
}
