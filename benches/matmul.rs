//! Matmul throughput: flashcpu on every ISA this CPU has at 1 and 2 threads, beside the `gemm`
//! crate (1 and 2 threads) and `matrixmultiply` (1 thread), on the same data in the same group.
//!
//! Shapes read `m x k x n`: A is m×k, B is k×n, C is m×n, all row-major, and each call computes
//! C ← A·B (α = 1, β = 0). One group per shape, with ids such as
//! `matmul-1024x1024x1024/flashcpu-avx2fma-1t/1024x1024x1024`, `.../gemm-2t/...` and
//! `.../matrixmultiply-1t/...`. Throughput is `2·m·n·k` elements, so criterion's "elem/s" reads as
//! FLOP/s; the FMA peak printed first turns those into a fraction of what the core can do.
//!
//! ```text
//! cargo bench --bench matmul                               # every shape, a few minutes
//! cargo bench --bench matmul -- 1024x1024x1024             # one shape (a regex on the ids)
//! cargo bench --bench matmul -- 'flashcpu-avx2fma-1t'      # one implementation, every shape
//! cargo bench --bench matmul -- --save-baseline main       # on main, before a change
//! cargo bench --bench matmul -- --baseline main            # after it: the change against main
//! ```
//! Every ISA is named explicitly, so `FLASHCPU_ISA` changes nothing here. Run on a quiet machine:
//! the 2-thread rows need two otherwise idle cores.

mod common;
use common::uniform;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use flashcpu::{MatMut, MatRef, MatmulOptions, Parallelism, available_isas, matmul_with};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::hint::black_box;
use std::time::Duration;

/// `(m, k, n)`: squares, a rank-128 update of a large C, a tall-skinny C with a long k, and an
/// attention-sized product.
const SHAPES: [(usize, usize, usize); 9] = [
    (64, 64, 64),
    (128, 128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (2048, 128, 2048),
    (2048, 2048, 128),
    (64, 128, 64),
];

/// Thread counts for the parallel rows; each gets its own pool so the global one is never used.
const THREADS: [usize; 2] = [1, 2];

/// Products of at least this many FLOPs take 10 flat samples (one 2048³ product is ~0.2 s on
/// one core; criterion's default of 100 linear samples would need minutes per id).
const BIG: usize = 1 << 30;

fn bench_shape(criterion: &mut Criterion, pools: &[(usize, ThreadPool)], (m, k, n): (usize, usize, usize)) {
    let shape = format!("{m}x{k}x{n}");
    let flops = 2 * m * n * k;
    let mut group = criterion.benchmark_group(format!("matmul-{shape}"));
    group.throughput(Throughput::Elements(flops as u64));
    if flops >= BIG {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    } else {
        group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    }
    let (a, b) = (uniform(m * k, 1), uniform(k * n, 2));
    let mut c = vec![0.0f32; m * n];

    for isa in available_isas() {
        for (threads, pool) in pools {
            let id = BenchmarkId::new(format!("flashcpu-{}-{threads}t", isa.name()), &shape);
            let opts = MatmulOptions { isa: Some(isa), parallelism: Parallelism::Rayon };
            group.bench_function(id, |bench| {
                pool.install(|| {
                    bench.iter(|| {
                        matmul_with(
                            &opts,
                            1.0,
                            MatRef::row_major(black_box(&a), m, k).unwrap(),
                            MatRef::row_major(black_box(&b), k, n).unwrap(),
                            0.0,
                            MatMut::row_major(black_box(&mut c), m, n).unwrap(),
                        )
                        .unwrap()
                    })
                })
            });
        }
    }

    for (threads, pool) in pools {
        let parallelism = match threads {
            1 => gemm::Parallelism::None,
            t => gemm::Parallelism::Rayon(*t),
        };
        group.bench_function(BenchmarkId::new(format!("gemm-{threads}t"), &shape), |bench| {
            // gemm's Rayon(t) splits into t tasks on the current pool: install ours.
            pool.install(|| {
                bench.iter(|| {
                    let (a, b, c) = (black_box(&a), black_box(&b), black_box(&mut c));
                    // SAFETY: a, b and c hold m·k, k·n and m·n floats, and the strides
                    // (row stride k, n and n; column stride 1) keep every index of the m×k, k×n
                    // and m×n matrices inside them; c is exclusively borrowed for the call.
                    // gemm computes dst ← alpha·dst + beta·lhs·rhs; read_dst = false drops alpha.
                    unsafe {
                        gemm::gemm(
                            m,
                            n,
                            k,
                            c.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            a.as_ptr(),
                            1,
                            k as isize,
                            b.as_ptr(),
                            1,
                            n as isize,
                            0.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            parallelism,
                        )
                    }
                })
            })
        });
    }

    let id = BenchmarkId::new("matrixmultiply-1t", &shape);
    group.bench_function(id, |bench| {
        bench.iter(|| {
            let (a, b, c) = (black_box(&a), black_box(&b), black_box(&mut c));
            // SAFETY: as for gemm above: row-major buffers of exactly m·k, k·n and m·n floats with
            // matching strides; c is exclusively borrowed. matrixmultiply is single-threaded.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let pools: Vec<(usize, ThreadPool)> = THREADS
        .iter()
        .map(|&t| {
            let pool = ThreadPoolBuilder::new().num_threads(t).build();
            (t, pool.expect("building a rayon pool"))
        })
        .collect();
    if !std::env::args().any(|arg| arg == "--list") {
        let isa = flashcpu::active_isa().map_or("?", |isa| isa.name());
        match flashcpu::peak::fma_peak_gflops(None, 1) {
            Ok(peak) => eprintln!("FMA peak ({isa}, 1 thread): {peak:.1} GFLOP/s"),
            Err(e) => eprintln!("FMA peak unavailable: {e}"),
        }
        let two = pools[1].1.install(|| flashcpu::peak::fma_peak_gflops(None, 2));
        if let Ok(peak) = two {
            eprintln!("FMA peak ({isa}, 2 threads): {peak:.1} GFLOP/s");
        }
    }
    for shape in SHAPES {
        bench_shape(&mut criterion, &pools, shape);
    }
    criterion.final_summary();
}
