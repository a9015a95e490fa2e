//! A KV cache for incremental decoding: per-layer K and V storage for a batch of sequences,
//! `[batch, kv_heads, capacity, dim]`, in f32, f16 or bf16, allocated once up front.
//!
//! Sequences grow independently (`append`), roll back for speculative decoding (`truncate`),
//! start over for a new request (`reset`), and are attended through [`KvCache::attend`]. A
//! sliding-window cache keeps only the positions a window model can still see, as a ring:
//! position p lives in slot `p mod capacity`.
//!
//! Each sequence holds a run of consecutive positions, [`KvCache::positions`]: `0..len` until a
//! ring wraps, then at most the last `capacity`. They are the keys of an attention call, oldest
//! first: key column j of sequence b is position `positions(b).start + j`, which is how a bias or
//! mask addresses them.
//!
//! Every operation checks its input before it writes anything a caller can observe: on `Err` the
//! cache is unchanged.

use crate::attention::{AttentionParams, KvElement, Window, attention_with_lse};
use crate::error::{Error, Result};
use crate::view::{View4, View4Mut};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use std::ops::Range;

/// Storage precision of a cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    /// 4 bytes per value.
    #[default]
    F32,
    /// IEEE half: 2 bytes, 11-bit significand (relative rounding error ≤ 2⁻¹¹), range ±65504.
    F16,
    /// bfloat16: 2 bytes, 8-bit significand (relative rounding error ≤ 2⁻⁸), f32's range.
    Bf16,
}

impl KvDtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 | KvDtype::Bf16 => 2,
        }
    }
}

/// The shape and policy of a cache. Zero sizes are allowed: such a cache holds nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Sequences.
    pub batch: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Key dimension per head.
    pub head_dim: usize,
    /// Value dimension per head.
    pub value_dim: usize,
    /// Positions stored per sequence.
    pub capacity: usize,
    /// Storage precision.
    pub dtype: KvDtype,
    /// Sliding-window ring: attention sees at most the last `window` positions (the query's own
    /// included), so only the last `capacity ≥ window` positions are kept and older slots are
    /// overwritten. A chunk appended at once may hold at most `capacity − window + 1` tokens,
    /// so that its first query still finds its whole window.
    pub window: Option<usize>,
}

/// A storage type: appended f32 values are rounded to it (to nearest, ties to even).
trait Element: KvElement + Default {
    /// Rounds `src` into `dst` (same length).
    fn round_into(dst: &mut [Self], src: &[f32]);
    /// Whether the finite `x` rounds to an infinity here.
    fn overflows(x: f32) -> bool;
}

impl Element for f32 {
    fn round_into(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn overflows(_: f32) -> bool {
        false
    }
}

impl Element for f16 {
    fn round_into(dst: &mut [f16], src: &[f32]) {
        dst.convert_from_f32_slice(src);
    }
    fn overflows(x: f32) -> bool {
        x.is_finite() && f16::from_f32(x).is_infinite()
    }
}

impl Element for bf16 {
    fn round_into(dst: &mut [bf16], src: &[f32]) {
        dst.convert_from_f32_slice(src);
    }
    fn overflows(x: f32) -> bool {
        x.is_finite() && bf16::from_f32(x).is_infinite()
    }
}

/// K (plane 0) and V (plane 1), dense `[batch, heads, len, dims[plane]]` each.
#[derive(Clone, Debug)]
struct Planes<T> {
    k: Vec<T>,
    v: Vec<T>,
    batch: usize,
    heads: usize,
    len: usize,
    dims: [usize; 2],
}

impl<T: Element> Planes<T> {
    /// Zeroed planes, or `Err` when their size overflows or cannot be allocated (never an abort).
    fn zeroed(batch: usize, heads: usize, len: usize, dims: [usize; 2]) -> Result<Planes<T>> {
        let plane = |dim: usize| -> Result<Vec<T>> {
            let count = [batch, heads, len, dim].iter().try_fold(1usize, |a, &x| a.checked_mul(x));
            let mut values = Vec::new();
            count
                .and_then(|count| values.try_reserve_exact(count).ok().map(|()| count))
                .map(|count| values.resize(count, T::default()))
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "cannot allocate [{batch}, {heads}, {len}, {dim}] cache values"
                    ))
                })?;
            Ok(values)
        };
        Ok(Planes { k: plane(dims[0])?, v: plane(dims[1])?, batch, heads, len, dims })
    }

    fn plane(&self, plane: usize) -> &[T] {
        if plane == 0 { &self.k } else { &self.v }
    }

    fn offset(&self, plane: usize, b: usize, h: usize, l: usize) -> usize {
        ((b * self.heads + h) * self.len + l) * self.dims[plane]
    }

    fn row(&self, plane: usize, b: usize, h: usize, l: usize) -> &[T] {
        &self.plane(plane)[self.offset(plane, b, h, l)..][..self.dims[plane]]
    }

    fn row_mut(&mut self, plane: usize, b: usize, h: usize, l: usize) -> &mut [T] {
        let (at, dim) = (self.offset(plane, b, h, l), self.dims[plane]);
        let values = if plane == 0 { &mut self.k } else { &mut self.v };
        &mut values[at..][..dim]
    }

    /// Rows `from..from + len` of every `(batch, head)` of `plane`, read in place through strides.
    fn view(&self, plane: usize, from: usize, len: usize) -> Result<View4<'_, T>> {
        let (cap, dim) = (self.len, self.dims[plane]);
        View4::new(
            &self.plane(plane)[from * dim..],
            [self.batch, self.heads, len, dim],
            [self.heads * cap * dim, cap * dim, dim, 1],
        )
    }

    /// Copies the rows of entry `src_b` of `staged` into sequence `seq`, positions `start..`
    /// (this is the ring's store: position p goes to slot `p mod len`).
    fn commit(&mut self, staged: &Planes<T>, src_b: usize, seq: usize, start: usize) {
        for plane in 0..2 {
            for h in 0..self.heads {
                for t in 0..staged.len {
                    let slot = (start + t) % self.len;
                    self.row_mut(plane, seq, h, slot).copy_from_slice(staged.row(plane, src_b, h, t));
                }
            }
        }
    }

    /// [`Planes::commit`] of every entry of `staged` into its sequence, after `held`.
    fn commit_all(&mut self, staged: &Planes<T>, held: &[Range<usize>]) {
        for (b, held) in held.iter().enumerate() {
            self.commit(staged, b, b, held.end);
        }
    }
}

