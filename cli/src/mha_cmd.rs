//! `flashcpu bench mha`: one multi-head attention layer forward (projections + attention).

use crate::data::uniform;
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
    if s.heads == 0 || !s.d_model.is_multiple_of(s.heads) {
        return Err(
            format!("--d-model {} must be a positive multiple of --heads {}", s.d_model, s.heads).into()
        );
    }
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
    let x = uniform(s.batch * s.seq * s.d_model, 3);
    let mut out = vec![0.0f32; x.len()];
    let params = AttentionParams {
        causal: s.causal.then_some(CausalAlign::BottomRight),
        isa: Some(ctx.isa),
        ..Default::default()
    };
    layer.forward(&x, s.batch, s.seq, &mut out, &params)?;
    let median_s =
        median_seconds(|| layer.forward(&x, s.batch, s.seq, &mut out, &params).expect("validated above"));
    let pairs = if s.causal { s.seq * (s.seq + 1) / 2 } else { s.seq * s.seq };
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
