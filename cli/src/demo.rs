//! The default job (`flashcpu` with no arguments): one multi-head attention layer, a prefill and
//! then token-by-token decoding through a KV cache, checked against the f64 reference, with each
//! stage's speed as a share of this machine's measured limits.

use crate::data::uniform;
use crate::report::{CmdResult, Ctx, out};
use flashcpu::{
    AttentionParams, KvCache, KvCacheConfig, KvDtype, MhaConfig, MhaWeights, MultiHeadAttention, Rope,
    RopeStyle, reference,
};
use std::io::Write;
use std::time::Instant;

const D_MODEL: usize = 1024;
const HEADS: usize = 16;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = 64;
const PREFILL: usize = 1024;
const DECODE_STEPS: usize = 64;
/// Timed prefills, the median reported: one prefill takes tens of milliseconds, which a burst of
/// another tenant's work on a shared machine can double.
const PREFILL_RUNS: usize = 5;

/// Prints `label…` now and `done (t s)` when `f` returns, so long stages show progress.
fn stage<T>(label: &str, f: impl FnOnce() -> T) -> (T, f64) {
    // Progress only: a closed pipe shows up at the first `out!` of the results.
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "  {label} …").and_then(|()| stdout.flush()).ok();
    drop(stdout);
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    writeln!(std::io::stdout().lock(), " done ({secs:.2} s)").ok();
    (r, secs)
}