/// Rounds `k` and `v` (`[batch, heads, n, dim]` views whose shapes are checked) to `T`. `Err`
/// if a finite value overflows `T`: it would be stored as an infinity.
fn stage<T: Element>(k: View4<'_>, v: View4<'_>, dims: [usize; 2]) -> Result<Planes<T>> {
    let [batch, heads, n, _] = k.shape();
    let mut staged = Planes::zeroed(batch, heads, n, dims)?;
    let mut row = Vec::new();
    for (plane, src) in [k, v].into_iter().enumerate() {
        for b in 0..batch {
            for h in 0..heads {
                let m = src.0.matrix(b, h);
                for t in 0..n {
                    row.clear();
                    row.extend((0..dims[plane]).map(|j| m.at(t, j)));
                    if let Some(x) = row.iter().find(|&&x| T::overflows(x)) {
                        return Err(Error::InvalidParameter(format!(
                            "{} value {x} (batch entry {b}, head {h}, row {t}) overflows the cache's storage type",
                            ["K", "V"][plane]
                        )));
                    }
                    T::round_into(staged.row_mut(plane, b, h, t), &row);
                }
            }
        }
    }
    Ok(staged)
}

#[derive(Clone, Debug)]
enum Store {
    F32(Planes<f32>),
    F16(Planes<f16>),
    Bf16(Planes<bf16>),
}

/// Runs `$body` with `$planes` bound to the store's planes, whatever their element type.
macro_rules! with_planes {
    ($store:expr, $planes:ident => $body:expr) => {
        match $store {
            Store::F32($planes) => $body,
            Store::F16($planes) => $body,
            Store::Bf16($planes) => $body,
        }
    };
}

/// The keys of one attention call: sequence b attends positions `spans[b]`; those before
/// `held[b].end` are in `store`, the rest in `staged` (appended by the same call, not yet written).
struct Keys<'a, T> {
    store: &'a Planes<T>,
    held: &'a [Range<usize>],
    spans: &'a [Range<usize>],
    staged: Option<&'a Planes<T>>,
}

