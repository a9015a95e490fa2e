//! Malformed calls on `KvCache` and `MultiHeadAttention`, made as a hostile user would: every call
//! runs inside `catch_unwind` and must return the stated `Err` (or the documented `Ok`) without a
//! panic or an abort, and leave the cache exactly as it was: the same lengths, held positions and
//! rollback floors, the same truncations accepted, and the same attention results bit for bit.

use flashcpu::{
    AttentionParams, CausalAlign, Error, KvCache, KvCacheConfig, KvDtype, MhaConfig, MhaWeights,
    MultiHeadAttention, View4, View4Mut, Window,
};
use std::panic::{AssertUnwindSafe, catch_unwind};

const KV_HEADS: usize = 2;
const HEADS: usize = 4;
const D: usize = 8;
const DV: usize = 6;
const SENTINEL: f32 = 1234.5;

/// Which `Err` a call must return, or `Ok`.
#[derive(Clone, Copy, Debug)]
enum Want {
    Shape,
    Invalid,
    Ok,
}

impl Want {
    fn accepts(self, result: &flashcpu::Result<()>) -> bool {
        match self {
            Want::Shape => matches!(result, Err(Error::ShapeMismatch(_))),
            Want::Invalid => matches!(result, Err(Error::InvalidParameter(_))),
            Want::Ok => result.is_ok(),
        }
    }
}

/// Deterministic values in [−1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn config(batch: usize, capacity: usize, window: Option<usize>, dtype: KvDtype) -> KvCacheConfig {
    KvCacheConfig { batch, kv_heads: KV_HEADS, head_dim: D, value_dim: DV, capacity, dtype, window }
}

/// Appends `n` positions to sequence `seq` (values seeded by the position).
fn push(cache: &mut KvCache, seq: usize, n: usize) -> flashcpu::Result<()> {
    let at = cache.len(seq)?;
    let k = values(KV_HEADS * n * D, at as u64);
    let v = values(KV_HEADS * n * DV, 1000 + at as u64);
    cache.append(seq, View4::bhld(&k, [1, KV_HEADS, n, D])?, View4::bhld(&v, [1, KV_HEADS, n, DV])?)
}

/// A plain cache of two sequences holding 5 and 3 positions, and a ring (window 4, capacity 6)
/// whose sequences have wrapped to 9 and 7 positions.
fn caches() -> Vec<(&'static str, KvCache)> {
    let mut plain = KvCache::new(config(2, 8, None, KvDtype::F32)).unwrap();
    let mut ring = KvCache::new(config(2, 6, Some(4), KvDtype::F16)).unwrap();
    for (cache, lens) in [(&mut plain, [5, 3]), (&mut ring, [9, 7])] {
        for (seq, len) in lens.into_iter().enumerate() {
            for _ in 0..len {
                push(cache, seq, 1).unwrap();
            }
        }
    }
    vec![("plain", plain), ("ring", ring)]
}

/// Everything the public API shows of a cache, as text to compare.
fn snapshot(cache: &KvCache) -> String {
    let batch = cache.config().batch;
    let mut seen = Vec::new();
    for seq in 0..batch {
        let len = cache.len(seq).unwrap();
        let accepted: Vec<bool> = (0..=len + 1).map(|to| cache.clone().truncate(seq, to).is_ok()).collect();
        seen.push(format!(
            "seq {seq}: len {len}, positions {:?}, floor {:?}, truncations {accepted:?}",
            cache.positions(seq),
            cache.rollback_floor(seq)
        ));
    }
    for q_len in [1, 2] {
        let q = values(batch * HEADS * q_len * D, 7);
        let mut out = vec![0.0; batch * HEADS * q_len * DV];
        let mut lse = vec![0.0; batch * HEADS * q_len];
        let result = cache.attend(
            View4::bhld(&q, [batch, HEADS, q_len, D]).unwrap(),
            View4Mut::bhld(&mut out, [batch, HEADS, q_len, DV]).unwrap(),
            Some(View4Mut::bhld(&mut lse, [batch, HEADS, q_len, 1]).unwrap()),
            &causal(),
        );
        let bits: Vec<u32> = out.iter().chain(&lse).map(|x| x.to_bits()).collect();
        seen.push(format!("attend {q_len}: {result:?} {bits:?}"));
    }
    seen.push(format!("key columns {}, empty {}", cache.key_columns(), cache.is_empty()));
    seen.join("\n")
}

