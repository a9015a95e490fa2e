//! A KV cache for incremental decoding: per-layer K and V storage for a batch of sequences,
//! `[batch, kv_heads, capacity, dim]`, in f32, f16 or bf16, allocated once up front.
//!
//! Sequences grow independently (`append`), roll back for speculative decoding (`truncate`),
//! and are attended through [`KvCache::attend`], which passes each sequence's length as the key
//! length so the padding past it is never read. A sliding-window cache keeps only the positions a
//! window model can still see, as a ring.

use crate::attention::{AttentionParams, KvElement, Window, attention_with_lse};
use crate::error::{Error, Result};
use crate::view::{View4, View4Mut, dense_lse};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

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

/// The shape and policy of a cache.
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

#[derive(Clone, Debug)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Store {
    fn new(dtype: KvDtype, len: usize) -> Store {
        match dtype {
            KvDtype::F32 => Store::F32(vec![0.0; len]),
            KvDtype::F16 => Store::F16(vec![f16::ZERO; len]),
            KvDtype::Bf16 => Store::Bf16(vec![bf16::ZERO; len]),
        }
    }
    /// Stores `src` at `offset`, rounding to the storage type.
    fn write(&mut self, offset: usize, src: &[f32]) {
        match self {
            Store::F32(s) => s[offset..][..src.len()].copy_from_slice(src),
            Store::F16(s) => s[offset..][..src.len()].convert_from_f32_slice(src),
            Store::Bf16(s) => s[offset..][..src.len()].convert_from_f32_slice(src),
        }
    }
}

/// K and V storage for one layer. See the module documentation.
#[derive(Clone, Debug)]
pub struct KvCache {
    cfg: KvCacheConfig,
    k: Store,
    v: Store,
    /// Positions appended per sequence (for a ring, may exceed the capacity).
    positions: Vec<usize>,
    /// Oldest position still stored per sequence (0 until a ring wraps). Older slots were
    /// overwritten; a rollback does not bring them back.
    oldest: Vec<usize>,
    /// Reused rows of one head's key or value being appended (f32, before rounding).
    row: Vec<f32>,
}