pub fn run(ctx: &Ctx) -> CmdResult {
    let cfg = MhaConfig {
        d_model: D_MODEL,
        heads: HEADS,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        value_dim: HEAD_DIM,
        rope: Some(Rope { style: RopeStyle::HalfSplit, base: 10_000.0 }),
    };
    out!(
        "flashcpu demo: multi-head attention, d_model {D_MODEL}, {HEADS} heads ({KV_HEADS} KV heads), head dim {HEAD_DIM}, RoPE"
    )?;
    out!(
        "  {PREFILL}-token prefill, then {DECODE_STEPS} decode steps; ISA {}, {} threads",
        ctx.isa.name(),
        ctx.threads
    )?;
    let (peak, _) =
        stage("measuring FMA peak", || flashcpu::peak::fma_peak_gflops(Some(ctx.isa), ctx.threads));
    let peak = peak?;
    let (bw, _) = stage("measuring memory read bandwidth", || {
        flashcpu::peak::read_bandwidth_gbps(Some(ctx.isa), ctx.threads)
    });
    let bw = bw?;

    let weights = MhaWeights::random(&cfg, 42)?;
    let mut layer = MultiHeadAttention::new(cfg, weights.clone())?;
    let total = PREFILL + DECODE_STEPS;
    let x = uniform("x", &[total, D_MODEL], 5)?;
    let mut out = vec![0.0f32; total * D_MODEL];
    let mut cache = KvCache::new(KvCacheConfig {
        batch: 1,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        value_dim: HEAD_DIM,
        capacity: total,
        dtype: KvDtype::F32,
        window: None,
    })?;
    let params = AttentionParams { isa: Some(ctx.isa), ..Default::default() };

    // Warm the thread pool and the scratch buffers once with a prefill of the same length in a
    // scratch cache: the timed prefill then shows the steady state of a serving engine, not the
    // first touch of buffers sized for it.
    let mut warm_cache = KvCache::new(*cache.config())?;
    let prompt = &x[..PREFILL * D_MODEL];
    layer.step(prompt, 1, PREFILL, &mut warm_cache, &mut out[..PREFILL * D_MODEL], &params)?;

    // The same prefill PREFILL_RUNS times, each from an empty cache; the last fills the cache the
    // decode steps extend.
    let mut prefill_times = Vec::with_capacity(PREFILL_RUNS);
    let (prefill, _) = stage(&format!("prefill ×{PREFILL_RUNS}"), || -> flashcpu::Result<()> {
        for run in 0..PREFILL_RUNS {
            let into = if run + 1 < PREFILL_RUNS {
                warm_cache.truncate(0, 0)?;
                &mut warm_cache
            } else {
                &mut cache
            };
            let s = Instant::now();
            layer.step(prompt, 1, PREFILL, into, &mut out[..PREFILL * D_MODEL], &params)?;
            prefill_times.push(s.elapsed().as_secs_f64());
        }
        Ok(())
    });
    prefill?;
    let mut step_times = Vec::with_capacity(DECODE_STEPS);
    let (decode, decode_s) = stage("decode", || -> flashcpu::Result<()> {
        for t in PREFILL..total {
            let s = Instant::now();
            layer.step(
                &x[t * D_MODEL..][..D_MODEL],
                1,
                1,
                &mut cache,
                &mut out[t * D_MODEL..][..D_MODEL],
                &params,
            )?;
            step_times.push(s.elapsed().as_secs_f64());
        }
        Ok(())
    });
    decode?;

    let rows = [0, PREFILL / 2, PREFILL - 1, total - 1];
    let (want, _) = stage("checking sampled tokens against the f64 reference", || {
        reference::mha_f64(&cfg, &weights, &x, (1, total), true, &rows)
    });
    let max_err = rows
        .iter()
        .enumerate()
        .flat_map(|(r, &t)| (0..D_MODEL).map(move |c| (r, t, c)))
        .map(|(r, t, c)| (f64::from(out[t * D_MODEL + c]) - want[r * D_MODEL + c]).abs())
        .fold(0.0, f64::max);

    // The peak once more, after the work: the better of two measurements is the machine's, where
    // one alone can catch a burst of another tenant's work and make every ratio look better.
    let (peak_after, _) =
        stage("measuring FMA peak again", || flashcpu::peak::fma_peak_gflops(Some(ctx.isa), ctx.threads));
    let peak = peak.max(peak_after?);

    let prefill_flops = cfg.forward_flops(1, PREFILL, PREFILL, PREFILL * (PREFILL + 1) / 2);
    prefill_times.sort_by(f64::total_cmp);
    let prefill_s = prefill_times[PREFILL_RUNS / 2];
    step_times.sort_by(f64::total_cmp);
    let step_s = step_times[step_times.len() / 2];
    let mid = PREFILL + DECODE_STEPS / 2;
    let step_flops = cfg.forward_flops(1, 1, 1, mid);
    // Per step the cache read is K and V of every cached position; the weights are read too.
    let kv_bytes = (mid * KV_HEADS * 2 * HEAD_DIM * 4) as f64;
    let weight_bytes = (D_MODEL * (cfg.qkv_width() + HEADS * HEAD_DIM) * 4) as f64;
    let step_gbps = (kv_bytes + weight_bytes) / step_s / 1e9;

    out!()?;
    out!("| stage | time | GFLOP/s | GB/s | % of machine limit |")?;
    out!("| --- | --- | --- | --- | --- |")?;
    let prefill_gflops = prefill_flops / prefill_s / 1e9;
    out!(
        "| prefill, {PREFILL} tokens (projections + causal attention), median of {PREFILL_RUNS} | {:.1} ms | {prefill_gflops:.1} | – | {:.0}% of {peak:.0} GFLOP/s FMA peak |",
        prefill_s * 1e3,
        100.0 * prefill_gflops / peak
    )?;
    out!(
        "| decode, median of {DECODE_STEPS} steps (1 token) | {:.2} ms | {:.1} | {step_gbps:.1} | {:.0}% of {bw:.1} GB/s read bandwidth |",
        step_s * 1e3,
        step_flops / step_s / 1e9,
        100.0 * step_gbps / bw
    )?;
    out!(
        "| all {DECODE_STEPS} decode steps | {:.1} ms | – | – | {:.1} tokens/s |",
        decode_s * 1e3,
        DECODE_STEPS as f64 / decode_s
    )?;
    out!()?;
    out!(
        "max |error| against the f64 reference on tokens {rows:?}: {max_err:.2e} ({})",
        if max_err < 1e-3 { "ok" } else { "TOO LARGE" }
    )?;
    out!(
        "ISA {} · {} threads · FLASHCPU_ISA and --threads change them (see `flashcpu --help`)",
        ctx.isa.name(),
        ctx.threads
    )?;
    if max_err >= 1e-3 {
        return Err(format!("output differs from the reference by {max_err:.2e}").into());
    }
    Ok(())
}