fn causal() -> AttentionParams<'static> {
    AttentionParams { causal: Some(CausalAlign::BottomRight), ..Default::default() }
}

/// Runs `call` on a copy of `cache` inside `catch_unwind`: no panic, the wanted result, and (for
/// an `Err`) a cache that shows exactly what it showed before.
fn check(what: &str, cache: &KvCache, want: Want, call: impl FnOnce(&mut KvCache) -> flashcpu::Result<()>) {
    let mut copy = cache.clone();
    let result = catch_unwind(AssertUnwindSafe(|| call(&mut copy)))
        .unwrap_or_else(|_| panic!("{what}: panicked instead of returning an Err"));
    assert!(want.accepts(&result), "{what}: want {want:?}, got {result:?}");
    if result.is_err() {
        assert_eq!(snapshot(&copy), snapshot(cache), "{what}: a refused call changed the cache");
    }
}

/// An attend of `q_shape` queries into a sentinel output of `out_shape`: the result, after
/// checking that a refusal wrote nothing.
fn attend_into(
    cache: &KvCache,
    q_shape: [usize; 4],
    out_shape: [usize; 4],
    lse_shape: [usize; 4],
    params: &AttentionParams<'_>,
) -> flashcpu::Result<()> {
    let q = values(q_shape.iter().product(), 3);
    let mut out = vec![SENTINEL; out_shape.iter().product()];
    let mut lse = vec![SENTINEL; lse_shape.iter().product()];
    let (q_view, out_view) = (View4::bhld(&q, q_shape)?, View4Mut::bhld(&mut out, out_shape)?);
    let result = cache.attend(q_view, out_view, Some(View4Mut::bhld(&mut lse, lse_shape)?), params);
    if result.is_err() {
        assert!(out.iter().chain(&lse).all(|&x| x == SENTINEL), "a refused attend wrote its output");
    }
    result
}

#[test]
fn malformed_cache_configurations_are_refused_without_an_abort() {
    let cases: [(&str, KvCacheConfig, Want); 13] = [
        ("window 0", config(2, 8, Some(0), KvDtype::F32), Want::Invalid),
        ("window past the capacity", config(2, 8, Some(9), KvDtype::F32), Want::Invalid),
        ("window usize::MAX", config(2, 8, Some(usize::MAX), KvDtype::F16), Want::Invalid),
        ("window on capacity 0", config(2, 0, Some(1), KvDtype::F32), Want::Invalid),
        ("capacity usize::MAX", config(2, usize::MAX, None, KvDtype::F32), Want::Invalid),
        ("batch 2^40 × capacity 2^20", config(1 << 40, 1 << 20, None, KvDtype::Bf16), Want::Invalid),
        // 2^46 values of 4 bytes: 256 TiB, more than any address space holds.
        ("256 TiB of f32", config(1 << 42, 1, None, KvDtype::F32), Want::Invalid),
        ("512 TiB of f16", config(1 << 44, 1, Some(1), KvDtype::F16), Want::Invalid),
        (
            "batch 2^60 of nothing",
            KvCacheConfig { head_dim: 0, value_dim: 0, ..config(1 << 60, 8, None, KvDtype::F32) },
            Want::Invalid,
        ),
        ("batch 0", config(0, 8, None, KvDtype::F32), Want::Ok),
        ("capacity 0", config(2, 0, None, KvDtype::F32), Want::Ok),
        ("no heads", KvCacheConfig { kv_heads: 0, ..config(2, 8, None, KvDtype::F32) }, Want::Ok),
        ("dims 0", KvCacheConfig { head_dim: 0, value_dim: 0, ..config(2, 8, None, KvDtype::F32) }, Want::Ok),
    ];
    for (what, cfg, want) in cases {
        let result = catch_unwind(|| KvCache::new(cfg).map(|_| ()))
            .unwrap_or_else(|_| panic!("{what}: panicked instead of returning an Err"));
        assert!(want.accepts(&result), "{what}: want {want:?}, got {result:?}");
    }
    // A cache with nothing in it holds nothing and attends to nothing.
    let mut empty = KvCache::new(config(2, 0, None, KvDtype::F32)).unwrap();
    check("append to capacity 0", &empty, Want::Invalid, |c| push(c, 0, 1));
    check("append nothing to capacity 0", &empty, Want::Ok, |c| push(c, 0, 0));
    assert_eq!(empty.key_columns(), 0);
    attend_into(&empty, [2, HEADS, 1, D], [2, HEADS, 1, DV], [2, HEADS, 1, 1], &causal()).unwrap();
    empty.reset(1).unwrap();
}

