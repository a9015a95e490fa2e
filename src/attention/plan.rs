//! Tile sizes and work items, from the shapes alone: never from the thread count, which is what
//! makes results bit-identical for any number of threads.

use super::kv::KvView;
use super::params::{AttentionParams, CausalAlign};
use super::validate::Dims;
use crate::error::{Error, Result};
use crate::view::{View4, View4Mut};
use flashcpu_kernels::Isa;
use flashcpu_kernels::attention::{HeadTile, KeyRule, TileJob, all_finite, scratch_len};
use flashcpu_kernels::blocking::Blocking;
use flashcpu_kernels::view::MatMut;
use rayon::prelude::*;

/// Query rows up to which a call counts as decoding: items are then split along the keys
/// (flash-decoding) so that every core streams its own part of a long KV cache.
const DECODE_MAX_Q: usize = 16;

/// Keys per split when decoding: long splits amortise the item's setup, its cold first tile and
/// the merge…
const KEYS_PER_SPLIT: usize = 4096;

/// …but a call is split into at least this many items (batch × KV heads × splits), so that
/// machines with many cores still get work, and no split is shorter than [`MIN_KEYS_PER_SPLIT`].
/// Both depend on shapes only, never on the thread count.
const MIN_DECODE_ITEMS: usize = 32;

/// See [`MIN_DECODE_ITEMS`]. Also the keys per split over K or V whose rows lie a page or more
/// apart (a `[B, L, H, D]` cache with many heads), where each item reads one slice of every page
/// it touches: items run split by split, each split's heads one after the other, so short splits
/// let the heads of a split share their pages' TLB entries and the lines fetched ahead around
/// their slices. Decoding over such a cache (32/8 heads, kv_len 16384, d 128, 1 thread) went from
/// 39.6 to 25.1 ms; over dense rows the same short splits were slower (10 → 13 ms), since every
/// split starts on a cold tile.
const MIN_KEYS_PER_SPLIT: usize = 256;

/// Bytes from one K/V row to the next from which rows count as "a page apart" (see
/// [`MIN_KEYS_PER_SPLIT`]): the smallest page of x86-64 and aarch64.
pub(super) const PAGE_BYTES: usize = 4096;

/// "No limit" for a key-rule side; far from overflow when a row index is added.
const UNBOUNDED: i64 = 1 << 60;

/// Keys per K/V tile when decoding, which streams K and V from memory once while prefetching the
/// next tile: this tile and the next stay in L2 (2 × 96 keys × 1 KiB of f32 K and V at d = 128).
/// Longer tiles (192) measured slower, shorter ones (64, 128) no faster.
const DECODE_KEYS_PER_TILE: usize = 96;

/// The shape of the work, decided from the shapes alone.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Query rows per item and head.
    pub br: usize,
    /// Keys per K/V tile.
    pub bc: usize,
    /// Key splits (1 unless decoding a long cache).
    pub splits: usize,
    /// Keys per split (`kv_len` when not split).
    pub keys_per_split: usize,
}

/// Tile sizes and the number of key splits for a validated call with `br` query rows per item
/// and head ([`query_rows`]), from the ISA's blocking table; `rows_page_apart` when K's or V's
/// rows lie [`PAGE_BYTES`] or more apart.
pub(super) fn plan(dims: &Dims, blk: &Blocking, br: usize, rows_page_apart: bool) -> Plan {
    let splits = if dims.q_len <= DECODE_MAX_Q {
        let for_cores = MIN_DECODE_ITEMS.div_ceil((dims.batch * dims.kv_heads).max(1));
        let most = dims.kv_len.div_ceil(MIN_KEYS_PER_SPLIT).max(1);
        let keys_per_split = if rows_page_apart { MIN_KEYS_PER_SPLIT } else { KEYS_PER_SPLIT };
        dims.kv_len.div_ceil(keys_per_split).max(for_cores).clamp(1, most)
    } else {
        1
    };
    Plan {
        br,
        bc: if dims.q_len <= DECODE_MAX_Q {
            DECODE_KEYS_PER_TILE
        } else {
            blk.attention_keys(dims.d, dims.dv)
        },
        splits,
        keys_per_split: dims.kv_len.div_ceil(splits).max(1),
    }
}

