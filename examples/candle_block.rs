//! A Llama-style decoder block built from candle-nn layers, run twice on the same random weights
//! and inputs: once with candle's own attention, written as candle-transformers' Llama writes it
//! (a `Tensor::cat` KV cache, `repeat_kv`, matmul → mask → softmax → matmul), and once with
//! flashcpu's ([`flashcpu::candle::KvCache`]: append the new K/V rows, attend in place).
//!
//! ```text
//! h   = x + W_o·Attention(RoPE(W_q·n), RoPE(W_k·n), W_v·n),   n = RMSNorm(x)
//! out = h + W_down·(SiLU(W_gate·n') ⊙ W_up·n'),               n' = RMSNorm(h)
//! ```
//!
//! d_model 2048, 16 query heads sharing 4 K/V heads of dim 128, f32 throughout; a 1024-token
//! prompt, then 32 decode steps. It prints each stage's time, the largest |difference| between
//! the two runs' block outputs, and how much faster the attention stage (cache update included)
//! is on flashcpu.
//!
//! `cargo run --release --features candle --example candle_block`

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::rotary_emb::rope;
use candle_nn::{Linear, RmsNorm};
use flashcpu::candle::KvCache;
use flashcpu::{AttentionParams, CausalAlign, KvCacheConfig};
use std::time::{Duration, Instant};

const D_MODEL: usize = 2048;
const HEADS: usize = 16;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = D_MODEL / HEADS;
/// Llama's MLP width for this d_model (TinyLlama's 5632).
const D_FF: usize = 5632;
const PROMPT: usize = 1024;
const DECODE_STEPS: usize = 32;
const ROPE_THETA: f32 = 10_000.0;

/// One decoder block with random weights; `attention` is the only part the two runs differ in.
struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    mlp_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// `[max positions, HEAD_DIM / 2]` RoPE tables.
    cos: Tensor,
    sin: Tensor,
}

/// A `d_out × d_in` projection with weights of variance 1/d_in, so activations stay near 1.
fn linear(d_in: usize, d_out: usize, dev: &Device) -> Result<Linear> {
    Ok(Linear::new(Tensor::randn(0f32, (d_in as f32).powf(-0.5), (d_out, d_in), dev)?, None))
}