#[test]
fn misused_sequences_lengths_and_rollbacks_are_refused() {
    for (name, cache) in caches() {
        let what = |call: &str| format!("{name}: {call}");
        for seq in [2, 3, usize::MAX] {
            assert!(matches!(cache.len(seq), Err(Error::ShapeMismatch(_))), "{}", what("len"));
            assert!(matches!(cache.positions(seq), Err(Error::ShapeMismatch(_))), "{}", what("positions"));
            assert!(matches!(cache.rollback_floor(seq), Err(Error::ShapeMismatch(_))), "{}", what("floor"));
            check(&what("append"), &cache, Want::Shape, |c| {
                let (k, v) = (values(KV_HEADS * D, 1), values(KV_HEADS * DV, 2));
                c.append(seq, View4::bhld(&k, [1, KV_HEADS, 1, D])?, View4::bhld(&v, [1, KV_HEADS, 1, DV])?)
            });
            check(&what("truncate"), &cache, Want::Shape, |c| c.truncate(seq, 0));
            check(&what("reset"), &cache, Want::Shape, |c| c.reset(seq));
        }
        let len = cache.len(1).unwrap();
        check(&what("truncate one past the length"), &cache, Want::Invalid, |c| c.truncate(1, len + 1));
        check(&what("truncate to usize::MAX"), &cache, Want::Invalid, |c| c.truncate(0, usize::MAX));
        check(&what("truncate to the length"), &cache, Want::Ok, |c| c.truncate(1, len));
        let floor = cache.rollback_floor(0).unwrap();
        if floor > 0 {
            check(&what("truncate below the floor"), &cache, Want::Invalid, |c| c.truncate(0, floor - 1));
            check(&what("truncate to 0 after wrapping"), &cache, Want::Invalid, |c| c.truncate(0, 0));
        }
        check(&what("truncate to the floor"), &cache, Want::Ok, |c| c.truncate(0, floor));
        check(&what("reset after wrapping"), &cache, Want::Ok, |c| {
            c.reset(0)?;
            assert_eq!((c.len(0), c.positions(0), c.rollback_floor(0)), (Ok(0), Ok(0..0), Ok(0)));
            Ok(())
        });
    }
}

#[test]
fn malformed_appends_are_refused() {
    for (name, cache) in caches() {
        let what = |call: &str| format!("{name}: {call}");
        // Ring: capacity 6 − window 4 + 1; plain: capacity 8 − 5 held.
        let room = 3;
        check(&what("append past the room"), &cache, Want::Invalid, |c| push(c, 0, room + 1));
        check(&what("append of the room"), &cache, Want::Ok, |c| push(c, 0, room));
        check(&what("append of nothing"), &cache, Want::Ok, |c| push(c, 0, 0));
        // Wrong heads, dims, batches and lengths, one at a time.
        let shapes: [(&str, [usize; 4], [usize; 4]); 7] = [
            ("3 KV heads", [1, 3, 1, D], [1, 3, 1, DV]),
            ("no KV heads", [1, 0, 1, D], [1, 0, 1, DV]),
            ("K dim 9", [1, KV_HEADS, 1, D + 1], [1, KV_HEADS, 1, DV]),
            ("V dim 8", [1, KV_HEADS, 1, D], [1, KV_HEADS, 1, D]),
            ("K 1 row, V 2 rows", [1, KV_HEADS, 1, D], [1, KV_HEADS, 2, DV]),
            ("batch 2 into one sequence", [2, KV_HEADS, 1, D], [2, KV_HEADS, 1, DV]),
            ("batch 0", [0, KV_HEADS, 1, D], [0, KV_HEADS, 1, DV]),
        ];
        for (call, ks, vs) in shapes {
            check(&what(call), &cache, Want::Shape, |c| {
                let (k, v) = (values(ks.iter().product(), 4), values(vs.iter().product(), 5));
                c.append(0, View4::bhld(&k, ks)?, View4::bhld(&v, vs)?)
            });
        }
        for (call, batch) in [("append_all of batch 1", 1), ("append_all of batch 3", 3)] {
            check(&what(call), &cache, Want::Shape, |c| {
                let (k, v) = (values(batch * KV_HEADS * D, 6), values(batch * KV_HEADS * DV, 7));
                c.append_all(
                    View4::bhld(&k, [batch, KV_HEADS, 1, D])?,
                    View4::bhld(&v, [batch, KV_HEADS, 1, DV])?,
                )
            });
        }
        // Values the storage type cannot hold: refused rather than stored as infinities; NaN and
        // the infinities themselves are stored as they are.
        let f32_cache = cache.config().dtype == KvDtype::F32;
        for (x, want) in
            [(1e6, Want::Invalid), (f32::MAX, Want::Invalid), (f32::NAN, Want::Ok), (f32::INFINITY, Want::Ok)]
        {
            let want = if f32_cache { Want::Ok } else { want };
            check(&what(&format!("a V value {x}")), &cache, want, |c| {
                let (k, mut v) = (values(KV_HEADS * 2 * D, 8), values(KV_HEADS * 2 * DV, 9));
                v[KV_HEADS * 2 * DV - 1] = x;
                c.append(1, View4::bhld(&k, [1, KV_HEADS, 2, D])?, View4::bhld(&v, [1, KV_HEADS, 2, DV])?)
            });
        }
    }
}

