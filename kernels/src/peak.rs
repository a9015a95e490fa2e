//! A machine-limit probe: the FMA peak that the benchmarks report their ratios against.

use crate::isa::{Isa, Simd, dispatch};

/// Independent accumulator chains: enough to hide FMA latency (4–5 cycles) on two FMA pipes.
const CHAINS: usize = 12;

/// Runs `iters` rounds of `CHAINS` independent vector FMAs and returns the flops executed.
/// The result of the chains is folded into the return path so the work cannot be optimised away.
pub fn fma_chains(isa: Isa, iters: u64) -> f64 {
    let (flops_per_iter, sink) = dispatch!(isa,
        portable => run(crate::isa::Portable, iters),
        // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
        avx2 => unsafe { run_avx2(crate::isa::Avx2Fma::new_unchecked(), iters) },
        // SAFETY: an Isa of kind Avx512 is only made after detecting AVX-512F, AVX2, FMA and F16C.
        avx512 => unsafe { run_avx512(crate::isa::Avx512::new_unchecked(), iters) },
    );
    // `sink` is finite and tiny; adding 0·sink keeps it live without changing the count.
    flops_per_iter * iters as f64 + 0.0 * f64::from(sink)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2(s: crate::isa::Avx2Fma, iters: u64) -> (f64, f32) {
    run(s, iters)
}

/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn run_avx512(s: crate::isa::Avx512, iters: u64) -> (f64, f32) {
    run(s, iters)
}

#[inline(always)]
fn run<S: Simd>(s: S, iters: u64) -> (f64, f32) {
    let mut acc = [s.splat(0.0); CHAINS];
    let (x, y) = (s.splat(0.999_999), s.splat(1e-7));
    for _ in 0..iters {
        for a in &mut acc {
            *a = s.mul_add(*a, x, y);
        }
    }
    let total = acc.iter().fold(0.0f32, |t, &a| t + s.reduce_sum(a));
    ((CHAINS * S::LANES * 2) as f64, core::hint::black_box(total))
}

/// Sums `data` with four independent vector accumulators: a pure streaming read, the
/// memory-bandwidth probe (the sum only keeps the loads alive).
pub fn stream_sum(isa: Isa, data: &[f32]) -> f32 {
    dispatch!(isa,
        portable => sum(crate::isa::Portable, data),
        // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
        avx2 => unsafe { sum_avx2(crate::isa::Avx2Fma::new_unchecked(), data) },
    )
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_avx2(s: crate::isa::Avx2Fma, data: &[f32]) -> f32 {
    sum(s, data)
}

#[inline(always)]
fn sum<S: Simd>(s: S, data: &[f32]) -> f32 {
    let step = 4 * S::LANES;
    let mut acc = [s.splat(0.0); 4];
    let chunks = data.chunks_exact(step);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: the chunk holds 4·LANES floats, so lanes u·LANES.. are readable.
            *a = s.add(*a, unsafe { s.load(chunk.as_ptr().add(u * S::LANES)) });
        }
    }
    s.reduce_sum(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]))) + tail
}
