//! Criterion benchmarks of decoding: one new query row per sequence against a filled KV cache
//! (32 query heads, 8 KV heads, d = 128), in f32, f16 and bf16 storage, on 1 and 2 threads, under
//! the host's two fastest ISAs (on an AVX-512 machine: the 16-lane row kernels against the 8-lane
//! ones). Ids read `{dtype}-{isa}-{threads}t/{kv_len}`.
//!
//! Workflow:
//! ```text
//! cargo bench --bench decode -- --save-baseline main     # before a change
//! cargo bench --bench decode -- --baseline main          # after it
//! ```
//! Throughput is in bytes of K and V read per call, so criterion reports GB/s; the memory read
//! bandwidth measured in the same run is printed first to turn it into a ratio.

mod common;
use common::uniform;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashcpu::{
    AttentionParams, CausalAlign, KvCache, KvCacheConfig, KvDtype, View4, View4Mut, available_isas,
};
use std::time::Duration;

const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const D: usize = 128;
const CHUNK: usize = 1024;

fn filled(kv_len: usize, dtype: KvDtype) -> KvCache {
    let cfg = KvCacheConfig {
        batch: 1,
        kv_heads: KV_HEADS,
        head_dim: D,
        value_dim: D,
        capacity: kv_len,
        dtype,
        window: None,
    };
    let mut cache = KvCache::new(cfg).unwrap();
    for start in (0..kv_len).step_by(CHUNK) {
        let n = CHUNK.min(kv_len - start);
        let k = uniform(KV_HEADS * n * D, start as u64 + 1);
        let v = uniform(KV_HEADS * n * D, start as u64 + 2);
        cache
            .append_all(
                View4::bhld(&k, [1, KV_HEADS, n, D]).unwrap(),
                View4::bhld(&v, [1, KV_HEADS, n, D]).unwrap(),
            )
            .unwrap();
    }
    cache
}

fn decode(c: &mut Criterion) {
    println!(
        "memory read bandwidth: {:.1} GB/s (2 threads)",
        flashcpu::peak::read_bandwidth_gbps(None, 2).unwrap_or(f64::NAN)
    );
    let isas = available_isas();
    let fastest = &isas[isas.len().saturating_sub(2)..];
    let q = uniform(HEADS * D, 9);
    let mut out = vec![0.0f32; HEADS * D];
    for kv_len in [4096, 16384] {
        let mut group = c.benchmark_group(format!("decode/kv{kv_len}"));
        group.sample_size(20).measurement_time(Duration::from_secs(4));
        for (dtype, name) in [(KvDtype::F32, "f32"), (KvDtype::F16, "f16"), (KvDtype::Bf16, "bf16")] {
            let cache = filled(kv_len, dtype);
            group.throughput(Throughput::Bytes(cache.bytes() as u64));
            for (&isa, threads) in fastest.iter().flat_map(|isa| [(isa, 1), (isa, 2)]) {
                let params = AttentionParams {
                    causal: Some(CausalAlign::BottomRight),
                    isa: Some(isa),
                    ..Default::default()
                };
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let id = BenchmarkId::new(format!("{name}-{}-{threads}t", isa.name()), kv_len);
                group.bench_function(id, |b| {
                    b.iter(|| {
                        pool.install(|| {
                            cache
                                .attend(
                                    View4::bhld(&q, [1, HEADS, 1, D]).unwrap(),
                                    View4Mut::bhld(&mut out, [1, HEADS, 1, D]).unwrap(),
                                    None,
                                    &params,
                                )
                                .unwrap()
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