impl<T: Element> Keys<'_, T> {
    /// `attention_with_lse` over the spans, each sequence's length its key length.
    fn attend(
        &self,
        q: View4<'_>,
        out: View4Mut<'_>,
        lse: Option<View4Mut<'_>>,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let lens: Vec<usize> = self.spans.iter().map(Range::len).collect();
        let kv_len = lens.iter().copied().max().unwrap_or(0);
        let params = AttentionParams { key_lengths: Some(&lens), ..*params };
        let gathered;
        let (keys, from) = match self.shared_start(kv_len) {
            Some(from) if self.staged.is_none() => (self.store, from),
            _ => {
                gathered = self.gather(kv_len)?;
                (&gathered, 0)
            }
        };
        attention_with_lse(q, keys.view(0, from, kv_len)?, keys.view(1, from, kv_len)?, out, lse, &params)
    }

    /// The slot where every non-empty span starts, if they all start at one slot and none runs
    /// past the end of the store: then one strided view reads them all in place.
    fn shared_start(&self, kv_len: usize) -> Option<usize> {
        let capacity = self.store.len;
        let mut starts = self.spans.iter().filter(|s| !s.is_empty()).map(|s| s.start % capacity);
        let from = starts.next().unwrap_or(0);
        (starts.all(|s| s == from) && from + kv_len <= capacity).then_some(from)
    }

    /// Each span copied in position order into dense planes of `kv_len` rows; rows past a span
    /// stay zero (padding the key lengths hide).
    fn gather(&self, kv_len: usize) -> Result<Planes<T>> {
        let store = self.store;
        let mut keys = Planes::zeroed(self.spans.len(), store.heads, kv_len, store.dims)?;
        for plane in 0..2 {
            for (b, span) in self.spans.iter().enumerate() {
                let held = self.held[b].end;
                for h in 0..store.heads {
                    for (j, p) in span.clone().enumerate() {
                        let row = match self.staged {
                            Some(staged) if p >= held => staged.row(plane, b, h, p - held),
                            _ => store.row(plane, b, h, p % store.len),
                        };
                        keys.row_mut(plane, b, h, j).copy_from_slice(row);
                    }
                }
            }
        }
        Ok(keys)
    }
}

/// K and V storage for one layer. See the module documentation.
#[derive(Clone, Debug)]
pub struct KvCache {
    cfg: KvCacheConfig,
    store: Store,
    /// Positions held per sequence, `oldest..len` (see [`KvCache::positions`]). Invariant: on a
    /// ring whose oldest position is past 0, `len − oldest ≥ window − 1`, so a rollback to
    /// [`KvCache::rollback_floor`] is always possible.
    held: Vec<Range<usize>>,
}

impl KvCache {
    /// An empty cache; all storage is allocated here, none per token. `Err` for a window outside
    /// `1..=capacity`, or storage whose size overflows or cannot be allocated.
    pub fn new(cfg: KvCacheConfig) -> Result<KvCache> {
        if cfg.window.is_some_and(|w| w == 0 || w > cfg.capacity) {
            return Err(Error::InvalidParameter(format!(
                "window {:?} must be in 1..=capacity ({})",
                cfg.window, cfg.capacity
            )));
        }
        let (b, h, c, dims) = (cfg.batch, cfg.kv_heads, cfg.capacity, [cfg.head_dim, cfg.value_dim]);
        let store = match cfg.dtype {
            KvDtype::F32 => Store::F32(Planes::zeroed(b, h, c, dims)?),
            KvDtype::F16 => Store::F16(Planes::zeroed(b, h, c, dims)?),
            KvDtype::Bf16 => Store::Bf16(Planes::zeroed(b, h, c, dims)?),
        };
        let mut held = Vec::new();
        held.try_reserve_exact(cfg.batch)
            .map_err(|e| Error::InvalidParameter(format!("cannot allocate {} sequences: {e}", cfg.batch)))?;
        held.resize(cfg.batch, 0..0);
        Ok(KvCache { cfg, store, held })
    }

    /// The configuration.
    pub fn config(&self) -> &KvCacheConfig {
        &self.cfg
    }

    fn held(&self, seq: usize) -> Result<&Range<usize>> {
        self.held
            .get(seq)
            .ok_or_else(|| Error::ShapeMismatch(format!("sequence {seq} of a batch of {}", self.cfg.batch)))
    }

    /// Positions appended to sequence `seq` so far (a ring counts overwritten positions too);
    /// `Err` for a sequence outside the batch.
    pub fn len(&self, seq: usize) -> Result<usize> {
        self.held(seq).map(|held| held.end)
    }

    /// The positions of sequence `seq` whose K and V the cache still holds, oldest first: the key
    /// columns [`KvCache::attend`] gives this sequence. `0..len` until a ring wraps.
    pub fn positions(&self, seq: usize) -> Result<Range<usize>> {
        self.held(seq).cloned()
    }

    /// The width of [`KvCache::attend`]'s key axis, and so of a bias or mask: the most positions
    /// any sequence holds.
    pub fn key_columns(&self) -> usize {
        self.held.iter().map(Range::len).max().unwrap_or(0)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.held.iter().all(|held| held.end == 0)
    }