/// Query rows per item and head: the ISA's stacked rows shared by the heads of a KV group, for
/// query rows that read `kv_bytes` of K and V on average ([`kv_bytes_per_row`]).
pub(super) fn query_rows(dims: &Dims, blk: &Blocking, kv_bytes: usize) -> usize {
    let group = dims.heads / dims.kv_heads.max(1);
    (blk.attention_rows(kv_bytes) / group.max(1)).clamp(1, dims.q_len.max(1))
}

/// Bytes of K and V (stored in `element_bytes` each) that a query row reads on average: the keys
/// its causal mask, window and key length leave it, over every row of the batch. An item streams
/// this much per query tile, so it decides how tall items are.
pub(super) fn kv_bytes_per_row(dims: &Dims, p: &AttentionParams<'_>, element_bytes: usize) -> usize {
    let rows = dims.batch as u128 * dims.q_len as u128;
    if rows == 0 {
        return 0;
    }
    let keys: u128 = (0..dims.batch)
        .map(|b| {
            let rule = key_rule(dims, p, b).0;
            (0..dims.q_len).map(|i| rule.range(i)).map(|(lo, hi)| hi.saturating_sub(lo) as u128).sum::<u128>()
        })
        .sum();
    let row_bytes = (dims.d as u128 + dims.dv as u128) * element_bytes as u128;
    usize::try_from(keys / rows * row_bytes).unwrap_or(usize::MAX)
}

/// Largest product of an item's query rows and its widest dimension (d, d_v or keys per tile)
/// whose scratch is attempted: 2^40 floats is far past any memory, and below it the kernel's
/// scratch length cannot overflow.
const MAX_SCRATCH_SIDE: usize = 1 << 40;

/// The floats of scratch each work item needs, or `Err` for sizes no machine holds.
pub(super) fn checked_scratch_len(dims: &Dims, plan: &Plan) -> Result<usize> {
    let group = dims.heads / dims.kv_heads.max(1);
    let widest = dims.d.max(dims.dv).max(plan.bc);
    let rows = group.saturating_mul(plan.br);
    if rows.saturating_mul(widest) > MAX_SCRATCH_SIDE {
        return Err(Error::OutOfMemory(format!("attention scratch for {rows} query rows of width {widest}")));
    }
    scratch_len(rows, dims.d, dims.dv, plan.bc).ok_or_else(|| {
        Error::OutOfMemory(format!("attention scratch for {rows} query rows of width {widest}"))
    })
}

/// One work item and the scratch it needs.
pub(super) struct Job<'a> {
    pub tile: TileJob<'a>,
    pub scratch_len: usize,
}

/// The key rule of batch entry `b`: causal, window and key length as one interval per row.
fn key_rule(dims: &Dims, p: &AttentionParams<'_>, b: usize) -> (KeyRule, i64) {
    let key_len = p.key_lengths.map_or(dims.kv_len, |l| l[b]);
    let off = key_len as i64 - dims.q_len as i64;
    let (mut lo, mut hi) = (-UNBOUNDED, UNBOUNDED);
    match p.causal {
        None => {}
        Some(CausalAlign::TopLeft) => hi = 1,
        Some(CausalAlign::BottomRight) => hi = off + 1,
    }
    if let Some(w) = p.window {
        if let Some(left) = w.left {
            lo = lo.max(off - left as i64);
        }
        if let Some(right) = w.right {
            hi = hi.min(off + right as i64 + 1);
        }
    }
    (KeyRule { lo, hi, key_len }, off)
}