#[test]
fn malformed_attends_are_refused_with_the_output_untouched() {
    for (name, cache) in caches() {
        let what = |call: &str| format!("{name}: {call}");
        let cols = cache.key_columns();
        let run = |call: &str,
                   want: Want,
                   q: [usize; 4],
                   out: [usize; 4],
                   lse: [usize; 4],
                   p: &AttentionParams<'_>| {
            check(&what(call), &cache, want, |c| attend_into(c, q, out, lse, p));
        };
        let (q, out, lse) = ([2, HEADS, 1, D], [2, HEADS, 1, DV], [2, HEADS, 1, 1]);
        run(
            "3 query heads for 2 KV heads",
            Want::Shape,
            [2, 3, 1, D],
            [2, 3, 1, DV],
            [2, 3, 1, 1],
            &causal(),
        );
        run("Q dim 7", Want::Shape, [2, HEADS, 1, D - 1], out, lse, &causal());
        run("Q of batch 3", Want::Shape, [3, HEADS, 1, D], [3, HEADS, 1, DV], [3, HEADS, 1, 1], &causal());
        run("output dim 8", Want::Shape, q, [2, HEADS, 1, D], lse, &causal());
        run("output of 2 rows", Want::Shape, q, [2, HEADS, 2, DV], lse, &causal());
        run("lse of 2 rows", Want::Shape, q, out, [2, HEADS, 2, 1], &causal());
        run("lse of 2 columns", Want::Shape, q, out, [2, HEADS, 1, 2], &causal());
        let lens = [1, 1];
        run(
            "key lengths given",
            Want::Invalid,
            q,
            out,
            lse,
            &AttentionParams { key_lengths: Some(&lens), ..causal() },
        );
        for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.5] {
            let p = AttentionParams { scale: Some(scale), ..causal() };
            run(&format!("scale {scale}"), Want::Invalid, q, out, lse, &p);
        }
        for cap in [f32::NAN, 0.0, f32::INFINITY] {
            run(
                &format!("softcap {cap}"),
                Want::Invalid,
                q,
                out,
                lse,
                &AttentionParams { softcap: Some(cap), ..causal() },
            );
        }
        let slopes = [0.5, f32::NAN, 0.5, 0.5];
        run(
            "a NaN ALiBi slope",
            Want::Invalid,
            q,
            out,
            lse,
            &AttentionParams { alibi_slopes: Some(&slopes), ..causal() },
        );
        let sinks = [0.0; 3];
        run(
            "3 sinks for 4 heads",
            Want::Shape,
            q,
            out,
            lse,
            &AttentionParams { sinks: Some(&sinks), ..causal() },
        );
        // A bias or mask has one column per cached position, not one per slot of capacity.
        let capacity = cache.config().capacity;
        for width in [cols + 1, cols - 1, capacity + 1] {
            let bias = values(2 * width, 10);
            let p = AttentionParams { bias: Some(View4::bhld(&bias, [2, 1, 1, width]).unwrap()), ..causal() };
            run(&format!("bias of {width} columns"), Want::Shape, q, out, lse, &p);
            let mask = vec![true; 2 * width];
            let p = AttentionParams { mask: Some(View4::bhld(&mask, [2, 1, 1, width]).unwrap()), ..causal() };
            run(&format!("mask of {width} columns"), Want::Shape, q, out, lse, &p);
        }
        let bias = values(2 * cols, 11);
        let p = AttentionParams { bias: Some(View4::bhld(&bias, [2, 1, 1, cols]).unwrap()), ..causal() };
        run("bias of key_columns columns", Want::Ok, q, out, lse, &p);
        if cache.config().window.is_some() {
            for left in [4, 100, usize::MAX] {
                let p =
                    AttentionParams { window: Some(Window { left: Some(left), right: Some(0) }), ..causal() };
                run(&format!("window left {left} on a ring of window 4"), Want::Invalid, q, out, lse, &p);
            }
            run(
                "6 queries reaching past the ring",
                Want::Invalid,
                [2, HEADS, 6, D],
                [2, HEADS, 6, DV],
                [2, HEADS, 6, 1],
                &causal(),
            );
        }
    }
}

