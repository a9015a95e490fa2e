//! Criterion benchmark of one multi-head attention layer forward (projections + causal
//! attention), d_model 4096, 32 heads, 8 KV heads: the attention sublayer of a Llama-class model.
//!
//! Workflow: `cargo bench --bench mha -- --save-baseline main`, then `--baseline main`.
//! Throughput is in flops (projections plus the attention work the causal mask keeps).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashcpu::{AttentionParams, CausalAlign, MhaConfig, MultiHeadAttention, Parallelism};
use std::time::Duration;

fn layer(c: &mut Criterion) {
    let cfg = MhaConfig { d_model: 4096, heads: 32, kv_heads: 8, head_dim: 128, value_dim: 128, rope: None };
    let mut group = c.benchmark_group("mha/dm4096-h32-kv8-causal");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    for seq in [512, 2048] {
        let x: Vec<f32> = (0..seq * cfg.d_model).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut out = vec![0.0f32; x.len()];
        group.throughput(Throughput::Elements(cfg.forward_flops(1, seq, seq, seq * (seq + 1) / 2) as u64));
        for (threads, parallelism) in [(1, Parallelism::Sequential), (2, Parallelism::Rayon)] {
            let mut mha = MultiHeadAttention::random(cfg, 1).unwrap();
            let params =
                AttentionParams { causal: Some(CausalAlign::BottomRight), parallelism, ..Default::default() };
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            group.bench_function(BenchmarkId::new(format!("{threads}t"), seq), |b| {
                b.iter(|| pool.install(|| mha.forward(&x, 1, seq, &mut out, &params).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
