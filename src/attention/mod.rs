//! Scaled dot-product attention, flash style: `softmax(Q·Kᵀ·scale + masks)·V` without ever
//! building the `q_len × kv_len` matrix.
//!
//! One call: **validate** every shape, stride and parameter (after that nothing can fail),
//! **plan** the tile sizes and work items from the shapes alone (so results are bit-identical for
//! any thread count), **run** the items on rayon with per-thread scratch made once.

mod merge;
mod params;
mod plan;
mod validate;

pub use merge::merge;
pub use params::{AttentionParams, CausalAlign, Window};

use crate::error::Result;
use crate::isa::resolve;
use crate::matmul::Parallelism;
use crate::scratch::{Slot, empty_slot, with_buffer};
use crate::view::{View4, View4Mut};
use flashcpu_kernels::attention::attend;
use rayon::prelude::*;

thread_local! {
    static TILE_SCRATCH: Slot = empty_slot();
}

/// `out = softmax(Q·Kᵀ·scale + masks)·V`.
///
/// Q is `[B, H, q_len, d]`, K `[B, H_kv, kv_len, d]`, V `[B, H_kv, kv_len, d_v]`, out
/// `[B, H, q_len, d_v]`, each with any strides ([`View4::bhld`], [`View4::blhd`] or explicit).
/// `H` must be a multiple of `H_kv` (grouped-query attention); query head h reads KV head
/// `h / (H / H_kv)`.
///
/// Guarantees: a query row that sees no key gets output 0 (never NaN); keys hidden by a mask never
/// affect the result, even if they hold NaN or ∞; NaN in a visible input reaches only the rows that
/// see it; the result is bit-identical for every thread count. Every shape, stride and parameter
/// is checked first: on `Err`, `out` is untouched.
///
/// ```
/// use flashcpu::{attention, AttentionParams, View4, View4Mut};
/// let (q, k, v) = (vec![0.5f32; 2 * 4], vec![0.25f32; 3 * 4], vec![1.0f32; 3 * 4]);
/// let mut out = vec![0.0f32; 2 * 4];
/// attention(
///     View4::bhld(&q, [1, 1, 2, 4])?,
///     View4::bhld(&k, [1, 1, 3, 4])?,
///     View4::bhld(&v, [1, 1, 3, 4])?,
///     View4Mut::bhld(&mut out, [1, 1, 2, 4])?,
///     &AttentionParams::default(),
/// )?;
/// assert!(out.iter().all(|&x| (x - 1.0).abs() < 1e-6));
/// # Ok::<(), flashcpu::Error>(())
/// ```
pub fn attention(
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    out: View4Mut<'_>,
    params: &AttentionParams<'_>,
) -> Result<()> {
    attention_with_lse(q, k, v, out, None, params)
}

/// [`attention`] that also writes each row's log-sum-exp `ln Σ_j e^(s_ij)` (sink included) into
/// `lse`, dense `[B, H, q_len]`; −∞ for a row that sees no key. With [`merge`], partial results
/// over disjoint key sets combine exactly.
pub fn attention_with_lse(
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    out: View4Mut<'_>,
    lse: Option<&mut [f32]>,
    params: &AttentionParams<'_>,
) -> Result<()> {
    let isa = resolve(params.isa)?;
    let checked = validate::validate(q, k, v, &out, lse.as_deref(), params)?;
    let jobs = plan::jobs(isa, &checked, params, q, k, v, out, lse);
    let run = |job: plan::Job<'_>| {
        with_buffer(&TILE_SCRATCH, job.scratch_len, |buf| {
            attend(isa, job.tile, buf)
        });
    };
    match params.parallelism {
        Parallelism::Rayon => jobs.into_par_iter().for_each(run),
        Parallelism::Sequential => jobs.into_iter().for_each(run),
    }
    Ok(())
}