impl Block {
    fn new(dev: &Device) -> Result<Block> {
        let norm =
            || Ok::<_, candle_core::Error>(RmsNorm::new(Tensor::ones(D_MODEL, DType::F32, dev)?, 1e-5));
        let positions = PROMPT + DECODE_STEPS;
        let inv_freq: Vec<f32> =
            (0..HEAD_DIM / 2).map(|i| ROPE_THETA.powf(-2.0 * i as f32 / HEAD_DIM as f32)).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, HEAD_DIM / 2), dev)?;
        let pos =
            Tensor::arange(0u32, positions as u32, dev)?.to_dtype(DType::F32)?.reshape((positions, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq)?;
        Ok(Block {
            attn_norm: norm()?,
            wq: linear(D_MODEL, HEADS * HEAD_DIM, dev)?,
            wk: linear(D_MODEL, KV_HEADS * HEAD_DIM, dev)?,
            wv: linear(D_MODEL, KV_HEADS * HEAD_DIM, dev)?,
            wo: linear(HEADS * HEAD_DIM, D_MODEL, dev)?,
            mlp_norm: norm()?,
            gate: linear(D_MODEL, D_FF, dev)?,
            up: linear(D_MODEL, D_FF, dev)?,
            down: linear(D_FF, D_MODEL, dev)?,
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// The block on `x` (`[1, len, D_MODEL]`, positions `pos..pos + len`); also returns the time
    /// spent in `attention`.
    fn forward(&self, x: &Tensor, pos: usize, attention: &mut dyn Attention) -> Result<(Tensor, Duration)> {
        let (b, len, _) = x.dims3()?;
        let n = self.attn_norm.forward(x)?;
        // As Llama: Q and K contiguous `[B, H, L, D]` for RoPE, V a transposed view.
        let heads =
            |proj: &Linear, h: usize| proj.forward(&n)?.reshape((b, len, h, HEAD_DIM))?.transpose(1, 2);
        let (cos, sin) = (self.cos.narrow(0, pos, len)?, self.sin.narrow(0, pos, len)?);
        let q = rope(&heads(&self.wq, HEADS)?.contiguous()?, &cos, &sin)?;
        let k = rope(&heads(&self.wk, KV_HEADS)?.contiguous()?, &cos, &sin)?;
        let v = heads(&self.wv, KV_HEADS)?;

        let start = Instant::now();
        let y = attention.attend(&q, &k, &v)?;
        let spent = start.elapsed();

        let y = y.transpose(1, 2)?.reshape((b, len, HEADS * HEAD_DIM))?;
        let h = (x + self.wo.forward(&y)?)?;
        let n = self.mlp_norm.forward(&h)?;
        let mlp =
            self.down.forward(&(candle_nn::ops::silu(&self.gate.forward(&n)?)? * self.up.forward(&n)?)?)?;
        Ok(((h + mlp)?, spent))
    }
}

/// Causal attention of the new positions over every position so far, keeping the K/V cache:
/// q `[1, HEADS, len, HEAD_DIM]`, k and v `[1, KV_HEADS, len, HEAD_DIM]`.
trait Attention {
    fn attend(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor>;
}

/// candle-transformers' Llama attention.
#[derive(Default)]
struct CandleAttention {
    cache: Option<(Tensor, Tensor)>,
}

/// candle-transformers' `repeat_kv`: each K/V head copied for the query heads that share it.
fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    let (b, h, len, d) = x.dims4()?;
    Tensor::cat(&vec![&x; n_rep], 2)?.reshape((b, h * n_rep, len, d))
}

impl Attention for CandleAttention {
    fn attend(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (k, v) = match &self.cache {
            Some((ck, cv)) => {
                (Tensor::cat(&[ck, k], 2)?.contiguous()?, Tensor::cat(&[cv, v], 2)?.contiguous()?)
            }
            None => (k.clone(), v.clone()),
        };
        self.cache = Some((k.clone(), v.clone()));
        let (k, v) = (repeat_kv(k, HEADS / KV_HEADS)?, repeat_kv(v, HEADS / KV_HEADS)?);
        let att = (q.matmul(&k.t()?)? / (HEAD_DIM as f64).sqrt())?;
        let len = q.dim(2)?;
        let att = if len == 1 {
            att
        } else {
            // Llama's prompt mask: key j hidden from query i when j > i (an empty cache before).
            let mask: Vec<u8> = (0..len).flat_map(|i| (0..len).map(move |j| u8::from(j > i))).collect();
            let mask = Tensor::from_slice(&mask, (len, len), q.device())?.broadcast_as(att.shape())?;
            let hidden = Tensor::new(f32::NEG_INFINITY, q.device())?.broadcast_as(att.shape())?;
            mask.where_cond(&hidden, &att)?
        };
        candle_nn::ops::softmax_last_dim(&att)?.matmul(&v.contiguous()?)
    }
}

/// flashcpu's cache and attention.
struct FlashAttention {
    cache: KvCache,
}

impl Attention for FlashAttention {
    fn attend(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        self.cache.append(k, v)?;
        let causal = AttentionParams { causal: Some(CausalAlign::BottomRight), ..Default::default() };
        self.cache.attend(q, &causal)
    }
}

/// Times and outputs of one run: the prompt, then the decode steps.
struct Run {
    outputs: Vec<Tensor>,
    prefill: Duration,
    prefill_attention: Duration,
    decode: Duration,
    decode_attention: Duration,
}

fn run(block: &Block, inputs: &[Tensor], attention: &mut dyn Attention) -> Result<Run> {
    let start = Instant::now();
    let (out, prefill_attention) = block.forward(&inputs[0], 0, attention)?;
    let prefill = start.elapsed();
    let mut outputs = vec![out];
    let (mut decode, mut decode_attention) = (Duration::ZERO, Duration::ZERO);
    for (step, x) in inputs[1..].iter().enumerate() {
        let start = Instant::now();
        let (out, spent) = block.forward(x, PROMPT + step, attention)?;
        decode += start.elapsed();
        decode_attention += spent;
        outputs.push(out);
    }
    Ok(Run { outputs, prefill, prefill_attention, decode, decode_attention })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let block = Block::new(&dev)?;
    let mut inputs = vec![Tensor::randn(0f32, 1.0, (1, PROMPT, D_MODEL), &dev)?];
    for _ in 0..DECODE_STEPS {
        inputs.push(Tensor::randn(0f32, 1.0, (1, 1, D_MODEL), &dev)?);
    }
    let cache = KvCache::new(KvCacheConfig {
        batch: 1,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        value_dim: HEAD_DIM,
        capacity: PROMPT + DECODE_STEPS,
        ..Default::default()
    })?;
    // A short warm-up of each path first, so that neither pays for thread pools and first touches.
    let warm = inputs[0].narrow(1, 0, 16)?;
    block.forward(&warm, 0, &mut CandleAttention::default())?;
    block.forward(&warm, 0, &mut FlashAttention { cache: cache.clone() })?;

    let candle = run(&block, &inputs, &mut CandleAttention::default())?;
    let ours = run(&block, &inputs, &mut FlashAttention { cache })?;

    println!(
        "Llama-style block: d_model {D_MODEL}, {HEADS} query heads / {KV_HEADS} KV heads of dim {HEAD_DIM}, \
         RoPE, f32; {PROMPT}-token prompt, then {DECODE_STEPS} decode steps"
    );
    println!("{:<28}{:>15}{:>15}{:>15}{:>15}", "", "prefill block", "attention", "decode block", "attention");
    for (name, r) in [("candle (matmul→softmax)", &candle), ("flashcpu", &ours)] {
        println!(
            "{name:<28}{:>12.1} ms{:>12.1} ms{:>12.1} ms{:>12.1} ms",
            ms(r.prefill),
            ms(r.prefill_attention),
            ms(r.decode),
            ms(r.decode_attention)
        );
    }
    let mut max_err = 0f32;
    for (a, b) in candle.outputs.iter().zip(&ours.outputs) {
        let diff = (a - b)?.abs()?.flatten_all()?.max(D::Minus1)?.to_scalar::<f32>()?;
        max_err = max_err.max(diff);
    }
    println!("max |error| vs candle: {max_err:.2e}");
    println!(
        "attention speedup vs candle: prefill {:.1}×, decode {:.1}×",
        candle.prefill_attention.as_secs_f64() / ours.prefill_attention.as_secs_f64(),
        candle.decode_attention.as_secs_f64() / ours.decode_attention.as_secs_f64()
    );
    Ok(())
}
