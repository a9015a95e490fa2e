//! [`KvCache`]: flashcpu's cache, fed and queried with candle tensors, for a decode loop.

use super::{dense_output, on_cpu, view};
use crate::attention::AttentionParams;
use crate::kvcache::{KvCache as Cache, KvCacheConfig};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor};

/// A KV cache a candle model keeps per layer: [`append`](Self::append) the new positions' K and
/// V tensors, then [`attend`](Self::attend) with the new queries. Storage is flashcpu's
/// [`crate::KvCache`] (f32, f16 or bf16, allocated once), so a step copies only the appended rows,
/// where a `Tensor::cat` cache copies every cached row.
#[derive(Clone, Debug)]
pub struct KvCache {
    cache: Cache,
}

impl KvCache {
    /// An empty cache of `cfg`'s shape and precision.
    pub fn new(cfg: KvCacheConfig) -> candle_core::Result<KvCache> {
        Ok(KvCache { cache: Cache::new(cfg)? })
    }

    /// Appends `n` positions to every sequence: `k` is `[batch, kv_heads, n, head_dim]`, `v`
    /// `[batch, kv_heads, n, value_dim]`, CPU tensors of a float dtype in any layout (a
    /// `transpose(1, 2)` of `[B, n, H_kv, D]` is read in place when f32; another float dtype is
    /// widened to f32 first, then rounded to the cache's precision). On `Err` nothing changes.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        for (t, name) in [(k, "K"), (v, "V")] {
            on_cpu(t, name)?;
            if !t.dtype().is_float() {
                return Err(candle_core::Error::UnsupportedDTypeForOp(t.dtype(), "flashcpu KvCache::append"));
            }
        }
        let (k, v) = (k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
        let (k_storage, k_layout) = k.storage_and_layout();
        let (v_storage, v_layout) = v.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(k_data)), Storage::Cpu(CpuStorage::F32(v_data))) =
            (&*k_storage, &*v_storage)
        else {
            return Err(candle_core::Error::msg("flashcpu KvCache::append: K and V must be f32 CPU tensors"));
        };
        let (k_view, v_view) = (view(k_data, k_layout, "K")?, view(v_data, v_layout, "V")?);
        Ok(self.cache.append_all(k_view, v_view)?)
    }

    /// Attention of `q` (`[batch, heads, q_len, head_dim]` f32 on the CPU, any layout: the newest
    /// `q_len` positions of each sequence) over the cached keys, as [`crate::KvCache::attend`]:
    /// `params.causal = Some(CausalAlign::BottomRight)` gives decoding semantics. Returns a dense
    /// f32 `[batch, heads, q_len, value_dim]` tensor.
    pub fn attend(&self, q: &Tensor, params: &AttentionParams<'_>) -> candle_core::Result<Tensor> {
        on_cpu(q, "Q")?;
        if q.dtype() != DType::F32 {
            return Err(candle_core::Error::UnsupportedDTypeForOp(
                q.dtype(),
                "flashcpu KvCache::attend (Q must be f32)",
            ));
        }
        q.apply_op1_no_bwd(&CachedAttention { cache: &self.cache, params })
    }

    /// Positions appended to sequence `seq` so far; an error for a sequence outside the batch.
    pub fn len(&self, seq: usize) -> candle_core::Result<usize> {
        Ok(self.cache.len(seq)?)
    }

    /// Whether no sequence holds any position.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The flashcpu cache inside, for what takes no tensor (configuration, bytes).
    pub fn inner(&self) -> &Cache {
        &self.cache
    }

    /// The flashcpu cache inside, mutable: per-sequence appends, rollback.
    pub fn inner_mut(&mut self) -> &mut Cache {
        &mut self.cache
    }
}

/// The op: candle calls `cpu_fwd` with Q's storage and layout.
struct CachedAttention<'a, 'p> {
    cache: &'a Cache,
    params: &'a AttentionParams<'p>,
}

impl CustomOp1 for CachedAttention<'_, '_> {
    fn name(&self) -> &'static str {
        "flashcpu-cached-attention"
    }

    fn cpu_fwd(&self, q: &CpuStorage, q_layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(q) = q else {
            return Err(candle_core::Error::msg("flashcpu KvCache::attend: Q must be f32"));
        };
        let q = view(q, q_layout, "Q")?;
        let [b, h, q_len, _] = q.shape();
        let dv = self.cache.config().value_dim;
        dense_output([b, h, q_len, dv], |out| self.cache.attend(q, out, None, self.params))
    }
}