impl KvCache {
    /// An empty cache; all storage is allocated here, none per token.
    pub fn new(cfg: KvCacheConfig) -> Result<KvCache> {
        if cfg.window.is_some_and(|w| w == 0 || w > cfg.capacity) {
            return Err(Error::InvalidParameter(format!(
                "window {:?} must be in 1..=capacity ({})",
                cfg.window, cfg.capacity
            )));
        }
        let per = |dim: usize| {
            [cfg.batch, cfg.kv_heads, cfg.capacity, dim].iter().try_fold(1usize, |a, &x| a.checked_mul(x))
        };
        let (Some(k_len), Some(v_len)) = (per(cfg.head_dim), per(cfg.value_dim)) else {
            return Err(Error::InvalidParameter(format!("cache size overflows: {cfg:?}")));
        };
        Ok(KvCache {
            cfg,
            k: Store::new(cfg.dtype, k_len),
            v: Store::new(cfg.dtype, v_len),
            positions: vec![0; cfg.batch],
            oldest: vec![0; cfg.batch],
            row: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KvCacheConfig {
        &self.cfg
    }

    /// Positions appended to sequence `seq` so far (a ring counts evicted positions too).
    pub fn len(&self, seq: usize) -> usize {
        self.positions.get(seq).copied().unwrap_or(0)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.positions.iter().all(|&p| p == 0)
    }

    /// Bytes of K and V storage.
    pub fn bytes(&self) -> usize {
        let c = &self.cfg;
        c.batch * c.kv_heads * c.capacity * (c.head_dim + c.value_dim) * c.dtype.bytes()
    }

    /// Most tokens one `append` may add to a sequence that already holds `len` positions.
    fn room(&self, len: usize) -> usize {
        match self.cfg.window {
            Some(w) => self.cfg.capacity - w + 1,
            None => self.cfg.capacity - len,
        }
    }

    fn full(&self, seq: usize, n: usize) -> Error {
        Error::InvalidParameter(format!(
            "appending {n} positions to sequence {seq} (holding {}) exceeds the cache: capacity {}, window {:?}",
            self.positions[seq], self.cfg.capacity, self.cfg.window
        ))
    }

    /// Appends `n` new positions to sequence `seq`: `k` is `[1, kv_heads, n, head_dim]`, `v`
    /// `[1, kv_heads, n, value_dim]` (any strides). On `Err` the cache is unchanged.
    pub fn append(&mut self, seq: usize, k: View4<'_>, v: View4<'_>) -> Result<()> {
        if seq >= self.cfg.batch {
            return Err(Error::ShapeMismatch(format!("sequence {seq} of a batch of {}", self.cfg.batch)));
        }
        let n = self.check_chunk(k, v, 1)?;
        if n > self.room(self.positions[seq]) {
            return Err(self.full(seq, n));
        }
        self.write(seq, 0, k, v, n);
        Ok(())
    }

    /// Appends `n` positions to every sequence: `k` is `[batch, kv_heads, n, head_dim]`, `v`
    /// `[batch, kv_heads, n, value_dim]`. All sequences are checked first; on `Err` nothing changes.
    pub fn append_all(&mut self, k: View4<'_>, v: View4<'_>) -> Result<()> {
        let n = self.check_chunk(k, v, self.cfg.batch)?;
        if let Some(seq) = (0..self.cfg.batch).find(|&b| n > self.room(self.positions[b])) {
            return Err(self.full(seq, n));
        }
        for b in 0..self.cfg.batch {
            self.write(b, b, k, v, n);
        }
        Ok(())
    }

    /// Rolls sequence `seq` back to `len` positions (speculative decoding rejected a draft). A
    /// ring can roll back only as far as it still holds every position a later query may see.
    pub fn truncate(&mut self, seq: usize, len: usize) -> Result<()> {
        let Some(&cur) = self.positions.get(seq) else {
            return Err(Error::ShapeMismatch(format!("sequence {seq} of a batch of {}", self.cfg.batch)));
        };
        // The next query (position len, once appended) sees len + 1 − w ..= len.
        let oldest = self.oldest[seq];
        let lost = self.cfg.window.is_some_and(|w| oldest > 0 && len + 1 < oldest + w);
        let oldest_kept = self.cfg.window.map_or(0, |w| (oldest + w).saturating_sub(1));
        if len > cur || lost {
            return Err(Error::InvalidParameter(format!(
                "cannot truncate sequence {seq} from {cur} to {len} positions (oldest recoverable: {oldest_kept})"
            )));
        }
        self.positions[seq] = len;
        Ok(())
    }

    fn check_chunk(&self, k: View4<'_>, v: View4<'_>, batch: usize) -> Result<usize> {
        let [kb, kh, n, kd] = k.shape();
        let c = &self.cfg;
        let want_k = [batch, c.kv_heads, n, c.head_dim];
        let want_v = [batch, c.kv_heads, n, c.value_dim];
        if [kb, kh, n, kd] != want_k || v.shape() != want_v {
            return Err(Error::ShapeMismatch(format!(
                "append: K {:?} and V {:?}, expected {want_k:?} and {want_v:?}",
                k.shape(),
                v.shape()
            )));
        }
        Ok(n)
    }

    /// Writes `n` positions of batch entry `src_b` of `k`/`v` into sequence `seq` (checked).
    fn write(&mut self, seq: usize, src_b: usize, k: View4<'_>, v: View4<'_>, n: usize) {
        let c = self.cfg;
        let start = self.positions[seq];
        for (store, src, dim) in [(&mut self.k, k, c.head_dim), (&mut self.v, v, c.value_dim)] {
            for h in 0..c.kv_heads {
                let m = src.0.matrix(src_b, h);
                for t in 0..n {
                    self.row.clear();
                    self.row.extend((0..dim).map(|j| m.at(t, j)));
                    let slot = (start + t) % c.capacity;
                    store.write(((seq * c.kv_heads + h) * c.capacity + slot) * dim, &self.row);
                }
            }
        }
        self.positions[seq] = start + n;
        self.oldest[seq] = self.oldest[seq].max((start + n).saturating_sub(c.capacity));
    }

    /// Attention of `q` (`[batch, heads, q_len, head_dim]`, the newest `q_len` positions of each
    /// sequence) over the cached keys and values: bottom-right aligned on each sequence's length,
    /// so `params.causal = Some(BottomRight)` gives decoding semantics. `params.key_lengths` is
    /// set from the cache. A ring cache applies its window (a tighter `params.window` is kept; a
    /// wider one is an error, since its keys are gone).
    pub fn attend(
        &self,
        q: View4<'_>,
        out: View4Mut<'_>,
        lse: Option<&mut [f32]>,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = &self.cfg;
        let mut params = *params;
        if let Some(w) = c.window {
            let left = params.window.and_then(|x| x.left);
            if left.is_some_and(|l| l > w - 1) {
                return Err(Error::InvalidParameter(format!(
                    "window left {left:?} exceeds the ring cache's window {w}"
                )));
            }
            let left = left.unwrap_or(w - 1);
            params.window = Some(Window { left: Some(left), right: params.window.and_then(|x| x.right) });
            // The first query (position len − q_len) sees back to len − q_len − left.
            let q_len = q.shape()[2];
            if let Some(b) = (0..c.batch).find(|&b| {
                let oldest = self.oldest[b];
                oldest > 0 && self.positions[b].saturating_sub(q_len + left) < oldest
            }) {
                return Err(Error::InvalidParameter(format!(
                    "sequence {b}: the first of {q_len} queries sees positions overwritten in the ring"
                )));
            }
        }
        let wrapped = self.positions.iter().any(|&p| p > c.capacity);
        if !wrapped {
            let lens = self.positions.clone();
            params.key_lengths = Some(&lens);
            return match (&self.k, &self.v) {
                (Store::F32(k), Store::F32(v)) => self.attend_stored(k, v, q, out, lse, &params),
                (Store::F16(k), Store::F16(v)) => self.attend_stored(k, v, q, out, lse, &params),
                (Store::Bf16(k), Store::Bf16(v)) => self.attend_stored(k, v, q, out, lse, &params),
                _ => unreachable!("K and V share one dtype"),
            };
        }
        self.attend_ring(q, out, lse, &params)
    }

    fn attend_stored<T: KvElement>(
        &self,
        k: &[T],
        v: &[T],
        q: View4<'_>,
        out: View4Mut<'_>,
        lse: Option<&mut [f32]>,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = &self.cfg;
        let k = View4::bhld(k, [c.batch, c.kv_heads, c.capacity, c.head_dim])?;
        let v = View4::bhld(v, [c.batch, c.kv_heads, c.capacity, c.value_dim])?;
        let [_, heads, q_len, _] = q.shape();
        let lse = lse.map(|l| dense_lse(l, [c.batch, heads, q_len])).transpose()?;
        attention_with_lse(q, k, v, out, lse, params)
    }

    /// A ring that has wrapped holds its positions rotated; each sequence's kept positions are
    /// copied out in order (O(capacity·dim) per call) and attended one sequence at a time.
    fn attend_ring(
        &self,
        q: View4<'_>,
        out: View4Mut<'_>,
        lse: Option<&mut [f32]>,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = &self.cfg;
        if params.bias.is_some() || params.mask.is_some() {
            // Their key columns would have to follow the ring's rotation; refuse rather than guess.
            return Err(Error::InvalidParameter(
                "bias and mask tensors are not supported once a ring cache has wrapped".into(),
            ));
        }
        let [qb, heads, q_len, _] = q.shape();
        let out_shape = out.shape();
        if qb != c.batch || out_shape[0] != c.batch || heads != out_shape[1] || q_len != out_shape[2] {
            return Err(Error::ShapeMismatch(format!(
                "ring attend: Q {:?}, output {out_shape:?}",
                q.shape()
            )));
        }
        let q_all = q.0;
        let mut outs = out.0.into_matrices();
        let per_seq = heads * q_len;
        let mut lse_chunks: Vec<Option<&mut [f32]>> = match lse {
            Some(l) if l.len() == c.batch * per_seq => l.chunks_mut(per_seq).map(Some).collect(),
            Some(l) => {
                return Err(Error::ShapeMismatch(format!(
                    "lse has {} floats, expected {}",
                    l.len(),
                    c.batch * per_seq
                )));
            }
            None => (0..c.batch).map(|_| None).collect(),
        };
        for b in 0..c.batch {
            let kept = self.positions[b].min(c.capacity);
            let first = self.positions[b] - kept;
            let ordered = |store: &Store, dim: usize| -> Vec<f32> {
                let mut buf = vec![0.0f32; c.kv_heads * kept * dim];
                for h in 0..c.kv_heads {
                    for t in 0..kept {
                        let slot = (first + t) % c.capacity;
                        let at = ((b * c.kv_heads + h) * c.capacity + slot) * dim;
                        let dst = &mut buf[(h * kept + t) * dim..][..dim];
                        match store {
                            Store::F32(s) => dst.copy_from_slice(&s[at..][..dim]),
                            Store::F16(s) => s[at..][..dim].convert_to_f32_slice(dst),
                            Store::Bf16(s) => s[at..][..dim].convert_to_f32_slice(dst),
                        }
                    }
                }
                buf
            };
            let (k, v) = (ordered(&self.k, c.head_dim), ordered(&self.v, c.value_dim));
            let mut o = vec![0.0f32; per_seq * out_shape[3]];
            let q_b = View4(q_all.batch_entry(b));
            let mut p = *params;
            p.key_lengths = None;
            attention_with_lse(
                q_b,
                View4::bhld(&k, [1, c.kv_heads, kept, c.head_dim])?,
                View4::bhld(&v, [1, c.kv_heads, kept, c.value_dim])?,
                View4Mut::bhld(&mut o, [1, heads, q_len, out_shape[3]])?,
                lse_chunks[b].as_deref_mut().map(|l| dense_lse(l, [1, heads, q_len])).transpose()?,
                &p,
            )?;
            for (h, m) in outs[b * heads..(b + 1) * heads].iter_mut().enumerate() {
                for i in 0..q_len {
                    for j in 0..out_shape[3] {
                        m.set(i, j, o[(h * q_len + i) * out_shape[3] + j]);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "kvcache_tests.rs"]
mod tests;
