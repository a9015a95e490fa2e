//! `flashcpu bench mha`: one multi-head attention layer forward (projections + attention).

use crate::data::{divides, ensure_fits, positive, uniform, zeros};
use crate::report::{CmdResult, Ctx, emit_rate, median_seconds};
use flashcpu::{AttentionParams, CausalAlign, MhaConfig, MultiHeadAttention};

/// Shape of one layer benchmark.
#[derive(Clone, Copy, Debug)]
pub struct MhaShape {
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
    pub batch: usize,
    pub causal: bool,
}

pub fn run(ctx: &Ctx, s: MhaShape) -> CmdResult {
    positive(&[
        ("d-model", s.d_model),
        ("heads", s.heads),
        ("kv-heads", s.kv_heads),
        ("seq", s.seq),
        ("batch", s.batch),
    ])?;
    if !s.d_model.is_multiple_of(s.heads) {
        return Err(format!("--d-model {} must be a multiple of --heads {}", s.d_model, s.heads).into());
    }
    divides(s.heads, s.kv_heads)?;
    // The layer allocates its four weight matrices and, per forward, about six activations the
    // size of x: refuse what this machine cannot hold before the library tries.
    ensure_fits("the layer's weights", &[4, s.d_model, s.d_model])?;
    ensure_fits("the layer's activations", &[6, s.batch, s.seq, s.d_model])?;
    let head_dim = s.d_model / s.heads;
    let cfg = MhaConfig {
        d_model: s.d_model,
        heads: s.heads,
        kv_heads: s.kv_heads,
        head_dim,
        value_dim: head_dim,
        rope: None,
    };
    let mut layer = MultiHeadAttention::random(cfg, 7)?;
    let x = uniform("x", &[s.batch, s.seq, s.d_model], 3)?;
    let mut out = zeros("the output", &[s.batch, s.seq, s.d_model])?;
    let params = AttentionParams {
        causal: s.causal.then_some(CausalAlign::BottomRight),
        isa: Some(ctx.isa),
        ..Default::default()
    };
    layer.forward(&x, s.batch, s.seq, &mut out, &params)?;
    let median_s =
        median_seconds(|| layer.forward(&x, s.batch, s.seq, &mut out, &params).expect("validated above"));
    let pairs = if s.causal { s.seq.saturating_mul(s.seq + 1) / 2 } else { s.seq.saturating_mul(s.seq) };
    let label = format!(
        "b{}s{}dm{}h{}kv{}{}",
        s.batch,
        s.seq,
        s.d_model,
        s.heads,
        s.kv_heads,
        if s.causal { "-causal" } else { "" }
    );
    emit_rate(ctx, "mha", &label, median_s, cfg.forward_flops(s.batch, s.seq, s.seq, pairs), &[])
}
