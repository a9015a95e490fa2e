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

use crate::error::{Error, Result};
use crate::isa::resolve;
use crate::matmul::Parallelism;
use crate::scratch::{Slot, empty_slot, reserve, try_filled, with_buffer};
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
/// `lse`, a `[B, H, q_len, 1]` view with any strides (`View4Mut::bhld(&mut lse, [b, h, q_len, 1])`
/// for dense memory); −∞ for a row that sees no key. With [`merge`], partial results over disjoint
/// key sets combine exactly.
///
/// A call with nothing to write (an output and lse without elements) returns `Ok` at once,
/// whatever its other sizes. Buffers the call needs beyond its views (scratch, the partial
/// results of a long decode, and for prefill a dense copy of K and V whose rows are not
/// contiguous and adjacent, as in a `[B, L, H, D]` tensor) that cannot be allocated give
/// [`Error::OutOfMemory`].
pub fn attention_with_lse<T: KvElement>(
    q: View4<'_>,
    k: View4<'_, T>,
    v: View4<'_, T>,
    out: View4Mut<'_>,
    lse: Option<View4Mut<'_>>,
    params: &AttentionParams<'_>,
) -> Result<()> {
    let isa = resolve(params.isa)?;
    let lse_shape = lse.as_ref().map(View4Mut::shape);
    let dims = validate::validate(q.shape(), k.shape(), v.shape(), out.shape(), lse_shape, params)?;
    let writes = |shape: [usize; 4]| !shape.contains(&0);
    if !writes(out.shape()) && lse_shape.is_none_or(|s| !writes(s)) {
        return Ok(());
    }
    let blk = flashcpu_kernels::blocking::Blocking::of(isa);
    // Prefill reads each K/V tile once per query tile: rows that are not dense are copied once.
    let br = plan::query_rows(&dims, &blk, plan::kv_bytes_per_row(&dims, params, size_of::<T>()));
    let reread = plan::kv_tiles_reread(&dims, br);
    let dense = |x| if reread { kv::dense_copy(x, params.parallelism) } else { Ok(None) };
    let (k_dense, v_dense) = (dense(k)?, dense(v)?);
    let k = k_dense.as_deref().map_or(k, |c| View4::bhld(c, k.shape()).expect("K's shape"));
    let v = v_dense.as_deref().map_or(v, |c| View4::bhld(c, v.shape()).expect("V's shape"));
    // The rows the kernels will read, copied or not, decide how a decode splits its keys.
    let row_bytes = |x: &View4<'_, T>| x.0.strides()[2].saturating_mul(size_of::<T>());
    let plan = plan::plan(&dims, &blk, br, row_bytes(&k).max(row_bytes(&v)) >= plan::PAGE_BYTES);
    let (k, v) = (kv::KvView::new(k), kv::KvView::new(v));
    reserve(&TILE_SCRATCH, plan::checked_scratch_len(&dims, &plan)?)?;
    // The kernels write a dense lse; it goes to the caller's view at the end.
    let mut lse_rows =
        lse.as_ref().map(|_| try_filled(dims.batch * dims.heads * dims.q_len, 0.0)).transpose()?;
    if plan.splits == 1 {
        let jobs =
            plan::jobs(isa, &dims, &plan, params, (q, k, v), out, lse_rows.as_deref_mut(), (0, dims.kv_len));
        run(params.parallelism, isa, jobs);
    } else {
        split_kv(isa, &dims, &plan, params, (q, k, v), out, lse_rows.as_deref_mut())?;
    }
    if let (Some(lse), Some(rows)) = (lse, lse_rows) {
        write_rows(lse, &rows, 1);
    }
    Ok(())
}

/// Copies dense `[B, H, q_len, width]` rows into `dest`, a view of that shape.
fn write_rows(dest: View4Mut<'_>, rows: &[f32], width: usize) {
    let per_head = dest.shape()[2] * width;
    for (mut m, head) in dest.0.into_matrices().into_iter().zip(rows.chunks(per_head.max(1))) {
        for (i, row) in head.chunks(width.max(1)).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                m.set(i, c, x);
            }
        }
    }
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
/// for any thread count. Extra memory: `splits × B·H·q_len·(d_v + 1)` floats (q_len ≤ 16 here),
/// allocated before anything is written.
fn split_kv(
    isa: flashcpu_kernels::Isa,
    dims: &validate::Dims,
    plan: &plan::Plan,
    params: &AttentionParams<'_>,
    qkv: (View4<'_>, kv::KvView<'_>, kv::KvView<'_>),
    out: View4Mut<'_>,
    lse: Option<&mut [f32]>,
) -> Result<()> {
    let (rows, dv) = (dims.batch * dims.heads * dims.q_len, dims.dv);
    let shape = [dims.batch, dims.heads, dims.q_len, dv];
    let too_many = || Error::OutOfMemory(format!("{} key splits of {rows} rows of {dv} floats", plan.splits));
    let part_len = |width: usize| plan.splits.checked_mul(rows * width).ok_or_else(too_many);
    let mut part_out = try_filled(part_len(dv)?, 0.0f32)?;
    let mut part_lse = try_filled(part_len(1)?, 0.0f32)?;
    let mut jobs = Vec::new();
    let jobs_per_split = dims.batch * dims.kv_heads * dims.q_len.div_ceil(plan.br);
    jobs.try_reserve_exact(plan.splits * jobs_per_split).map_err(|_| too_many())?;
    // A sink joins the softmax denominator once: split 0 carries it, the others do not.
    let without_sink = AttentionParams { sinks: None, ..*params };
    let (mut outs, mut lses) = (&mut part_out[..], &mut part_lse[..]);
    for s in 0..plan.splits {
        let (o, rest_out) = std::mem::take(&mut outs).split_at_mut(rows * dv);
        let (l, rest_lse) = std::mem::take(&mut lses).split_at_mut(rows);
        (outs, lses) = (rest_out, rest_lse);
        let keys = (s * plan.keys_per_split, ((s + 1) * plan.keys_per_split).min(dims.kv_len));
        let dest = View4Mut::bhld(o, shape).expect("dense partial buffer");
        let p = if s == 0 { params } else { &without_sink };
        jobs.extend(plan::jobs(isa, dims, plan, p, qkv, dest, Some(l), keys));
    }
    run(params.parallelism, isa, jobs);

    // Merge split s into split 0, row block by row block, in split order.
    let (first_out, rest_out) = part_out.split_at_mut(rows * dv);
    let (first_lse, rest_lse) = part_lse.split_at_mut(rows);
    for s in 0..plan.splits - 1 {
        let (o, l) = (&rest_out[s * rows * dv..][..rows * dv], &rest_lse[s * rows..][..rows]);
        merge(first_out, first_lse, o, l, dv).expect("partials share one shape");
    }
    write_rows(out, first_out, dv);
    if let Some(lse) = lse {
        lse.copy_from_slice(first_lse);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
