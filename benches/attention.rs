//! Criterion benchmarks of flash attention on typical prefill shapes
//! (B = 1, 32 heads, f32), with the naive GEMM → softmax → GEMM path for contrast.
//!
//! Workflow:
//! ```text
//! cargo bench --bench attention -- --save-baseline main     # before a change
//! cargo bench --bench attention -- --baseline main          # after it
//! cargo bench --bench attention -- 'L2048'                  # one shape family
//! ```
//! Throughput is in elements = kept flops (4·B·H·Lq·Lk·d, half for causal with Lq = Lk), so
//! criterion's "elem/s" reads as FLOP/s. The FMA peak is printed first to turn rates into ratios.

mod common;
use common::uniform;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashcpu::{
    AttentionParams, CausalAlign, IsaKind, MatMut, MatRef, MatmulOptions, Parallelism, View4, View4Mut,
    attention, available_isas, matmul_with,
};
use std::time::Duration;

const HEADS: usize = 32;

struct Case {
    len: usize,
    d: usize,
    kv_heads: usize,
    causal: bool,
}

impl Case {
    fn id(&self) -> String {
        let gqa = if self.kv_heads == HEADS { String::new() } else { format!("-gqa{}", self.kv_heads) };
        format!("L{}-d{}{}{}", self.len, self.d, gqa, if self.causal { "-causal" } else { "" })
    }
    fn flops(&self) -> u64 {
        let full = 4 * HEADS * self.len * self.len * self.d;
        (if self.causal { full / 2 } else { full }) as u64
    }
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for d in [64, 128] {
        for len in [512, 1024, 2048] {
            for causal in [false, true] {
                cases.push(Case { len, d, kv_heads: HEADS, causal });
            }
        }
    }
    cases.push(Case { len: 2048, d: 128, kv_heads: 8, causal: true });
    cases
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
}

fn flash(c: &mut Criterion) {
    println!(
        "fma peak: {:.1} GFLOP/s (1 thread)",
        flashcpu::peak::fma_peak_gflops(None, 1).unwrap_or(f64::NAN)
    );
    for case in cases() {
        let Case { len, d, kv_heads, causal } = case;
        let q = uniform(HEADS * len * d, 1);
        let k = uniform(kv_heads * len * d, 2);
        let v = uniform(kv_heads * len * d, 3);
        let mut out = vec![0.0f32; HEADS * len * d];
        let mut group = c.benchmark_group(format!("attention/{}", case.id()));
        group.throughput(Throughput::Elements(case.flops()));
        group.sample_size(10).measurement_time(Duration::from_secs(if len >= 2048 { 12 } else { 4 }));
        for isa in available_isas() {
            for threads in [1, 2] {
                let params = AttentionParams {
                    causal: causal.then_some(CausalAlign::BottomRight),
                    isa: Some(isa),
                    ..Default::default()
                };
                let pool = pool(threads);
                group.bench_function(
                    BenchmarkId::new(format!("flash-{}-{threads}t", isa.name()), case.id()),
                    |bench| {
                        bench.iter(|| {
                            pool.install(|| {
                                attention(
                                    View4::bhld(&q, [1, HEADS, len, d]).unwrap(),
                                    View4::bhld(&k, [1, kv_heads, len, d]).unwrap(),
                                    View4::bhld(&v, [1, kv_heads, len, d]).unwrap(),
                                    View4Mut::bhld(&mut out, [1, HEADS, len, d]).unwrap(),
                                    &params,
                                )
                                .unwrap()
                            })
                        })
                    },
                );
            }
        }
        if !causal && kv_heads == HEADS && len <= 1024 {
            let best = *available_isas().last().expect("portable is always available");
            group.bench_function(BenchmarkId::new(format!("naive-{}-1t", best.name()), case.id()), |bench| {
                let mut s = vec![0.0f32; len * len];
                bench.iter(|| naive(best, len, d, &q, &k, &v, &mut s, &mut out))
            });
        }
        group.finish();
    }
}

/// S = Q·Kᵀ/√d materialised per head, a row softmax, O = P·V: the path flash attention replaces.
#[allow(clippy::too_many_arguments)]
fn naive(
    isa: IsaKind,
    len: usize,
    d: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &mut [f32],
    out: &mut [f32],
) {
    let opts = MatmulOptions { isa: Some(isa), parallelism: Parallelism::Sequential };
    for h in 0..HEADS {
        fn head(x: &[f32], h: usize, len: usize, d: usize) -> MatRef<'_> {
            MatRef::row_major(&x[h * len * d..][..len * d], len, d).unwrap()
        }
        let scale = 1.0 / (d as f32).sqrt();
        matmul_with(
            &opts,
            scale,
            head(q, h, len, d),
            head(k, h, len, d).t(),
            0.0,
            MatMut::row_major(s, len, len).unwrap(),
        )
        .unwrap();
        for row in s.chunks_exact_mut(len) {
            let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            row.iter_mut().for_each(|x| *x /= sum);
        }
        let o = MatMut::row_major(&mut out[h * len * d..][..len * d], len, d).unwrap();
        matmul_with(&opts, 1.0, MatRef::row_major(s, len, len).unwrap(), head(v, h, len, d), 0.0, o).unwrap();
    }
}

criterion_group!(benches, flash);
criterion_main!(benches);
