//! Instruction-set tokens and the [`Simd`] trait that every kernel body is written against.
//!
//! A token is a zero-sized value whose existence proves that the running CPU supports its
//! instructions: [`Portable`] always exists, [`Avx2Fma`] only comes from [`Avx2Fma::detect`] and
//! [`Avx512`] from [`Avx512::detect`].
//! Kernel bodies are generic over `S: Simd` and `#[inline(always)]` all the way down; one
//! `#[target_feature]` wrapper per coarse entry point lets LLVM emit the ISA's instructions for the
//! whole inlined body. [`Isa`] carries the chosen token through the safe API.

mod portable;
pub use portable::Portable;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2Fma;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub use avx512::Avx512;

/// Only this crate's tokens implement [`Simd`]: unsafe code trusts their `LANES` and their loads.
mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Portable {}
    #[cfg(target_arch = "x86_64")]
    impl Sealed for super::Avx2Fma {}
    #[cfg(target_arch = "x86_64")]
    impl Sealed for super::Avx512 {}
}

/// The most lanes any token has; stack buffers that hold one vector are this long.
pub const MAX_LANES: usize = 16;

/// f32 lane operations, implemented by ISA tokens.
///
/// Every method takes `self` (the token) so that a value of the token type must exist before any
/// of them can run. `max` and `min` follow the x86 rule: when either input lane is NaN the lane of
/// `b` is returned, so `max(bound, x)` keeps a NaN `x`.
///
/// The trait is sealed: unsafe kernels rely on `LANES` being 8 or 16 (at most [`MAX_LANES`]) and on
/// each load reading exactly `LANES` values, which only this crate's tokens promise.
pub trait Simd: sealed::Sealed + Copy + Send + Sync + 'static {
    /// f32 lanes in one vector: 8, or 16 for AVX-512.
    const LANES: usize;
    /// Whether a vector is one machine register (so register-tiled kernels may count on 16 of
    /// them). `wide`'s 8-lane vector is two SSE registers on a default x86-64 build.
    const ONE_REGISTER: bool;
    /// One vector of `LANES` f32.
    type V: Copy;
    /// The 8-lane token of the same CPU, which packing's 8×8 transposes run on.
    type Narrow: Simd;

    /// The 8-lane token (this one where it already has 8 lanes).
    fn narrow(self) -> Self::Narrow;

    /// All lanes equal to `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads `LANES` floats from `p`, which needs no particular alignment.
    ///
    /// # Safety
    /// `p..p + LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` floats to `p`, which needs no particular alignment.
    ///
    /// # Safety
    /// `p..p + LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the ISA has FMA.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum; a NaN in either lane yields `b`'s lane.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum; a NaN in either lane yields `b`'s lane.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Rounds to the nearest integer. Halfway cases go to even on the x86 tokens and away from
    /// zero on the portable one (`wide`); the exp range reduction (|r| ≤ ln 2 / 2) holds either way.
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for lanes holding integers in `-127..=127`; `-127` gives exactly 0.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Widens `LANES` IEEE half-precision values (raw bits) at `p` to f32.
    ///
    /// # Safety
    /// `p..p + LANES` must be readable.
    unsafe fn load_f16(self, p: *const u16) -> Self::V;
    /// Widens `LANES` bfloat16 values (raw bits) at `p` to f32 (exact: a 16-bit shift).
    ///
    /// # Safety
    /// `p..p + LANES` must be readable.
    unsafe fn load_bf16(self, p: *const u16) -> Self::V;
    /// Hints the cache line holding `p` into L1. Never faults, whatever `p` is.
    fn prefetch(self, p: *const f32);
    /// Hints the cache line holding `p` into L2 only: for data needed thousands of cycles from
    /// now, which would only evict the working set if pulled into L1. Never faults.
    fn prefetch_far(self, p: *const f32);
    /// Eight horizontal sums at once: lane i < 8 of the result is the sum of the lanes of `v[i]`,
    /// and any further lanes are 0 (a transpose-and-add, far cheaper than eight reductions).
    fn sum8(self, v: [Self::V; 8]) -> Self::V;
    /// The 8×8 transpose of eight vectors: lane j of result i is lane i of `v[j]`; a 16-lane token
    /// transposes each group of 8 lanes on its own. Packing uses it to turn eight column reads
    /// into eight row writes.
    fn transpose8(self, v: [Self::V; 8]) -> [Self::V; 8];
    /// Sum of all lanes.
    fn reduce_sum(self, a: Self::V) -> f32;
    /// Maximum of all lanes (NaN handling as in [`Simd::max`], lane order unspecified).
    fn reduce_max(self, a: Self::V) -> f32;

    /// `f(self)`, called from a function of its own that is compiled for this token's features.
    ///
    /// An optimised build inlines both, and the code is what calling `f` in place would give. An
    /// unoptimised build inlines only `#[inline(always)]` code, and keeps every local of an inlined
    /// body in a stack slot of its own: a kernel entry point that inlined all its variants needed
    /// over 1 MiB of stack there. Each variant called through `outlined` gets a frame of its own.
    /// `f` must be an `#[inline(always)]` closure: a closure does not inherit the features of the
    /// function it is defined in, only of the one it is inlined into (here, the outlined one).
    fn outlined<R>(self, f: impl FnOnce(Self) -> R) -> R;
}