/// The layer of the step tests: 2 KV heads of dims 8 and 6, as the caches above.
fn layer_config() -> MhaConfig {
    MhaConfig { d_model: 16, heads: HEADS, kv_heads: KV_HEADS, head_dim: D, value_dim: DV, rope: None }
}

#[test]
fn malformed_layers_are_refused_without_an_abort() {
    let good = layer_config();
    let cases: [(&str, MhaConfig, Want); 8] = [
        ("d_model 0", MhaConfig { d_model: 0, ..good }, Want::Invalid),
        ("no heads", MhaConfig { heads: 0, ..good }, Want::Invalid),
        ("no KV heads", MhaConfig { kv_heads: 0, ..good }, Want::Invalid),
        ("4 heads over 3 KV heads", MhaConfig { kv_heads: 3, ..good }, Want::Shape),
        ("head_dim 2^62", MhaConfig { head_dim: 1 << 62, ..good }, Want::Invalid),
        ("d_model 2^60", MhaConfig { d_model: 1 << 60, ..good }, Want::Invalid),
        ("value_dim usize::MAX", MhaConfig { value_dim: usize::MAX, ..good }, Want::Invalid),
        // Weights of 2^48 floats: no address space holds them.
        ("d_model 2^44", MhaConfig { d_model: 1 << 44, ..good }, Want::Invalid),
    ];
    for (what, cfg, want) in cases {
        let result = catch_unwind(|| MultiHeadAttention::random(cfg, 1).map(|_| ()))
            .unwrap_or_else(|_| panic!("{what}: panicked instead of returning an Err"));
        assert!(want.accepts(&result), "{what}: want {want:?}, got {result:?}");
        let result = catch_unwind(|| MhaWeights::random(&cfg, 1).map(|_| ()))
            .unwrap_or_else(|_| panic!("{what}: MhaWeights::random panicked"));
        assert!(want.accepts(&result), "{what}: MhaWeights::random: want {want:?}, got {result:?}");
    }
    let mut short = MhaWeights::random(&good, 2).unwrap();
    short.w_o.pop();
    assert!(matches!(MultiHeadAttention::new(good, short), Err(Error::ShapeMismatch(_))));
}

