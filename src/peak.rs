//! Measures this machine's limits, so benchmarks can report a ratio rather than a bare number.

use crate::error::Result;
use crate::isa::{IsaKind, resolve};
use rayon::prelude::*;
use std::time::Instant;

/// The f32 FMA peak in GFLOP/s on `threads` threads of the current rayon pool (1 = the calling
/// thread), with independent FMA chains on `isa` (default: the active one). Best of a few runs of
/// about 0.1 s each, so a shared machine's hiccups do not lower it.
///
/// ```
/// let peak = flashcpu::peak::fma_peak_gflops(None, 1)?;
/// println!("one core does at most {peak:.0} GFLOP/s of f32 FMAs");
/// # Ok::<(), flashcpu::Error>(())
/// ```
pub fn fma_peak_gflops(isa: Option<IsaKind>, threads: usize) -> Result<f64> {
    let isa = resolve(isa)?;
    const ITERS: u64 = 20_000_000;
    let once = || {
        let t = Instant::now();
        let flops: f64 = if threads <= 1 {
            flashcpu_kernels::peak::fma_chains(isa, ITERS)
        } else {
            (0..threads).into_par_iter().map(|_| flashcpu_kernels::peak::fma_chains(isa, ITERS)).sum()
        };
        flops / t.elapsed().as_secs_f64() / 1e9
    };
    Ok((0..5).map(|_| once()).fold(0.0, f64::max))
}

/// Memory read bandwidth in GB/s (10⁹ bytes per second) on `threads` threads of the current rayon
/// pool: a STREAM-like sum over a 512 MiB buffer, far beyond any last-level cache, split evenly
/// across threads. Best of 5 passes.
pub fn read_bandwidth_gbps(isa: Option<IsaKind>, threads: usize) -> Result<f64> {
    let isa = resolve(isa)?;
    const BYTES: usize = 512 << 20;
    let buf = vec![1.0f32; BYTES / 4];
    let chunk = buf.len().div_ceil(threads.max(1));
    let once = || {
        let t = Instant::now();
        let total: f32 = if threads <= 1 {
            flashcpu_kernels::peak::stream_sum(isa, &buf)
        } else {
            buf.par_chunks(chunk).map(|c| flashcpu_kernels::peak::stream_sum(isa, c)).sum()
        };
        std::hint::black_box(total);
        BYTES as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    Ok((0..5).map(|_| once()).fold(0.0, f64::max))
}
