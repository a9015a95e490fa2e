//! Multi-head attention as in *Attention Is All You Need* (Vaswani et al., 2017):
//! `MHA(X_q, X_kv) = Concat(head₁, …, head_h)·W_O`, `headᵢ = Attention(X_q·W_Qᵢ, X_kv·W_Kᵢ, X_kv·W_Vᵢ)`,
//! with grouped-query attention (several query heads share one K/V head), optional biases and
//! rotary position embedding, and incremental decoding through a [`KvCache`].
//!
//! Every projection runs on flashcpu's matmul; self-attention projects Q, K and V in one product
//! over the concatenated weights `[W_Q | W_K | W_V]`. The attention reads Q straight out of that
//! product through strides, and K and V from a head-major copy (see [`gather_kv`]). Scratch is
//! owned by the layer and reused.

use crate::attention::{AttentionParams, attention};
use crate::error::{Error, Result};
use crate::kvcache::KvCache;
use crate::matmul::{MatmulOptions, matmul_with};
use crate::rope::Rope;
use crate::view::{MatMut, MatRef, View4, View4Mut};

/// Dimensions and options of a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MhaConfig {
    /// Model width (input and output features).
    pub d_model: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`; fewer is grouped-query attention).
    pub kv_heads: usize,
    /// Query/key dimension per head.
    pub head_dim: usize,
    /// Value dimension per head.
    pub value_dim: usize,
    /// Rotary embedding of Q and K, if any.
    pub rope: Option<Rope>,
}

impl MhaConfig {
    /// Columns of the fused projection: `heads·head_dim + kv_heads·(head_dim + value_dim)`.
    pub fn qkv_width(&self) -> usize {
        self.heads * self.head_dim + self.kv_heads * (self.head_dim + self.value_dim)
    }
    pub(crate) fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    pub(crate) fn k_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    pub(crate) fn attn_width(&self) -> usize {
        self.heads * self.value_dim
    }
    /// Flops of one forward over `tokens` query tokens and `kv_tokens` key tokens per sequence
    /// (`batch` sequences): the four projections plus the attention work the mask keeps
    /// (`kept_pairs` visible (query, key) pairs per head and sequence).
    pub fn forward_flops(&self, batch: usize, tokens: usize, kv_tokens: usize, kept_pairs: usize) -> f64 {
        let proj = 2.0
            * self.d_model as f64
            * (batch * tokens * (self.q_width() + self.attn_width())
                + batch * kv_tokens * self.kv_heads * (self.head_dim + self.value_dim)) as f64;
        let attn = 2.0 * (batch * self.heads * kept_pairs * (self.head_dim + self.value_dim)) as f64;
        proj + attn
    }

    fn validate(&self) -> Result<()> {
        let c = self;
        if c.d_model == 0 || c.heads == 0 || c.kv_heads == 0 || c.head_dim == 0 || c.value_dim == 0 {
            return Err(Error::InvalidParameter(format!("every dimension must be positive: {c:?}")));
        }
        if !c.heads.is_multiple_of(c.kv_heads) {
            return Err(Error::ShapeMismatch(format!(
                "{} heads are not a multiple of {} KV heads",
                c.heads, c.kv_heads
            )));
        }
        if let Some(rope) = c.rope {
            rope.validate(c.head_dim)?;
        }
        Ok(())
    }
}

/// Weights of a layer, row-major, applied as `x·W` (x a row of `d_model` features).
#[derive(Clone, Debug, Default)]
pub struct MhaWeights {
    /// `d_model × heads·head_dim`.
    pub w_q: Vec<f32>,
    /// `d_model × kv_heads·head_dim`.
    pub w_k: Vec<f32>,
    /// `d_model × kv_heads·value_dim`.
    pub w_v: Vec<f32>,
    /// `heads·value_dim × d_model`.
    pub w_o: Vec<f32>,
    /// Optional biases of the four projections (lengths: their output widths).
    pub b_q: Option<Vec<f32>>,
    /// See `b_q`.
    pub b_k: Option<Vec<f32>>,
    /// See `b_q`.
    pub b_v: Option<Vec<f32>>,
    /// See `b_q`.
    pub b_o: Option<Vec<f32>>,
}

impl MhaWeights {
    /// Seeded pseudo-random weights (uniform, scaled by 1/√fan_in), no biases, for demos,
    /// benchmarks and tests. The same seed gives the same weights.
    pub fn random(cfg: &MhaConfig, seed: u64) -> MhaWeights {
        let mut state = seed;
        let mut fill = |n: usize, fan_in: usize| -> Vec<f32> {
            let scale = 1.0 / (fan_in.max(1) as f32).sqrt();
            (0..n).map(|_| scale * next_uniform(&mut state)).collect()
        };
        let (dm, ow) = (cfg.d_model, cfg.attn_width());
        MhaWeights {
            w_q: fill(dm * cfg.q_width(), dm),
            w_k: fill(dm * cfg.k_width(), dm),
            w_v: fill(dm * cfg.kv_heads * cfg.value_dim, dm),
            w_o: fill(ow * dm, ow),
            ..Default::default()
        }
    }
}

/// A multi-head attention layer. See the module documentation.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    cfg: MhaConfig,
    /// `[W_Q | W_K | W_V]`, `d_model × qkv_width`.
    w_qkv: Vec<f32>,
    /// Bias of the fused projection (zeros where a part has none), if any part has one.
    b_qkv: Option<Vec<f32>>,
    w_o: Vec<f32>,
    b_o: Option<Vec<f32>>,
    opts: MatmulOptions,
    /// Reused scratch: the fused projection's output and the concatenated heads.
    qkv: Vec<f32>,
    kv: Vec<f32>,
    /// K and V of the current call, head-major (see [`gather_kv`]).
    heads_kv: Vec<f32>,
    heads_out: Vec<f32>,
    rope_table: Vec<f32>,
}

fn check_len(name: &str, v: &[f32], want: usize) -> Result<()> {
    if v.len() == want {
        Ok(())
    } else {
        Err(Error::ShapeMismatch(format!("{name} has {} values, expected {want}", v.len())))
    }
}

impl MultiHeadAttention {
    /// A layer over the caller's weights (checked against `cfg`).
    pub fn new(cfg: MhaConfig, w: MhaWeights) -> Result<Self> {
        cfg.validate()?;
        let (dm, qw, kw, vw, ow) =
            (cfg.d_model, cfg.q_width(), cfg.k_width(), cfg.kv_heads * cfg.value_dim, cfg.attn_width());
        check_len("w_q", &w.w_q, dm * qw)?;
        check_len("w_k", &w.w_k, dm * kw)?;
        check_len("w_v", &w.w_v, dm * vw)?;
        check_len("w_o", &w.w_o, ow * dm)?;
        for (name, b, want) in
            [("b_q", &w.b_q, qw), ("b_k", &w.b_k, kw), ("b_v", &w.b_v, vw), ("b_o", &w.b_o, dm)]
        {
            if let Some(b) = b {
                check_len(name, b, want)?;
            }
        }
        let width = cfg.qkv_width();
        let mut w_qkv = Vec::with_capacity(dm * width);
        for r in 0..dm {
            w_qkv.extend_from_slice(&w.w_q[r * qw..][..qw]);
            w_qkv.extend_from_slice(&w.w_k[r * kw..][..kw]);
            w_qkv.extend_from_slice(&w.w_v[r * vw..][..vw]);
        }
        let any_bias = w.b_q.is_some() || w.b_k.is_some() || w.b_v.is_some();
        let b_qkv = any_bias.then(|| {
            let part = |b: &Option<Vec<f32>>, n: usize| b.clone().unwrap_or_else(|| vec![0.0; n]);
            [part(&w.b_q, qw), part(&w.b_k, kw), part(&w.b_v, vw)].concat()
        });
        Ok(MultiHeadAttention {
            cfg,
            w_qkv,
            b_qkv,
            w_o: w.w_o,
            b_o: w.b_o,
            opts: MatmulOptions::default(),
            qkv: Vec::new(),
            kv: Vec::new(),
            heads_kv: Vec::new(),
            heads_out: Vec::new(),
            rope_table: Vec::new(),
        })
    }

    /// A layer with [`MhaWeights::random`] weights.
    pub fn random(cfg: MhaConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Self::new(cfg, MhaWeights::random(&cfg, seed))
    }

    /// The configuration.
    pub fn config(&self) -> &MhaConfig {
        &self.cfg
    }

    /// Sets the ISA and threading of the layer's matmuls and attention.
    pub fn set_options(&mut self, opts: MatmulOptions) {
        self.opts = opts;
    }

    /// Self-attention over `x` (`[batch, seq, d_model]` row-major) into `out` (same shape).
    /// `params` carries the masks (e.g. causal); its `isa` and `parallelism` are taken from the
    /// layer's options. Positions for RoPE are `0..seq`.
    pub fn forward(
        &mut self,
        x: &[f32],
        batch: usize,
        seq: usize,
        out: &mut [f32],
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let tokens = self.check_tokens(x, batch, seq, out)?;
        if tokens == 0 {
            return Ok(());
        }
        let width = c.qkv_width();
        let qkv = self.fused_qkv(x, (batch, seq), |_| 0)?;
        let (k0, v0) = (c.q_width(), c.q_width() + c.k_width());
        let (q, _, _) = qkv_views(&c, &qkv, batch, seq, seq, width, (0, k0, v0))?;
        let mut heads_kv = std::mem::take(&mut self.heads_kv);
        let (k, v) = gather_kv(&c, &qkv, (batch, seq, width), (k0, v0), &mut heads_kv)?;
        let result = self.attend_and_project(q, k, v, batch, seq, out, params);
        (self.qkv, self.heads_kv) = (qkv, heads_kv);
        result
    }

    /// Cross-attention: queries from `x_q` (`[batch, q_seq, d_model]`), keys and values from
    /// `x_kv` (`[batch, kv_seq, d_model]`). K and V are projected in one product over
    /// `[W_K | W_V]`. RoPE, if configured, uses positions `0..q_seq` and `0..kv_seq`.
    #[allow(clippy::too_many_arguments)] // two token sequences with their lengths, the output, masks
    pub fn forward_cross(
        &mut self,
        x_q: &[f32],
        x_kv: &[f32],
        batch: usize,
        q_seq: usize,
        kv_seq: usize,
        out: &mut [f32],
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let q_tokens = self.check_tokens(x_q, batch, q_seq, out)?;
        if q_tokens == 0 {
            return Ok(());
        }
        let kv_tokens = batch * kv_seq;
        check_len("x_kv", x_kv, kv_tokens * c.d_model)?;
        let (qw, kvw) = (c.q_width(), c.qkv_width() - c.q_width());
        self.qkv.resize(q_tokens * qw, 0.0);
        self.kv.resize(kv_tokens * kvw, 0.0);
        self.project(x_q, q_tokens, 0, qw, Part::Q)?;
        self.project(x_kv, kv_tokens, qw, kvw, Part::Kv)?;
        let (mut q_buf, mut kv_buf) = (std::mem::take(&mut self.qkv), std::mem::take(&mut self.kv));
        self.rope_in_place(&mut q_buf, (batch, q_seq, qw), c.heads, None, |_| 0);
        self.rope_in_place(&mut kv_buf, (batch, kv_seq, kvw), 0, Some(0), |_| 0);
        let q = View4::new(&q_buf, [batch, c.heads, q_seq, c.head_dim], [q_seq * qw, c.head_dim, qw, 1])?;
        let mut heads_kv = std::mem::take(&mut self.heads_kv);
        let (k, v) = gather_kv(&c, &kv_buf, (batch, kv_seq, kvw), (0, c.k_width()), &mut heads_kv)?;
        let result = self.attend_and_project(q, k, v, batch, q_seq, out, params);
        (self.qkv, self.kv, self.heads_kv) = (q_buf, kv_buf, heads_kv);
        result
    }

    /// One incremental-decoding step: projects the `n` new tokens of every sequence
    /// (`x`: `[batch, n, d_model]`), rotates them at positions `cache.len(b)..`, appends their K
    /// and V to `cache`, and attends the new queries over the cache (bottom-right causal unless
    /// `params` says otherwise). On `Err` the cache is unchanged.
    pub fn step(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        cache: &mut KvCache,
        out: &mut [f32],
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let cc = *cache.config();
        if cc.batch != batch
            || cc.kv_heads != c.kv_heads
            || cc.head_dim != c.head_dim
            || cc.value_dim != c.value_dim
        {
            return Err(Error::ShapeMismatch(format!(
                "cache {cc:?} does not fit layer {c:?} with batch {batch}"
            )));
        }
        let tokens = self.check_tokens(x, batch, n, out)?;
        if tokens == 0 {
            return Ok(());
        }
        let starts: Vec<usize> = (0..batch).map(|b| cache.len(b)).collect();
        let qkv = self.fused_qkv(x, (batch, n), |b| starts[b])?;
        let result = self.append_and_attend(&qkv, (batch, n), &starts, cache, out, params);
        self.qkv = qkv;
        result
    }

    /// The cache half of [`Self::step`]: append the new K/V, attend, project; undo the append if
    /// the attention refuses.
    fn append_and_attend(
        &mut self,
        qkv: &[f32],
        (batch, n): (usize, usize),
        starts: &[usize],
        cache: &mut KvCache,
        out: &mut [f32],
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let width = c.qkv_width();
        let (q, k, v) = qkv_views(&c, qkv, batch, n, n, width, (0, c.q_width(), c.q_width() + c.k_width()))?;
        cache.append_all(k, v)?;
        let mut p = *params;
        p.causal = p.causal.or(Some(crate::CausalAlign::BottomRight));
        p.isa = self.opts.isa;
        p.parallelism = self.opts.parallelism;
        self.heads_out.resize(batch * n * c.attn_width(), 0.0);
        let attn_out = View4Mut::blhd(&mut self.heads_out, [batch, c.heads, n, c.value_dim])?;
        if let Err(e) = cache.attend(q, attn_out, None, &p) {
            for (b, &len) in starts.iter().enumerate() {
                cache.truncate(b, len).expect("rolling back what was just appended");
            }
            return Err(e);
        }
        self.output_projection(batch * n, out)
    }

    fn check_tokens(&self, x: &[f32], batch: usize, seq: usize, out: &[f32]) -> Result<usize> {
        let tokens =
            batch.checked_mul(seq).ok_or_else(|| Error::ShapeMismatch("batch·seq overflows".into()))?;
        check_len("x", x, tokens * self.cfg.d_model)?;
        check_len("out", out, tokens * self.cfg.d_model)?;
        Ok(tokens)
    }

    /// The fused projection `x·[W_Q | W_K | W_V]` with RoPE applied to Q and K (token t of
    /// sequence b at position `start(b) + t`), taken out of the layer's scratch; the caller puts it
    /// back into `self.qkv` when done so the allocation is reused.
    fn fused_qkv(
        &mut self,
        x: &[f32],
        (batch, seq): (usize, usize),
        start: impl Fn(usize) -> usize,
    ) -> Result<Vec<f32>> {
        let c = self.cfg;
        let width = c.qkv_width();
        self.qkv.resize(batch * seq * width, 0.0);
        self.project(x, batch * seq, 0, width, Part::Fused)?;
        let mut qkv = std::mem::take(&mut self.qkv);
        self.rope_in_place(&mut qkv, (batch, seq, width), c.heads, Some(c.q_width()), start);
        Ok(qkv)
    }

    /// `dst[.., ..width] = x · W[:, col0..col0 + width] (+ bias)` into the scratch of `part`.
    fn project(&mut self, x: &[f32], tokens: usize, col0: usize, width: usize, part: Part) -> Result<()> {
        let c = self.cfg;
        let full = c.qkv_width();
        let w = MatRef::new(&self.w_qkv[col0..], c.d_model, width, full, 1)?;
        let dst = match part {
            Part::Fused | Part::Q => &mut self.qkv,
            Part::Kv => &mut self.kv,
        };
        matmul_with(
            &self.opts,
            1.0,
            MatRef::row_major(x, tokens, c.d_model)?,
            w,
            0.0,
            MatMut::row_major(dst, tokens, width)?,
        )?;
        if let Some(b) = &self.b_qkv {
            for row in dst.chunks_exact_mut(width) {
                row.iter_mut().zip(&b[col0..col0 + width]).for_each(|(x, b)| *x += b);
            }
        }
        Ok(())
    }

    /// RoPE on a `[tokens, width]` projection buffer: the first `q_heads` heads of each row
    /// (queries, at offset 0) and, if `k_offset` is given, the `kv_heads` key heads there; token t
    /// of sequence b sits at position `start(b) + t`.
    #[allow(clippy::too_many_arguments)] // buffer geometry and the head groups to rotate
    fn rope_in_place(
        &mut self,
        buf: &mut [f32],
        (batch, seq, width): (usize, usize, usize),
        q_heads: usize,
        k_offset: Option<usize>,
        start: impl Fn(usize) -> usize,
    ) {
        let c = self.cfg;
        let Some(rope) = c.rope else { return };
        let half = c.head_dim / 2;
        self.rope_table.resize(2 * half, 0.0);
        let (cos, sin) = self.rope_table.split_at_mut(half);
        let k_heads = k_offset.map_or(0, |_| c.kv_heads);
        let k0 = k_offset.unwrap_or(0);
        let heads = (0..q_heads).map(|h| h * c.head_dim).chain((0..k_heads).map(|h| k0 + h * c.head_dim));
        for b in 0..batch {
            for t in 0..seq {
                rope.angles(start(b) + t, cos, sin);
                let row = &mut buf[(b * seq + t) * width..][..width];
                for at in heads.clone() {
                    rope.rotate(&mut row[at..][..c.head_dim], cos, sin);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attend_and_project(
        &mut self,
        q: View4<'_>,
        k: View4<'_>,
        v: View4<'_>,
        batch: usize,
        q_seq: usize,
        out: &mut [f32],
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let tokens = batch * q_seq;
        self.heads_out.resize(tokens * c.attn_width(), 0.0);
        let mut p = *params;
        p.isa = self.opts.isa;
        p.parallelism = self.opts.parallelism;
        attention(q, k, v, View4Mut::blhd(&mut self.heads_out, [batch, c.heads, q_seq, c.value_dim])?, &p)?;
        self.output_projection(tokens, out)
    }

    /// `out = Concat(heads)·W_O (+ b_O)`.
    fn output_projection(&mut self, tokens: usize, out: &mut [f32]) -> Result<()> {
        let c = self.cfg;
        let aw = c.attn_width();
        matmul_with(
            &self.opts,
            1.0,
            MatRef::row_major(&self.heads_out, tokens, aw)?,
            MatRef::row_major(&self.w_o, aw, c.d_model)?,
            0.0,
            MatMut::row_major(out, tokens, c.d_model)?,
        )?;
        if let Some(b) = &self.b_o {
            for row in out.chunks_exact_mut(c.d_model) {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
        }
        Ok(())
    }
}

/// Which scratch a projection writes.
#[derive(Clone, Copy)]
enum Part {
    Fused,
    Q,
    Kv,
}

/// Q, K and V as 4-D views into a `[tokens, width]` projection buffer whose columns hold the
/// heads at offsets `(q0, k0, v0)`: no copies, the attention reads through strides.
#[allow(clippy::too_many_arguments)]
fn qkv_views<'a>(
    c: &MhaConfig,
    buf: &'a [f32],
    batch: usize,
    q_seq: usize,
    kv_seq: usize,
    width: usize,
    (q0, k0, v0): (usize, usize, usize),
) -> Result<(View4<'a>, View4<'a>, View4<'a>)> {
    // An empty buffer (no tokens) has no columns to offset into; its views are empty anyway.
    let at = |off: usize| buf.get(off..).unwrap_or(&[]);
    let q = View4::new(at(q0), [batch, c.heads, q_seq, c.head_dim], [q_seq * width, c.head_dim, width, 1])?;
    let k =
        View4::new(at(k0), [batch, c.kv_heads, kv_seq, c.head_dim], [kv_seq * width, c.head_dim, width, 1])?;
    let v = View4::new(
        at(v0),
        [batch, c.kv_heads, kv_seq, c.value_dim],
        [kv_seq * width, c.value_dim, width, 1],
    )?;
    Ok((q, k, v))
}

/// Copies the K and V heads out of a `[batch·seq, width]` projection buffer (at column offsets
/// `k0` and `v0`) into `dst`, head-major (`[batch, kv_heads, seq, dim]` each), and returns views
/// of the copies.
///
/// Why copy: in the projection buffer a head's consecutive rows lie `width` floats apart (24 KiB
/// for d_model 4096 with 32/8 heads), a multiple of 4 KiB, so every row of a K/V tile falls in the
/// same L1 set and on a new page. Dense tiles made the 1-thread layer prefill (d_model 4096,
/// 32/8 heads, seq 2048) 4–6 % faster; the copy itself is a few milliseconds of a 2.4 s layer.
fn gather_kv<'a>(
    c: &MhaConfig,
    buf: &[f32],
    (batch, seq, width): (usize, usize, usize),
    (k0, v0): (usize, usize),
    dst: &'a mut Vec<f32>,
) -> Result<(View4<'a>, View4<'a>)> {
    dst.clear();
    for (col0, dim) in [(k0, c.head_dim), (v0, c.value_dim)] {
        for b in 0..batch {
            for h in 0..c.kv_heads {
                for i in 0..seq {
                    dst.extend_from_slice(&buf[(b * seq + i) * width + col0 + h * dim..][..dim]);
                }
            }
        }
    }
    let (k, v) = dst.split_at(batch * c.kv_heads * seq * c.head_dim);
    Ok((
        View4::bhld(k, [batch, c.kv_heads, seq, c.head_dim])?,
        View4::bhld(v, [batch, c.kv_heads, seq, c.value_dim])?,
    ))
}

/// splitmix64 → uniform in [−1, 1).
fn next_uniform(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[cfg(test)]
#[path = "mha_tests.rs"]
mod tests;