#[test]
fn malformed_layer_calls_are_refused_with_the_cache_and_output_untouched() {
    let cfg = layer_config();
    let dm = cfg.d_model;
    let mut layer = MultiHeadAttention::random(cfg, 3).unwrap();
    let x = values(2 * 3 * dm, 12);
    // forward and forward_cross: wrong lengths, overflowing sizes, a bad parameter.
    let bad_scale = AttentionParams { scale: Some(f32::NAN), ..causal() };
    type Forward<'a> = &'a dyn Fn(&mut MultiHeadAttention, &mut [f32]) -> flashcpu::Result<()>;
    let calls: [(&str, usize, Want, Forward<'_>); 8] = [
        ("forward, x one short", 6 * dm, Want::Shape, &|l, out| l.forward(&x[1..], 2, 3, out, &causal())),
        ("forward, out one long", 6 * dm + 1, Want::Shape, &|l, out| l.forward(&x, 2, 3, out, &causal())),
        ("forward, batch·seq overflows", 6 * dm, Want::Shape, &|l, out| {
            l.forward(&x, usize::MAX, 3, out, &causal())
        }),
        ("forward, tokens·d_model overflows", 6 * dm, Want::Shape, &|l, out| {
            l.forward(&x, 1 << 30, 1 << 30, out, &causal())
        }),
        ("forward, NaN scale", 6 * dm, Want::Invalid, &|l, out| l.forward(&x, 2, 3, out, &bad_scale)),
        ("forward_cross, x_kv one short", 6 * dm, Want::Shape, &|l, out| {
            l.forward_cross(&x, &x[1..], 2, 3, 3, out, &causal())
        }),
        ("forward_cross, kv tokens overflow", 6 * dm, Want::Shape, &|l, out| {
            l.forward_cross(&x, &x, 2, 3, usize::MAX, out, &causal())
        }),
        ("forward_cross, NaN scale", 6 * dm, Want::Invalid, &|l, out| {
            l.forward_cross(&x, &x, 2, 3, 3, out, &bad_scale)
        }),
    ];
    for (what, out_len, want, call) in calls {
        let mut out = vec![SENTINEL; out_len];
        let result = catch_unwind(AssertUnwindSafe(|| call(&mut layer, &mut out)))
            .unwrap_or_else(|_| panic!("{what}: panicked instead of returning an Err"));
        assert!(want.accepts(&result), "{what}: want {want:?}, got {result:?}");
        assert!(out.iter().all(|&v| v == SENTINEL), "{what}: a refused call wrote its output");
    }

    // step: caches that do not fit, no room, parameters the attention refuses.
    for (name, cache) in caches() {
        let step = |what: &str, want: Want, cache: &KvCache, n: usize, p: &AttentionParams<'_>| {
            check(&format!("{name}: step, {what}"), cache, want, |c| {
                let x = values(2 * n * dm, 13);
                let mut out = vec![SENTINEL; 2 * n * dm];
                let mut layer = layer.clone();
                let result = layer.step(&x, 2, n, c, &mut out, p);
                if result.is_err() {
                    assert!(out.iter().all(|&v| v == SENTINEL), "{what}: a refused step wrote its output");
                }
                result
            });
        };
        let ring = cache.config().window.is_some();
        step("one token past the room", Want::Invalid, &cache, 4, &causal());
        step("NaN scale", Want::Invalid, &cache, 1, &bad_scale);
        let lens = [1, 1];
        step(
            "key lengths given",
            Want::Invalid,
            &cache,
            1,
            &AttentionParams { key_lengths: Some(&lens), ..causal() },
        );
        let bias = values(2 * 64, 14);
        let p = AttentionParams { bias: Some(View4::bhld(&bias, [2, 1, 1, 64]).unwrap()), ..causal() };
        step("a bias of 64 columns", Want::Shape, &cache, 1, &p);
        if ring {
            let p = AttentionParams { window: Some(Window { left: Some(9), right: Some(0) }), ..causal() };
            for n in 1..=3 {
                step(&format!("{n} tokens, a window wider than the ring"), Want::Invalid, &cache, n, &p);
            }
        }
        for other in [
            KvCacheConfig { batch: 3, ..*cache.config() },
            KvCacheConfig { kv_heads: 1, ..*cache.config() },
            KvCacheConfig { head_dim: 4, ..*cache.config() },
        ] {
            let wrong = KvCache::new(other).unwrap();
            step(&format!("a cache {other:?}"), Want::Shape, &wrong, 1, &causal());
        }
    }
}

/// The case: on a full ring (window 4, capacity 6), a step refused for a window wider than
/// the ring left the oldest recoverable position moved, so `truncate(0, 5)`, accepted before, was
/// refused after.
#[test]
fn a_refused_step_on_a_full_ring_keeps_every_rollback() {
    let cfg = layer_config();
    let dm = cfg.d_model;
    let mut layer = MultiHeadAttention::random(cfg, 4).unwrap();
    let mut cache = KvCache::new(config(1, 6, Some(4), KvDtype::F32)).unwrap();
    let x = values(9 * dm, 15);
    let mut out = vec![0.0; dm];
    for t in 0..6 {
        layer.step(&x[t * dm..][..dm], 1, 1, &mut cache, &mut out, &causal()).unwrap();
    }
    assert!(cache.clone().truncate(0, 5).is_ok());
    let wide = AttentionParams { window: Some(Window { left: Some(5), right: Some(0) }), ..causal() };
    for n in 1..=3 {
        check(&format!("a step of {n} with window left 5"), &cache, Want::Invalid, |c| {
            let mut out = vec![SENTINEL; n * dm];
            layer.clone().step(&x[6 * dm..][..n * dm], 1, n, c, &mut out, &wide)
        });
    }
    assert_eq!(cache.rollback_floor(0), Ok(0));
    cache.truncate(0, 5).unwrap();
}