    /// Bytes of K and V storage.
    pub fn bytes(&self) -> usize {
        with_planes!(&self.store, planes => (planes.k.len() + planes.v.len()) * self.cfg.dtype.bytes())
    }

    /// The shortest length [`KvCache::truncate`] accepts for sequence `seq`: 0 until a ring
    /// wraps; after that, the ring must still hold the window of the next query.
    pub fn rollback_floor(&self, seq: usize) -> Result<usize> {
        let held = self.held(seq)?;
        Ok(match self.cfg.window {
            Some(w) if held.start > 0 => held.start + w - 1,
            _ => 0,
        })
    }

    /// Rolls sequence `seq` back to `len` positions (speculative decoding rejected a draft):
    /// accepted from [`KvCache::rollback_floor`] up to the current length.
    pub fn truncate(&mut self, seq: usize, len: usize) -> Result<()> {
        let floor = self.rollback_floor(seq)?;
        let end = self.held[seq].end;
        if len > end || len < floor {
            return Err(Error::InvalidParameter(format!(
                "cannot truncate sequence {seq} to {len} positions: it can roll back to {floor}..={end} \
                 (reset empties it)"
            )));
        }
        self.held[seq].end = len;
        Ok(())
    }

    /// Empties sequence `seq` for a new request, whether or not its ring has wrapped.
    pub fn reset(&mut self, seq: usize) -> Result<()> {
        self.held(seq)?;
        self.held[seq] = 0..0;
        Ok(())
    }

    /// Positions held after appending `n` to a sequence holding `held`: the oldest ones whose
    /// slots the new ones take are gone.
    fn advanced(&self, held: &Range<usize>, n: usize) -> Range<usize> {
        let end = held.end + n;
        held.start.max(end.saturating_sub(self.cfg.capacity))..end
    }

    /// `Err` unless `n` more positions fit sequence `seq`.
    fn check_room(&self, seq: usize, n: usize) -> Result<()> {
        let c = &self.cfg;
        let end = self.held[seq].end;
        let room = match c.window {
            Some(w) => c.capacity - w + 1,
            None => c.capacity - end,
        };
        if n > room {
            return Err(Error::InvalidParameter(format!(
                "appending {n} positions to sequence {seq} (holding {end}) exceeds the cache: capacity {}, window {:?}",
                c.capacity, c.window
            )));
        }
        Ok(())
    }

    /// `Err` unless `k` and `v` are `[batch, kv_heads, n, dim]`; returns `n`.
    fn check_chunk(&self, k: View4<'_>, v: View4<'_>, batch: usize) -> Result<usize> {
        let c = &self.cfg;
        let n = k.shape()[2];
        let want_k = [batch, c.kv_heads, n, c.head_dim];
        let want_v = [batch, c.kv_heads, n, c.value_dim];
        if k.shape() != want_k || v.shape() != want_v {
            return Err(Error::ShapeMismatch(format!(
                "append: K {:?} and V {:?}, expected {want_k:?} and {want_v:?}",
                k.shape(),
                v.shape()
            )));
        }
        Ok(n)
    }

    fn dims(&self) -> [usize; 2] {
        [self.cfg.head_dim, self.cfg.value_dim]
    }

    /// Appends `n` new positions to sequence `seq`: `k` is `[1, kv_heads, n, head_dim]`, `v`
    /// `[1, kv_heads, n, value_dim]` (any strides). A finite value beyond the range of an f16 or
    /// bf16 cache is an `Err` rather than an infinity. On `Err` the cache is unchanged.
    pub fn append(&mut self, seq: usize, k: View4<'_>, v: View4<'_>) -> Result<()> {
        self.held(seq)?;
        let n = self.check_chunk(k, v, 1)?;
        self.check_room(seq, n)?;
        let (dims, start) = (self.dims(), self.held[seq].end);
        with_planes!(&mut self.store, planes => planes.commit(&stage(k, v, dims)?, 0, seq, start));
        let after = self.advanced(&self.held[seq], n);
        self.held[seq] = after;
        Ok(())
    }

    /// Appends `n` positions to every sequence: `k` is `[batch, kv_heads, n, head_dim]`, `v`
    /// `[batch, kv_heads, n, value_dim]`. All sequences are checked first; on `Err` nothing changes.
    pub fn append_all(&mut self, k: View4<'_>, v: View4<'_>) -> Result<()> {
        let n = self.check_chunk(k, v, self.cfg.batch)?;
        (0..self.cfg.batch).try_for_each(|b| self.check_room(b, n))?;
        let dims = self.dims();
        with_planes!(&mut self.store, planes => planes.commit_all(&stage(k, v, dims)?, &self.held));
        self.held = self.held.iter().map(|held| self.advanced(held, n)).collect();
        Ok(())
    }