/// The instruction sets flashcpu has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IsaKind {
    /// `wide` vectors: SSE2 on a default x86-64 build, NEON on aarch64, AVX2 with `target-cpu=native`.
    Portable,
    /// x86-64 AVX2 + FMA through `core::arch` intrinsics, chosen at run time.
    Avx2Fma,
    /// x86-64 AVX-512F through `core::arch` intrinsics, chosen at run time: every kernel on
    /// 16-lane zmm registers (packing keeps its 8×8 transposes).
    Avx512,
}

impl IsaKind {
    /// Every kind, fastest last.
    pub const ALL: [IsaKind; 3] = [IsaKind::Portable, IsaKind::Avx2Fma, IsaKind::Avx512];

    /// The lower-case name used by `FLASHCPU_ISA` and in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Portable => "portable",
            IsaKind::Avx2Fma => "avx2fma",
            IsaKind::Avx512 => "avx512",
        }
    }
}

/// A detected instruction set: proof that the CPU can run the kernels of [`Isa::kind`].
///
/// The field is private, so an `Isa` naming AVX2 can only come from [`Isa::new`] after the CPU
/// reported the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Isa {
    kind: IsaKind,
}

impl Isa {
    /// The portable path, available everywhere.
    pub fn portable() -> Isa {
        Isa { kind: IsaKind::Portable }
    }

    /// `kind` if this CPU supports it.
    pub fn new(kind: IsaKind) -> Option<Isa> {
        let available = match kind {
            IsaKind::Portable => true,
            IsaKind::Avx2Fma => avx2_fma_available(),
            IsaKind::Avx512 => avx512_available(),
        };
        available.then_some(Isa { kind })
    }

    /// The fastest instruction set this CPU supports.
    pub fn best() -> Isa {
        IsaKind::ALL.iter().rev().find_map(|&k| Isa::new(k)).unwrap_or_else(Isa::portable)
    }

    /// Every instruction set this CPU supports, portable first.
    pub fn available() -> Vec<Isa> {
        IsaKind::ALL.iter().filter_map(|&k| Isa::new(k)).collect()
    }

    /// Which instruction set this is.
    pub fn kind(self) -> IsaKind {
        self.kind
    }
}

fn avx2_fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Avx2Fma::detect().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Avx512::detect().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Evaluates the arm for the kind of `$isa`; each arm calls a `#[target_feature]` wrapper that the
/// caller defines. Without an `avx512` arm, an AVX-512 `Isa` takes the `avx2` arm: detecting it
/// also detected AVX2, FMA and F16C. Used by the coarse entry points only.
macro_rules! dispatch {
    ($isa:expr, portable => $portable:expr, avx2 => $avx2:expr $(,)?) => {
        $crate::isa::dispatch!($isa, portable => $portable, avx2 => $avx2, avx512 => $avx2)
    };
    ($isa:expr, portable => $portable:expr, avx2 => $avx2:expr, avx512 => $avx512:expr $(,)?) => {
        match $isa.kind() {
            $crate::isa::IsaKind::Portable => $portable,
            #[cfg(target_arch = "x86_64")]
            $crate::isa::IsaKind::Avx2Fma => $avx2,
            #[cfg(target_arch = "x86_64")]
            $crate::isa::IsaKind::Avx512 => $avx512,
            #[cfg(not(target_arch = "x86_64"))]
            $crate::isa::IsaKind::Avx2Fma | $crate::isa::IsaKind::Avx512 => {
                unreachable!("Isa::new never yields an x86 ISA off x86-64")
            }
        }
    };
}
pub(crate) use dispatch;
