//! The portable token on `wide::f32x8`: whatever `wide` was compiled for (SSE2 by default on
//! x86-64, NEON on aarch64, AVX2+FMA under `-C target-cpu=native`).

use super::Simd;
use wide::{f32x8, i32x8};

/// Token for the portable path; always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    const ONE_REGISTER: bool = false;
    type V = f32x8;
    type Narrow = Portable;

    #[inline(always)]
    fn narrow(self) -> Portable {
        self
    }

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable floats at `p`; read_unaligned needs no alignment.
        f32x8::from(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32x8) {
        // SAFETY: the caller guarantees 8 writable floats at `p`; write_unaligned needs no alignment.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn mul_add(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        // fast_max is maxps on x86 (b on NaN) and NaN-propagating on NEON: either way a NaN `b` stays.
        a.fast_max(b)
    }
    #[inline(always)]
    fn min(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_min(b)
    }
    #[inline(always)]
    fn round(self, a: f32x8) -> f32x8 {
        a.round()
    }
    #[inline(always)]
    fn pow2i(self, n: f32x8) -> f32x8 {
        let bits = (n.round_int() + i32x8::splat(127)) << 23;
        wide::bytemuck::cast(bits)
    }
    #[inline(always)]
    fn prefetch_far(self, p: *const f32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint that never faults, even on an invalid address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(p.cast())
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const u16) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        let bits = unsafe { p.cast::<[u16; 8]>().read_unaligned() };
        f32x8::from(bits.map(|b| half::f16::from_bits(b).to_f32()))
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        let bits = unsafe { p.cast::<[u16; 8]>().read_unaligned() };
        f32x8::from(bits.map(|b| f32::from_bits(u32::from(b) << 16)))
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SSE prefetch exists on every x86-64; elsewhere the hint is skipped.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint that never faults, even on an invalid address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
    #[inline(always)]
    fn transpose8(self, v: [f32x8; 8]) -> [f32x8; 8] {
        f32x8::transpose(v)
    }
    #[inline(always)]
    fn sum8(self, v: [f32x8; 8]) -> f32x8 {
        f32x8::from(v.map(|x| x.reduce_add()))
    }
    #[inline(always)]
    fn reduce_sum(self, a: f32x8) -> f32 {
        a.reduce_add()
    }
    #[inline(always)]
    fn reduce_max(self, a: f32x8) -> f32 {
        a.to_array().into_iter().fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m })
    }
    #[inline(always)]
    fn outlined<R>(self, f: impl FnOnce(Self) -> R) -> R {
        outlined_portable(self, f)
    }
}

/// [`Simd::outlined`]'s function of its own: no features to enable, so a plain function.
fn outlined_portable<R>(s: Portable, f: impl FnOnce(Portable) -> R) -> R {
    f(s)
}
