//! Scaled dot-product attention, flash style: `softmax(Q·Kᵀ·scale + masks)·V` without ever
//! building the `q_len × kv_len` matrix.
//!
//! One call: **validate** every shape, stride and parameter (after that nothing can fail),
//! **plan** the tile sizes and work items from the shapes alone (so results are bit-identical for
//! any thread count), **run** the items on rayon with per-thread scratch made once.

mod kv;
mod merge;
mod params;
mod plan;
mod validate;

pub use kv::KvElement;
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
/// `h / (H / H_kv)`. K and V may be stored as f32, `half::f16` or `half::bf16` ([`KvElement`]);
/// half-precision tiles are widened to f32 in registers and scratch, and accumulation is f32.
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
pub fn attention<T: KvElement>(
    q: View4<'_>,
    k: View4<'_, T>,
    v: View4<'_, T>,
    out: View4Mut<'_>,
    params: &AttentionParams<'_>,
) -> Result<()> {
    attention_with_lse(q, k, v, out, None, params)
}

/// [`attention`] that also writes each row's log-sum-exp `ln Σ_j e^(s_ij)` (sink included) into
/// `lse`, dense `[B, H, q_len]`; −∞ for a row that sees no key. With [`merge`], partial results
/// over disjoint key sets combine exactly.
pub fn attention_with_lse<T: KvElement>(
    q: View4<'_>,
    k: View4<'_, T>,
    v: View4<'_, T>,
    out: View4Mut<'_>,
    lse: Option<&mut [f32]>,
    params: &AttentionParams<'_>,
) -> Result<()> {
    let isa = resolve(params.isa)?;
    let dims = validate::validate(q.shape(), k.shape(), v.shape(), &out, lse.as_deref(), params)?;
    let (k, v) = (kv::KvView::new(k), kv::KvView::new(v));
    let plan = plan::plan(&dims, &flashcpu_kernels::blocking::Blocking::of(isa));
    if plan.splits == 1 {
        let jobs = plan::jobs(isa, &dims, &plan, params, (q, k, v), out, lse, (0, dims.kv_len));
        run(params.parallelism, isa, jobs);
    } else {
        split_kv(isa, &dims, &plan, params, (q, k, v), out, lse);
    }
    Ok(())
}

/// Runs work items on rayon (or the calling thread), each with this thread's scratch.
fn run(parallelism: Parallelism, isa: flashcpu_kernels::Isa, jobs: Vec<plan::Job<'_>>) {
    let one = |job: plan::Job<'_>| {
        with_buffer(&TILE_SCRATCH, job.scratch_len, |buf| attend(isa, job.tile, buf));
    };
    match parallelism {
        Parallelism::Rayon => jobs.into_par_iter().for_each(one),
        Parallelism::Sequential => jobs.into_iter().for_each(one),
    }
}

/// Flash-decoding: each key split writes a partial (O, lse) for every query row into its own
/// buffer, then the splits merge in order 0, 1, 2, … through [`merge`], so the result is the same
/// for any thread count. Extra memory: `splits × B·H·q_len·(d_v + 1)` floats (q_len ≤ 16 here).
fn split_kv(
    isa: flashcpu_kernels::Isa,
    dims: &validate::Dims,
    plan: &plan::Plan,
    params: &AttentionParams<'_>,
    qkv: (View4<'_>, kv::KvView<'_>, kv::KvView<'_>),
    out: View4Mut<'_>,
    lse: Option<&mut [f32]>,
) {
    let (rows, dv) = (dims.batch * dims.heads * dims.q_len, dims.dv);
    let shape = [dims.batch, dims.heads, dims.q_len, dv];
    let mut part_out = vec![0.0f32; plan.splits * rows * dv];
    let mut part_lse = vec![0.0f32; plan.splits * rows];
    // A sink joins the softmax denominator once: split 0 carries it, the others do not.
    let without_sink = AttentionParams { sinks: None, ..*params };
    let mut jobs = Vec::new();
    for (s, (o, l)) in part_out.chunks_mut(rows * dv).zip(part_lse.chunks_mut(rows)).enumerate() {
        let keys = (s * plan.keys_per_split, ((s + 1) * plan.keys_per_split).min(dims.kv_len));
        let dest = View4Mut::bhld(o, shape).expect("dense partial buffer");
        let p = if s == 0 { params } else { &without_sink };
        jobs.extend(plan::jobs(isa, dims, plan, p, qkv, dest, Some(l), keys));
    }
    run(params.parallelism, isa, jobs);

    // Merge split s into split 0, row block by row block, in split order.
    let (first_out, rest_out) = part_out.split_at_mut(rows * dv);
    let (first_lse, rest_lse) = part_lse.split_at_mut(rows);
    for (o, l) in rest_out.chunks(rows * dv).zip(rest_lse.chunks(rows)) {
        merge(first_out, first_lse, o, l, dv).expect("partials share one shape");
    }
    let per_head = dims.q_len * dv;
    for (bh, mut m) in out.0.into_matrices().into_iter().enumerate() {
        for i in 0..dims.q_len {
            for c in 0..dv {
                m.set(i, c, first_out[bh * per_head + i * dv + c]);
            }
        }
    }
    if let Some(lse) = lse {
        lse.copy_from_slice(first_lse);
    }
}

#[cfg(test)]
mod tests;
