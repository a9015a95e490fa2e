//! `flashcpu bench decode`: a few new query rows against a filled KV cache, the memory-bound
//! case. Reports the GB/s of K and V read and the ratio to this machine's read bandwidth.

use crate::data::{divides, ensure_fits, positive, uniform, zeros};
use crate::report::{CmdResult, Ctx, emit, median_seconds};
use flashcpu::{AttentionParams, CausalAlign, KvCache, KvCacheConfig, KvDtype, View4, View4Mut};

/// Shape of one decode benchmark.
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub kv_len: usize,
    pub q_len: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
}

/// Positions appended per `append_all` while filling the cache.
const FILL_CHUNK: usize = 1024;

pub fn parse_dtype(name: &str) -> Result<KvDtype, String> {
    match name {
        "f32" => Ok(KvDtype::F32),
        "f16" => Ok(KvDtype::F16),
        "bf16" => Ok(KvDtype::Bf16),
        other => Err(format!("unknown --kv-dtype {other:?}; expected f32, f16 or bf16")),
    }
}

/// A cache of `kv_len` random positions per sequence.
pub fn filled_cache(shape: &DecodeShape) -> CmdResult<KvCache> {
    let DecodeShape { batch, kv_heads, kv_len, head_dim: d, dtype, .. } = *shape;
    ensure_fits("the KV cache", &[2, batch, kv_heads, kv_len, d])?;
    let mut cache = KvCache::new(KvCacheConfig {
        batch,
        kv_heads,
        head_dim: d,
        value_dim: d,
        capacity: kv_len,
        dtype,
        window: None,
    })?;
    let mut filled = 0;
    while filled < kv_len {
        let n = FILL_CHUNK.min(kv_len - filled);
        let k = uniform("new keys", &[batch, kv_heads, n, d], 100 + filled as u64)?;
        let v = uniform("new values", &[batch, kv_heads, n, d], 200 + filled as u64)?;
        cache.append_all(
            View4::bhld(&k, [batch, kv_heads, n, d])?,
            View4::bhld(&v, [batch, kv_heads, n, d])?,
        )?;
        filled += n;
    }
    Ok(cache)
}

pub fn run(ctx: &Ctx, shape: DecodeShape) -> CmdResult {
    let DecodeShape { batch, heads, kv_heads, q_len, head_dim: d, kv_len, dtype } = shape;
    positive(&[
        ("batch", batch),
        ("heads", heads),
        ("kv-heads", kv_heads),
        ("kv-len", kv_len),
        ("q-len", q_len),
        ("head-dim", d),
    ])?;
    divides(heads, kv_heads)?;
    let cache = filled_cache(&shape)?;
    let q = uniform("Q", &[batch, heads, q_len, d], 7)?;
    let mut out = zeros("the output", &[batch, heads, q_len, d])?;
    let params =
        AttentionParams { causal: Some(CausalAlign::BottomRight), isa: Some(ctx.isa), ..Default::default() };
    let call = |out: &mut [f32]| -> flashcpu::Result<()> {
        cache.attend(
            View4::bhld(&q, [batch, heads, q_len, d])?,
            View4Mut::bhld(out, [batch, heads, q_len, d])?,
            None,
            &params,
        )
    };
    call(&mut out)?;
    let median_s = median_seconds(|| call(&mut out).expect("validated above"));
    let bytes = cache.bytes() as f64;
    let gbps = bytes / median_s / 1e9;
    let bandwidth = flashcpu::peak::read_bandwidth_gbps(Some(ctx.isa), ctx.threads)?;
    let flops = 4.0 * [batch, heads, q_len, kv_len, d].iter().map(|&x| x as f64).product::<f64>();
    let dtype_name = match dtype {
        KvDtype::F32 => "f32",
        KvDtype::F16 => "f16",
        KvDtype::Bf16 => "bf16",
    };
    emit(
        ctx,
        "decode",
        &format!("b{batch}h{heads}kv{kv_heads}q{q_len}k{kv_len}d{d}-{dtype_name}"),
        median_s,
        &[
            ("gflops", flops / median_s / 1e9),
            ("gbps", gbps),
            ("read_bw_gbps", bandwidth),
            ("pct_bw", 100.0 * gbps / bandwidth),
        ],
    )?;
    Ok(())
}
