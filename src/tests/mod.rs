//! Reference-comparison tests of the safe API, one file per operation.
//!
//! Every property test runs on each ISA of [`crate::available_isas`] and both [`crate::Parallelism`]
//! values, and compares against the f64 oracle in [`crate::reference`]. The helpers here (seeded
//! values, a 3-thread pool, the tolerance rule) are shared by the operations' files.

mod matmul;

use std::sync::OnceLock;

/// A seeded splitmix64 stream. Property tests draw one `u64` seed and fill matrices from it, so
/// that proptest shrinks shapes and layouts rather than thousands of individual floats.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)` on a 2⁻²³ grid.
    pub(crate) fn uniform(&mut self) -> f32 {
        let bits = (self.next_u64() >> 40) as u32; // 24 random bits
        bits as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub(crate) fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.uniform()).collect()
    }

    /// A small integer in `-4..=4`: products and sums of a few hundred of them are exact in f32.
    pub(crate) fn small_int(&mut self) -> f32 {
        (self.next_u64() % 9) as f32 - 4.0
    }
}

/// A rayon pool of 3 threads: more threads than this machine may have cores, and an odd count, so
/// that the parallel splits differ from every power-of-two split the sequential path could mimic.
pub(crate) fn pool3() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("building a 3-thread rayon pool")
    })
}

/// The tolerance rule of flashcpu: a kernel may be at most twice as far from the f64
/// result as a naive f32 loop is, plus a floor.
///
/// Why this shape: a blocked FMA kernel sums in another order than the naive loop, so on a given
/// element its error is not bounded by the naive error (which may happen to be 0 where the
/// kernel's is a few ulps). Both errors are bounded by about `k·ε·Σ|terms|` in the worst case and
/// behave like `√k·ε·Σ|terms|`-ish random walks in practice; the floor `4·ε·Σ|terms|` (with
/// `Σ|terms|` accumulated in f64 beside the reference, `β·c_old` included) absorbs the per-element
/// difference in rounding order and the final `α·acc + β·c` roundings, while a missing, doubled or
/// misplaced term (at least `Σ|terms|/k` for random data) stays far outside it.
///
/// Returns the bound on `|kernel − exact|`; `None` when the naive f32 value itself is not finite
/// (the f32 computation overflowed, so the kernel may too).
pub(crate) fn tolerance(exact: f64, naive: f32, magnitude: f64) -> Option<f64> {
    naive
        .is_finite()
        .then(|| 2.0 * (f64::from(naive) - exact).abs() + 4.0 * f64::from(f32::EPSILON) * magnitude)
}
