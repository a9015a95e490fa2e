//! Criterion benchmarks of `flashcpu::candle::scaled_dot_product_attention` against candle's own
//! CPU attention on the same candle tensors: the matmul → softmax → matmul path that
//! candle-transformers' models use (with `repeat_kv` for grouped-query heads), and, for decode,
//! candle-nn's CPU flash attention (`candle_nn::attention::flash_attn`; it walks one query row and
//! one key at a time, so a 2048-token prefill would take minutes per sample). Shapes: prefill
//! B 1, 32 heads, L 2048, d 128; decode one query row of 32 heads over 8 KV heads, kv_len 16384,
//! d 128.
//! Ids read `candle/{shape}/{implementation}-{threads}t`.
//!
//! Workflow (candle sizes its gemm from `RAYON_NUM_THREADS`; every implementation here runs in a
//! rayon pool of that size):
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench --features candle --bench candle -- --save-baseline main
//! RAYON_NUM_THREADS=1 cargo bench --features candle --bench candle -- --baseline main
//! ```
//! Throughput is in elements = flops (4·H·Lq·Lk·d), so criterion's "elem/s" reads as FLOP/s.

mod common;
use candle_core::{Device, Result, Tensor};
use candle_nn::attention::{AttnMask, flash_attn};
use common::uniform;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use flashcpu::AttentionParams;
use flashcpu::candle::scaled_dot_product_attention;
use std::time::Duration;

const HEADS: usize = 32;
const D: usize = 128;
const PREFILL_LEN: usize = 2048;
const DECODE_KV_HEADS: usize = 8;
const DECODE_KV_LEN: usize = 16384;

/// A `[B, L, H, D]` tensor of uniform values, as a projection leaves it.
fn blhd(len: usize, heads: usize, seed: u64) -> Tensor {
    Tensor::from_vec(uniform(len * heads * D, seed), (1, len, heads, D), &Device::Cpu).unwrap()
}

/// candle-transformers' attention: `repeat_kv`, then softmax(Q·Kᵀ·scale)·V with the whole score
/// matrix materialised. Inputs are contiguous `[B, H, L, D]`.
fn candle_matmul(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let repeat_kv = |x: &Tensor| -> Result<Tensor> {
        let (b, h, l, d) = x.dims4()?;
        let n_rep = HEADS / h;
        if n_rep == 1 { Ok(x.clone()) } else { Tensor::cat(&vec![x; n_rep], 2)?.reshape((b, HEADS, l, d)) }
    };
    let (k, v) = (repeat_kv(k)?, repeat_kv(v)?);
    let att = (q.matmul(&k.t()?)? / (D as f64).sqrt())?;
    candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)
}

/// One shape: Q, K and V as `[B, L, H, D]` projections.
struct Shape {
    name: String,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    flops: u64,
    /// Whether candle-nn's flash attention runs on this shape in reasonable time.
    candle_nn_flash: bool,
}

fn bench_shape(c: &mut Criterion, pool: &rayon::ThreadPool, threads: usize, s: &Shape) {
    let mut group = c.benchmark_group("candle");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(s.flops));
    let params = AttentionParams::default();
    // flashcpu reads the projections in place, through the strides of `transpose(1, 2)`.
    let (q, k, v) =
        (s.q.transpose(1, 2).unwrap(), s.k.transpose(1, 2).unwrap(), s.v.transpose(1, 2).unwrap());
    group.bench_function(format!("{}/flashcpu-{threads}t", s.name), |b| {
        b.iter(|| pool.install(|| scaled_dot_product_attention(&q, &k, &v, &params).unwrap()))
    });
    // candle's matmul path wants contiguous `[B, H, L, D]`, as Llama makes Q and K before RoPE.
    let (qc, kc, vc) = (q.contiguous().unwrap(), k.contiguous().unwrap(), v.contiguous().unwrap());
    group.bench_function(format!("{}/candle-matmul-{threads}t", s.name), |b| {
        b.iter(|| pool.install(|| candle_matmul(&qc, &kc, &vc).unwrap()))
    });
    if s.candle_nn_flash {
        // candle-nn's flash attention takes the `[B, L, H, D]` tensors.
        let scale = 1.0 / (D as f32).sqrt();
        group.bench_function(format!("{}/candle-nn-flash-{threads}t", s.name), |b| {
            b.iter(|| {
                pool.install(|| {
                    flash_attn::<f32>(&s.q, &s.k, &s.v, scale, AttnMask::None, None, None).unwrap()
                })
            })
        });
    }
    group.finish();
}

fn candle_attention(c: &mut Criterion) {
    let threads = candle_core::utils::get_num_threads();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let prefill = Shape {
        name: format!("prefill-{PREFILL_LEN}x{D}"),
        q: blhd(PREFILL_LEN, HEADS, 1),
        k: blhd(PREFILL_LEN, HEADS, 2),
        v: blhd(PREFILL_LEN, HEADS, 3),
        flops: (4 * HEADS * PREFILL_LEN * PREFILL_LEN * D) as u64,
        candle_nn_flash: false,
    };
    bench_shape(c, &pool, threads, &prefill);
    let decode = Shape {
        name: format!("decode-gqa{HEADS}x{DECODE_KV_HEADS}-kv{DECODE_KV_LEN}x{D}"),
        q: blhd(1, HEADS, 4),
        k: blhd(DECODE_KV_LEN, DECODE_KV_HEADS, 5),
        v: blhd(DECODE_KV_LEN, DECODE_KV_HEADS, 6),
        flops: (4 * HEADS * DECODE_KV_LEN * D) as u64,
        candle_nn_flash: true,
    };
    bench_shape(c, &pool, threads, &decode);
}

criterion_group!(benches, candle_attention);
criterion_main!(benches);
