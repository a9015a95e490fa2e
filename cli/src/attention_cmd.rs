//! `flashcpu bench attention`: the flash kernel, and optionally the naive three-pass path on our
//! own matmul (S = Q·Kᵀ materialised, softmax, O = P·V) so the flash win is visible.

use crate::data::{divides, positive, uniform, zeros};
use crate::report::{CmdResult, Ctx, emit_rate, median_seconds};
use flashcpu::{
    AttentionParams, CausalAlign, MatMut, MatRef, MatmulOptions, View4, View4Mut, attention, matmul_with,
    reference,
};

/// Shape of one benchmark (dense [B, H, L, D] tensors).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl Shape {
    /// Flops of the work the mask keeps: 4·d per visible (query, key) pair (2·d for Q·Kᵀ and 2·d
    /// for P·V), counting pairs exactly (≈ half of Lq·Lk for causal with Lq = Lk).
    pub fn kept_flops(&self) -> f64 {
        let pairs: usize = (0..self.q_len).map(|i| self.visible_keys(i)).sum();
        4.0 * self.batch as f64 * self.heads as f64 * self.head_dim as f64 * pairs as f64
    }
    /// Keys query row `i` sees (bottom-right causal alignment).
    fn visible_keys(&self, i: usize) -> usize {
        if self.causal {
            (i + 1 + self.kv_len).saturating_sub(self.q_len).min(self.kv_len)
        } else {
            self.kv_len
        }
    }
    fn label(&self) -> String {
        format!(
            "b{}h{}kv{}q{}k{}d{}{}",
            self.batch,
            self.heads,
            self.kv_heads,
            self.q_len,
            self.kv_len,
            self.head_dim,
            if self.causal { "-causal" } else { "" }
        )
    }
}

/// Rows compared against the f64 reference (it is O(kv_len·d) per row in plain loops).
const CHECKED_ROWS: usize = 6;

pub fn run(ctx: &Ctx, shape: Shape, naive: bool) -> CmdResult {
    let Shape { batch, heads, kv_heads, q_len, kv_len, head_dim: d, causal } = shape;
    positive(&[
        ("batch", batch),
        ("heads", heads),
        ("kv-heads", kv_heads),
        ("q-len", q_len),
        ("kv-len", kv_len),
        ("head-dim", d),
    ])?;
    divides(heads, kv_heads)?;
    let q = uniform("Q", &[batch, heads, q_len, d], 11)?;
    let k = uniform("K", &[batch, kv_heads, kv_len, d], 12)?;
    let v = uniform("V", &[batch, kv_heads, kv_len, d], 13)?;
    let mut out = zeros("the output", &[batch, heads, q_len, d])?;
    let params = AttentionParams {
        causal: causal.then_some(CausalAlign::BottomRight),
        isa: Some(ctx.isa),
        ..Default::default()
    };
    let call = |out: &mut [f32]| -> flashcpu::Result<()> {
        attention(
            View4::bhld(&q, [batch, heads, q_len, d])?,
            View4::bhld(&k, [batch, kv_heads, kv_len, d])?,
            View4::bhld(&v, [batch, kv_heads, kv_len, d])?,
            View4Mut::bhld(out, [batch, heads, q_len, d])?,
            &params,
        )
    };
    call(&mut out)?;
    let median_s = median_seconds(|| call(&mut out).expect("validated above"));
    let max_err = sampled_error(shape, &q, &k, &v, &out)?;
    report(ctx, "attention", shape, median_s, max_err)?;
    if naive {
        let mut naive_out = zeros("the naive output", &[batch, heads, q_len, d])?;
        let mut scores = zeros("the naive score matrix", &[q_len, kv_len])?;
        let qkv = (&q[..], &k[..], &v[..]);
        let median_s = median_seconds(|| {
            naive_attention(ctx, shape, qkv, &mut scores, &mut naive_out).expect("shapes valid")
        });
        let max_err = sampled_error(shape, &q, &k, &v, &naive_out)?;
        report(ctx, "attention-naive", shape, median_s, max_err)?;
    }
    Ok(())
}

fn report(ctx: &Ctx, op: &str, shape: Shape, median_s: f64, max_err: f64) -> CmdResult {
    emit_rate(ctx, op, &shape.label(), median_s, shape.kept_flops(), &[("max_abs_err", max_err)])
}

/// Max |out − reference| over a few rows of the first and last head, each checked as a one-row
/// problem over exactly the keys it sees (so the reference costs O(kv_len·d) per row).
fn sampled_error(shape: Shape, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) -> flashcpu::Result<f64> {
    let Shape { batch, heads, kv_heads, q_len, kv_len, head_dim: d, .. } = shape;
    let mut max_err = 0.0f64;
    for (b, h) in [(0, 0), (batch - 1, heads - 1)] {
        let kvh = h / (heads / kv_heads);
        for i in (0..q_len).step_by(q_len.div_ceil(CHECKED_ROWS).max(1)) {
            let keys = shape.visible_keys(i);
            let q_row = &q[((b * heads + h) * q_len + i) * d..][..d];
            let k_head = &k[(b * kv_heads + kvh) * kv_len * d..][..keys * d];
            let v_head = &v[(b * kv_heads + kvh) * kv_len * d..][..keys * d];
            let want = reference::attention_f64(
                View4::bhld(q_row, [1, 1, 1, d])?,
                View4::bhld(k_head, [1, 1, keys, d])?,
                View4::bhld(v_head, [1, 1, keys, d])?,
                &AttentionParams::default(),
            );
            let got = &out[((b * heads + h) * q_len + i) * d..][..d];
            for (g, w) in got.iter().zip(&want.out) {
                max_err = max_err.max((f64::from(*g) - w).abs());
            }
        }
    }
    Ok(max_err)
}

/// The textbook path on our matmul: S = Q·Kᵀ·scale (materialised in `s`, q_len × kv_len per
/// head), a row softmax, then O = P·V.
fn naive_attention(
    ctx: &Ctx,
    shape: Shape,
    (q, k, v): (&[f32], &[f32], &[f32]),
    s: &mut [f32],
    out: &mut [f32],
) -> flashcpu::Result<()> {
    let Shape { batch, heads, kv_heads, q_len, kv_len, head_dim: d, .. } = shape;
    let opts = MatmulOptions { isa: Some(ctx.isa), ..Default::default() };
    let scale = 1.0 / (d as f32).sqrt();
    for b in 0..batch {
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let q_head = &q[(b * heads + h) * q_len * d..][..q_len * d];
            let k_head = &k[(b * kv_heads + kvh) * kv_len * d..][..kv_len * d];
            let v_head = &v[(b * kv_heads + kvh) * kv_len * d..][..kv_len * d];
            let q_mat = MatRef::row_major(q_head, q_len, d)?;
            let k_t = MatRef::row_major(k_head, kv_len, d)?.t();
            matmul_with(&opts, scale, q_mat, k_t, 0.0, MatMut::row_major(s, q_len, kv_len)?)?;
            for (i, row) in s.chunks_exact_mut(kv_len).enumerate() {
                let keys = shape.visible_keys(i);
                row[keys..].fill(f32::NEG_INFINITY);
                let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                row.iter_mut().for_each(|x| *x /= sum);
            }
            let o = &mut out[(b * heads + h) * q_len * d..][..q_len * d];
            matmul_with(
                &opts,
                1.0,
                MatRef::row_major(s, q_len, kv_len)?,
                MatRef::row_major(v_head, kv_len, d)?,
                0.0,
                MatMut::row_major(o, q_len, d)?,
            )?;
        }
    }
    Ok(())
}
