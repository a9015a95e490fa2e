//! Multi-head attention as in *Attention Is All You Need* (Vaswani et al., 2017):
//! `MHA(X_q, X_kv) = Concat(head₁, …, head_h)·W_O`, `headᵢ = Attention(X_q·W_Qᵢ, X_kv·W_Kᵢ, X_kv·W_Vᵢ)`,
//! with grouped-query attention (several query heads share one K/V head), optional biases and
//! rotary position embedding, and incremental decoding through a [`KvCache`].
//!
//! Every projection runs on flashcpu's matmul; self-attention projects Q, K and V in one product
//! over the concatenated weights `[W_Q | W_K | W_V]`. The attention reads Q straight out of that
//! products through strides (prefill copies K and V head-major first, see [`attention`]). Scratch
//! is owned by the layer and reused. Each call's [`AttentionParams`] choose the ISA and threads of
//! the whole call, projections included.

use crate::attention::{AttentionParams, CausalAlign, attention};
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
    /// Columns of the fused projection: `heads·head_dim + kv_heads·(head_dim + value_dim)`
    /// (`usize::MAX` where that overflows: no layer accepts such a configuration).
    pub fn qkv_width(&self) -> usize {
        self.checked_qkv_width().unwrap_or(usize::MAX)
    }
    fn checked_qkv_width(&self) -> Option<usize> {
        let kv = self.kv_heads.checked_mul(self.head_dim.checked_add(self.value_dim)?)?;
        self.heads.checked_mul(self.head_dim)?.checked_add(kv)
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
        let f = |x: usize| x as f64;
        let (head, kv_head) = (f(self.head_dim), f(self.head_dim) + f(self.value_dim));
        let q_and_out = f(self.heads) * (head + f(self.value_dim));
        let proj = 2.0
            * f(self.d_model)
            * f(batch)
            * (f(tokens) * q_and_out + f(kv_tokens) * f(self.kv_heads) * kv_head);
        let attn = 2.0 * f(batch) * f(self.heads) * f(kept_pairs) * kv_head;
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
        // Every width and weight size below is then computed without overflow.
        let sizes = c
            .checked_qkv_width()
            .and_then(|w| c.d_model.checked_mul(w))
            .zip(c.heads.checked_mul(c.value_dim).and_then(|ow| ow.checked_mul(c.d_model)));
        if sizes.is_none() {
            return Err(Error::InvalidParameter(format!("the layer's weights overflow usize: {c:?}")));
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
    /// benchmarks and tests. The same seed gives the same weights. `Err` for a configuration no
    /// layer accepts, or weights that cannot be allocated.
    pub fn random(cfg: &MhaConfig, seed: u64) -> Result<MhaWeights> {
        cfg.validate()?;
        let mut state = seed;
        let mut fill = |rows: usize, cols: usize| -> Result<Vec<f32>> {
            let scale = 1.0 / (rows as f32).sqrt();
            let mut w = Vec::new();
            scratch(&mut w, rows, cols)?;
            w.iter_mut().for_each(|x| *x = scale * next_uniform(&mut state));
            Ok(w)
        };
        let (dm, ow) = (cfg.d_model, cfg.attn_width());
        Ok(MhaWeights {
            w_q: fill(dm, cfg.q_width())?,
            w_k: fill(dm, cfg.k_width())?,
            w_v: fill(dm, cfg.kv_heads * cfg.value_dim)?,
            w_o: fill(ow, dm)?,
            ..Default::default()
        })
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
    /// Reused scratch: the fused projection's output and the concatenated heads.
    qkv: Vec<f32>,
    kv: Vec<f32>,
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
            qkv: Vec::new(),
            kv: Vec::new(),
            heads_out: Vec::new(),
            rope_table: Vec::new(),
        })
    }

    /// A layer with [`MhaWeights::random`] weights.
    pub fn random(cfg: MhaConfig, seed: u64) -> Result<Self> {
        Self::new(cfg, MhaWeights::random(&cfg, seed)?)
    }

    /// The configuration.
    pub fn config(&self) -> &MhaConfig {
        &self.cfg
    }

    /// Self-attention over `x` (`[batch, seq, d_model]` row-major) into `out` (same shape).
    /// `params` carries the masks (e.g. causal), and its `isa` and `parallelism` run the
    /// projections as well as the attention. Positions for RoPE are `0..seq`. On `Err`, `out` is
    /// untouched.
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
        let qkv = self.fused_qkv(x, (batch, seq), |_| 0, params)?;
        let (k0, v0) = (c.q_width(), c.q_width() + c.k_width());
        let (q, k, v) = qkv_views(&c, &qkv, batch, seq, seq, width, (0, k0, v0))?;
        let result = self.attend_and_project(q, k, v, batch, seq, out, params);
        self.qkv = qkv;
        result
    }

    /// Cross-attention: queries from `x_q` (`[batch, q_seq, d_model]`), keys and values from
    /// `x_kv` (`[batch, kv_seq, d_model]`). K and V are projected in one product over
    /// `[W_K | W_V]`. RoPE, if configured, uses positions `0..q_seq` and `0..kv_seq`. `params` as
    /// for [`Self::forward`]; on `Err`, `out` is untouched.
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
        let kv_tokens = elements(batch, kv_seq)?;
        check_len("x_kv", x_kv, elements(kv_tokens, c.d_model)?)?;
        let (qw, kvw) = (c.q_width(), c.qkv_width() - c.q_width());
        scratch(&mut self.qkv, q_tokens, qw)?;
        scratch(&mut self.kv, kv_tokens, kvw)?;
        self.project(x_q, q_tokens, (0, qw), Part::Q, params)?;
        self.project(x_kv, kv_tokens, (qw, kvw), Part::Kv, params)?;
        let (mut q_buf, mut kv_buf) = (std::mem::take(&mut self.qkv), std::mem::take(&mut self.kv));
        self.rope_in_place(&mut q_buf, (batch, q_seq, qw), c.heads, None, |_| 0);
        self.rope_in_place(&mut kv_buf, (batch, kv_seq, kvw), 0, Some(0), |_| 0);
        let q = View4::new(&q_buf, [batch, c.heads, q_seq, c.head_dim], [q_seq * qw, c.head_dim, qw, 1])?;
        // K and V only: the Q view asked for here has no rows.
        let (_, k, v) = qkv_views(&c, &kv_buf, batch, 0, kv_seq, kvw, (0, 0, c.k_width()))?;
        let result = self.attend_and_project(q, k, v, batch, q_seq, out, params);
        (self.qkv, self.kv) = (q_buf, kv_buf);
        result
    }

    /// One incremental-decoding step: projects the `n` new tokens of every sequence
    /// (`x`: `[batch, n, d_model]`), rotates them at positions `cache.len(b)..`, appends their K
    /// and V to `cache`, and attends the new queries over the cache (bottom-right causal unless
    /// `params` says otherwise), as [`KvCache::append_and_attend`]: a bias or mask has the key
    /// columns of the cache after the append, and `params.key_lengths` must be `None`. `params`
    /// chooses the ISA and threads as for [`Self::forward`]. On `Err` the cache and `out` are
    /// unchanged.
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
        let starts = (0..batch).map(|b| cache.len(b)).collect::<Result<Vec<usize>>>()?;
        let qkv = self.fused_qkv(x, (batch, n), |b| starts[b], params)?;
        let result = self.append_and_attend(&qkv, (batch, n), cache, params);
        self.qkv = qkv;
        result?;
        // The same matmul checks as the fused projection's, which passed: this cannot fail.
        self.output_projection(batch * n, out, params)
    }

    /// The cache half of [`Self::step`]: one [`KvCache::append_and_attend`] into `heads_out`.
    fn append_and_attend(
        &mut self,
        qkv: &[f32],
        (batch, n): (usize, usize),
        cache: &mut KvCache,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let width = c.qkv_width();
        let (q, k, v) = qkv_views(&c, qkv, batch, n, n, width, (0, c.q_width(), c.q_width() + c.k_width()))?;
        let p = AttentionParams { causal: params.causal.or(Some(CausalAlign::BottomRight)), ..*params };
        scratch(&mut self.heads_out, batch * n, c.attn_width())?;
        let attn_out = token_major(&mut self.heads_out, [batch, c.heads, n, c.value_dim])?;
        cache.append_and_attend((k, v), q, attn_out, None, &p)
    }

    fn check_tokens(&self, x: &[f32], batch: usize, seq: usize, out: &[f32]) -> Result<usize> {
        let tokens = elements(batch, seq)?;
        let len = elements(tokens, self.cfg.d_model)?;
        check_len("x", x, len)?;
        check_len("out", out, len)?;
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
        params: &AttentionParams<'_>,
    ) -> Result<Vec<f32>> {
        let c = self.cfg;
        let width = c.qkv_width();
        scratch(&mut self.qkv, batch * seq, width)?;
        self.project(x, batch * seq, (0, width), Part::Fused, params)?;
        let mut qkv = std::mem::take(&mut self.qkv);
        self.rope_in_place(&mut qkv, (batch, seq, width), c.heads, Some(c.q_width()), start);
        Ok(qkv)
    }

    /// `dst[.., ..width] = x · W[:, col0..col0 + width] (+ bias)` into the scratch of `part`.
    fn project(
        &mut self,
        x: &[f32],
        tokens: usize,
        (col0, width): (usize, usize),
        part: Part,
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let full = c.qkv_width();
        let w = MatRef::new(&self.w_qkv[col0..], c.d_model, width, full, 1)?;
        let dst = match part {
            Part::Fused | Part::Q => &mut self.qkv,
            Part::Kv => &mut self.kv,
        };
        matmul_with(
            &matmul_options(params),
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
        scratch(&mut self.heads_out, tokens, c.attn_width())?;
        attention(q, k, v, token_major(&mut self.heads_out, [batch, c.heads, q_seq, c.value_dim])?, params)?;
        self.output_projection(tokens, out, params)
    }

    /// `out = Concat(heads)·W_O (+ b_O)`.
    fn output_projection(
        &mut self,
        tokens: usize,
        out: &mut [f32],
        params: &AttentionParams<'_>,
    ) -> Result<()> {
        let c = self.cfg;
        let aw = c.attn_width();
        matmul_with(
            &matmul_options(params),
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

/// `rows·cols`, or `Err` where it overflows.
fn elements(rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| Error::ShapeMismatch(format!("{rows}·{cols} overflows usize")))
}

/// Resizes `buf` to `rows × cols` floats: `Err`, never an abort, where that overflows or cannot be
/// allocated.
fn scratch(buf: &mut Vec<f32>, rows: usize, cols: usize) -> Result<()> {
    let len = elements(rows, cols)?;
    buf.try_reserve(len.saturating_sub(buf.len()))
        .map_err(|e| Error::InvalidParameter(format!("cannot allocate {rows}×{cols} floats: {e}")))?;
    buf.resize(len, 0.0);
    Ok(())
}

/// The projections run on the ISA and threads the attention does.
fn matmul_options(params: &AttentionParams<'_>) -> MatmulOptions {
    MatmulOptions { isa: params.isa, parallelism: params.parallelism }
}

/// The heads' outputs `[batch, heads, len, dim]` in token-major memory `[batch, len, heads, dim]`,
/// the layout the output projection reads as rows of `heads·dim`.
fn token_major(data: &mut [f32], [b, h, l, d]: [usize; 4]) -> Result<View4Mut<'_>> {
    View4Mut::new(data, [b, h, l, d], [l * h * d, d, h * d, 1])
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
