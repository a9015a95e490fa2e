//! One pre-norm (Llama-style) transformer block on random weights, run the way an inference
//! engine would run it on flashcpu:
//!
//! ```text
//! h   = x + MHA(RMSNorm(x))                          causal self-attention, RoPE, 8 query heads
//!                                                    sharing 2 K/V heads (grouped-query)
//! out = h + (SiLU(n·W_gate) ⊙ (n·W_up))·W_down,      n = RMSNorm(h)   (SwiGLU MLP)
//! ```
//!
//! It shows how the pieces fit: [`MultiHeadAttention`] is the whole attention sublayer (fused QKV
//! projection, RoPE, flash attention, output projection); the MLP is three [`matmul`] calls, the
//! last with `β = 1` so that the residual add comes for free (`C ← A·B + 1·C`, C holding `h`);
//! normalisation, the gate and the first residual are plain Rust loops. All scratch is allocated
//! once, as an engine would, and every run reuses it.
//!
//! It times each sublayer on a `[1, 256, 512]` input and reports GFLOP/s, counting the projections
//! and the attention work the causal mask keeps (element-wise steps are not counted).
//!
//! `cargo run --release --example transformer_block` (set `FLASHCPU_ISA=portable` to compare paths).

use flashcpu::{
    AttentionParams, CausalAlign, MatMut, MatRef, MhaConfig, MultiHeadAttention, Rope, RopeStyle,
};
use flashcpu::{Result, matmul};
use std::time::{Duration, Instant};

const SEQ: usize = 256;
const D_MODEL: usize = 512;
/// ≈ 8/3·d_model, rounded up to a multiple of 64: Llama's MLP width for a SwiGLU of the same cost
/// as a 4·d_model GELU MLP.
const D_FF: usize = 1408;
const RUNS: usize = 10;

/// Seeded values uniform in `[−scale, scale)` (splitmix64), so that runs are reproducible.
fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = (s ^ (s >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            scale * (((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

/// `RMSNorm(x) = x / √(mean(x²) + 1e-5) · g`, row by row.
fn rms_norm(x: &[f32], gain: &[f32], out: &mut [f32]) {
    for (row, o) in x.chunks_exact(gain.len()).zip(out.chunks_exact_mut(gain.len())) {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let inv = 1.0 / (mean_sq + 1e-5).sqrt();
        o.iter_mut().zip(row).zip(gain).for_each(|((o, x), g)| *o = x * inv * g);
    }
}

/// The block's weights and its scratch (sized once for `SEQ` tokens).
struct Block {
    attn: MultiHeadAttention,
    norm1: Vec<f32>,
    norm2: Vec<f32>,
    w_gate: Vec<f32>,
    w_up: Vec<f32>,
    w_down: Vec<f32>,
    normed: Vec<f32>,
    h: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Block {
    /// `out = block(x)` for `x`, `out` of `[1, SEQ, D_MODEL]`; returns the time of each sublayer.
    fn forward(&mut self, x: &[f32], out: &mut [f32]) -> Result<(Duration, Duration)> {
        let t0 = Instant::now();
        rms_norm(x, &self.norm1, &mut self.normed);
        let causal = AttentionParams { causal: Some(CausalAlign::BottomRight), ..Default::default() };
        self.attn.forward(&self.normed, 1, SEQ, &mut self.h, &causal)?;
        self.h.iter_mut().zip(x).for_each(|(h, x)| *h += x);
        let t1 = Instant::now();

        rms_norm(&self.h, &self.norm2, &mut self.normed);
        let n = MatRef::row_major(&self.normed, SEQ, D_MODEL)?;
        for (w, dst) in [(&self.w_gate, &mut self.gate), (&self.w_up, &mut self.up)] {
            matmul(1.0, n, MatRef::row_major(w, D_MODEL, D_FF)?, 0.0, MatMut::row_major(dst, SEQ, D_FF)?)?;
        }
        // SwiGLU: SiLU(g)·u, SiLU(g) = g·σ(g).
        self.gate.iter_mut().zip(&self.up).for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
        out.copy_from_slice(&self.h);
        let (g, w_down) =
            (MatRef::row_major(&self.gate, SEQ, D_FF)?, MatRef::row_major(&self.w_down, D_FF, D_MODEL)?);
        matmul(1.0, g, w_down, 1.0, MatMut::row_major(out, SEQ, D_MODEL)?)?; // out = h + MLP
        Ok((t1 - t0, t1.elapsed()))
    }
}

fn main() -> Result<()> {
    let cfg = MhaConfig {
        d_model: D_MODEL,
        heads: 8,
        kv_heads: 2,
        head_dim: 64,
        value_dim: 64,
        rope: Some(Rope { style: RopeStyle::HalfSplit, base: 10_000.0 }),
    };
    let mut block = Block {
        attn: MultiHeadAttention::random(cfg, 1)?,
        norm1: vec![1.0; D_MODEL],
        norm2: vec![1.0; D_MODEL],
        w_gate: random(D_MODEL * D_FF, 1.0 / (D_MODEL as f32).sqrt(), 2),
        w_up: random(D_MODEL * D_FF, 1.0 / (D_MODEL as f32).sqrt(), 3),
        w_down: random(D_FF * D_MODEL, 1.0 / (D_FF as f32).sqrt(), 4),
        normed: vec![0.0; SEQ * D_MODEL],
        h: vec![0.0; SEQ * D_MODEL],
        gate: vec![0.0; SEQ * D_FF],
        up: vec![0.0; SEQ * D_FF],
    };
    let x = random(SEQ * D_MODEL, 1.0, 5);
    let mut out = vec![0.0; SEQ * D_MODEL];

    block.forward(&x, &mut out)?; // warm-up: first-touch of scratch, thread pool start
    let (mut attn_best, mut mlp_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..RUNS {
        let (a, m) = block.forward(&x, &mut out)?;
        (attn_best, mlp_best) = (attn_best.min(a), mlp_best.min(m));
    }

    let attn_flops = cfg.forward_flops(1, SEQ, SEQ, SEQ * (SEQ + 1) / 2);
    let mlp_flops = 2.0 * (SEQ * D_MODEL * D_FF) as f64 * 3.0;
    let report = |name: &str, flops: f64, t: Duration| {
        let ms = t.as_secs_f64() * 1e3;
        println!(
            "{name:<10} {ms:8.3} ms  {:6.2} GFLOP/s  ({:.0} MFLOP)",
            flops / t.as_secs_f64() / 1e9,
            flops / 1e6
        );
    };
    println!(
        "pre-norm block, x = [1, {SEQ}, {D_MODEL}], 8 heads / 2 KV heads, d_ff {D_FF}, ISA {:?}",
        flashcpu::active_isa()?
    );
    println!("best of {RUNS} runs:");
    report("attention", attn_flops, attn_best);
    report("mlp", mlp_flops, mlp_best);
    report("block", attn_flops + mlp_flops, attn_best + mlp_best);
    let rms = |v: &[f32]| (v.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    println!("rms: input {:.4}, output {:.4}", rms(&x), rms(&out));
    Ok(())
}