/// Splits a matrix into consecutive row tiles of `rows`.
fn row_tiles(mut m: MatMut<'_>, rows: usize) -> Vec<MatMut<'_>> {
    let mut tiles = Vec::with_capacity(m.rows().div_ceil(rows.max(1)));
    while m.rows() > 0 {
        let take = rows.min(m.rows());
        let (top, rest) = m.split_at_row(take);
        tiles.push(top);
        m = rest;
    }
    tiles
}

/// Q tiles per KV head from which one pass over K and V up front (checking V for non-finite
/// values, copying rows that are not dense) beats doing it per tile in every item: each K/V tile
/// is otherwise checked or copied again by every Q tile of its head.
const UP_FRONT_FROM_Q_TILES: usize = 2;

/// Whether every K/V tile is read by [`UP_FRONT_FROM_Q_TILES`] or more Q tiles of `br` rows.
pub(super) fn kv_tiles_reread(dims: &Dims, br: usize) -> bool {
    dims.q_len.div_ceil(br.max(1)) >= UP_FRONT_FROM_Q_TILES
}

/// Work items `(batch, KV head, Q tile)`, each carrying its heads' tiles of Q, output, lse, bias
/// and mask.
#[allow(clippy::too_many_arguments)] // the validated call and its destination, passed through whole
pub(super) fn jobs<'a>(
    isa: Isa,
    dims: &Dims,
    plan: &Plan,
    p: &AttentionParams<'a>,
    (q, k, v): (View4<'a>, KvView<'a>, KvView<'a>),
    out: View4Mut<'a>,
    lse: Option<&'a mut [f32]>,
    keys: (usize, usize),
) -> Vec<Job<'a>> {
    let Dims { batch, heads, kv_heads, q_len, kv_len, d, dv, scale } = *dims;
    if batch == 0 || heads == 0 || q_len == 0 {
        return Vec::new();
    }
    let group = heads / kv_heads;
    let Plan { br, bc, .. } = *plan;
    let scratch = scratch_len(group * br, d, dv, bc).expect("scratch of a planned item fits usize");
    let v_finite: Vec<bool> = if kv_tiles_reread(dims, br) {
        (0..batch * kv_heads)
            .into_par_iter()
            .map(|x| v.as_f32().is_some_and(|v| all_finite(isa, v.matrix(x / kv_heads, x % kv_heads))))
            .collect()
    } else {
        vec![false; batch * kv_heads]
    };

    let mut out_tiles: Vec<_> =
        out.0.into_matrices().into_iter().map(|m| row_tiles(m, br).into_iter()).collect();
    let mut lse_tiles: Vec<_> = match lse {
        Some(lse) => lse
            .chunks_mut(q_len)
            .map(|row| row.chunks_mut(br).map(Some).collect::<Vec<_>>().into_iter())
            .collect(),
        None => (0..batch * heads)
            .map(|_| (0..q_len.div_ceil(br)).map(|_| None).collect::<Vec<_>>().into_iter())
            .collect(),
    };
    let broadcast = |shape: [usize; 4], b: usize, h: usize| {
        (if shape[0] == 1 { 0 } else { b }, if shape[1] == 1 { 0 } else { h })
    };

    let mut jobs = Vec::with_capacity(batch * kv_heads * q_len.div_ceil(br));
    for b in 0..batch {
        let (rule, alibi_offset) = key_rule(dims, p, b);
        for kvh in 0..kv_heads {
            for q0 in (0..q_len).step_by(br) {
                let rows = br.min(q_len - q0);
                let heads_of_group = (kvh * group..(kvh + 1) * group)
                    .map(|h| HeadTile {
                        q: q.0.matrix(b, h).block(q0, 0, rows, d),
                        out: out_tiles[b * heads + h].next().expect("one output tile per Q tile"),
                        lse: lse_tiles[b * heads + h].next().expect("one lse tile per Q tile"),
                        bias: p.bias.map(|x| {
                            let (xb, xh) = broadcast(x.shape(), b, h);
                            x.0.matrix(xb, xh).block(q0, 0, rows, kv_len)
                        }),
                        mask: p.mask.map(|x| {
                            let (xb, xh) = broadcast(x.shape(), b, h);
                            x.0.matrix(xb, xh).block(q0, 0, rows, kv_len)
                        }),
                        alibi_slope: p.alibi_slopes.map(|s| s[h]),
                        sink: p.sinks.map(|s| s[h]),
                    })
                    .collect();
                let tile = TileJob {
                    heads: heads_of_group,
                    k: k.matrix(b, kvh),
                    v: v.matrix(b, kvh),
                    q_start: q0,
                    rule,
                    keys,
                    alibi_offset,
                    scale,
                    softcap: p.softcap,
                    bc,
                    v_known_finite: v_finite[b * kv_heads + kvh],
                };
                jobs.push(Job { tile, scratch_len: scratch });
            }
        }
    }
    jobs
}