    /// `params` as this cache attends with them over `spans`, the keys of `q_len` queries. `Err`
    /// if they set key lengths (the cache owns them). A ring applies its window (a tighter
    /// `params.window` is kept, a wider one is an `Err`: its keys are gone), and every query must
    /// find the positions its window reaches.
    fn params_for<'p>(
        &self,
        spans: &[Range<usize>],
        q_len: usize,
        params: &AttentionParams<'p>,
    ) -> Result<AttentionParams<'p>> {
        if params.key_lengths.is_some() {
            return Err(Error::InvalidParameter(
                "the cache sets each sequence's key length: leave params.key_lengths None".into(),
            ));
        }
        let Some(w) = self.cfg.window else { return Ok(*params) };
        let left = params.window.and_then(|x| x.left);
        if left.is_some_and(|l| l > w - 1) {
            return Err(Error::InvalidParameter(format!(
                "window left {left:?} exceeds the ring cache's window {w}"
            )));
        }
        let left = left.unwrap_or(w - 1);
        // The first query (position end − q_len) sees back to end − q_len − left.
        if let Some(b) = spans
            .iter()
            .position(|s| s.start > 0 && s.end.saturating_sub(q_len.saturating_add(left)) < s.start)
        {
            return Err(Error::InvalidParameter(format!(
                "sequence {b}: the first of {q_len} queries sees positions overwritten in the ring"
            )));
        }
        let right = params.window.and_then(|x| x.right);
        Ok(AttentionParams { window: Some(Window { left: Some(left), right }), ..*params })
    }

    /// Attention of `q` (`[batch, heads, q_len, head_dim]`, the newest `q_len` positions of each
    /// sequence) over the positions each sequence holds: bottom-right aligned on each sequence's
    /// length, so `params.causal = Some(BottomRight)` gives decoding semantics. A bias or mask has
    /// [`KvCache::key_columns`] columns, column j of sequence b being position
    /// `positions(b).start + j`. The cache sets the key lengths: `params.key_lengths` must be
    /// `None`. A ring applies its window (a tighter `params.window` is kept; a wider one is an
    /// `Err`, since its keys are gone). `lse`, if given, is a `[batch, heads, q_len, 1]` view (any
    /// strides) that receives each row's log-sum-exp, as in [`crate::attention_with_lse`]. On
    /// `Err`, `out` and `lse` are untouched.
    pub fn attend(
        &self,
        q: View4<'_>,
        out: View4Mut<'_>,
        lse: Option<View4Mut<'_>>,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let params = self.params_for(&self.held, q.shape()[2], params)?;
        let spans = &self.held;
        with_planes!(&self.store, store => Keys { store, held: spans, spans, staged: None }
            .attend(q, out, lse, &params))
    }

    /// [`KvCache::append_all`] then [`KvCache::attend`] as one call: the attention sees the new
    /// positions (and a bias or mask has the key columns of the cache after the append). On `Err`
    /// from either part the cache is unchanged.
    pub fn append_and_attend(
        &mut self,
        (k, v): (View4<'_>, View4<'_>),
        q: View4<'_>,
        out: View4Mut<'_>,
        lse: Option<View4Mut<'_>>,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let n = self.check_chunk(k, v, self.cfg.batch)?;
        (0..self.cfg.batch).try_for_each(|b| self.check_room(b, n))?;
        let after: Vec<Range<usize>> = self.held.iter().map(|held| self.advanced(held, n)).collect();
        let params = self.params_for(&after, q.shape()[2], params)?;
        let (dims, held) = (self.dims(), &self.held);
        // Slots past each sequence's held positions are free: writing them changes nothing a
        // caller can observe. Only a ring that overwrites held positions must attend before it
        // writes, reading the new positions from the staged chunk.
        let overwrites = after.iter().zip(held).any(|(a, h)| a.start > h.start);
        with_planes!(&mut self.store, store => {
            let staged = stage(k, v, dims)?;
            if overwrites {
                Keys { store: &*store, held, spans: &after, staged: Some(&staged) }.attend(q, out, lse, &params)?;
                store.commit_all(&staged, held);
            } else {
                store.commit_all(&staged, held);
                Keys { store: &*store, held: &after, spans: &after, staged: None }.attend(q, out, lse, &params)?;
            }
        });
        self.held = after;
        Ok(())
    }
}

#[cfg(test)]
#[path = "kvcache_tests.rs"]
mod tests;
