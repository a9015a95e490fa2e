//! `flashcpu::candle` against candle's own attention (matmul → softmax → matmul, as candle models
//! write it) computed in f64, on small shapes, with every option and with strided views.
//!
//! Tolerance: the op may be at most about twice as far from the f64 result as a naive f32 loop
//! ([`flashcpu::reference::attention_f32_naive`]), plus a floor of 1e-5.

use candle_core::{D, DType, Device, Tensor};
use flashcpu::candle::{KvCache, scaled_dot_product_attention};
use flashcpu::reference::attention_f32_naive;
use flashcpu::{AttentionParams, CausalAlign, KvCacheConfig, KvDtype, View4, Window};

type Result<T> = candle_core::Result<T>;

/// `[B, H, L, D]` sizes of one case.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    d: usize,
    dv: usize,
}

const GQA: Dims = Dims { batch: 2, heads: 4, kv_heads: 2, q_len: 5, kv_len: 9, d: 16, dv: 8 };

/// Normal f32 values of mean `mean`.
fn randn(shape: &[usize], mean: f32) -> Result<Tensor> {
    Tensor::randn(mean, 1.0, shape, &Device::Cpu)
}

/// Q, K and V as candle models hold them: Q and V are `[B, L, H, D]` projections seen through
/// `transpose(1, 2)`; K is a `narrow`ed window of a longer cache (a start offset, batch strides
/// that are not dense).
fn strided_inputs(n: Dims) -> Result<(Tensor, Tensor, Tensor)> {
    let q = randn(&[n.batch, n.q_len, n.heads, n.d], 0.0)?.transpose(1, 2)?;
    let k = randn(&[n.batch, n.kv_heads, n.kv_len + 3, n.d], 0.1)?.narrow(2, 2, n.kv_len)?;
    let v = randn(&[n.batch, n.kv_len, n.kv_heads, n.dv], -0.1)?.transpose(1, 2)?;
    assert!(!q.is_contiguous() && !k.is_contiguous() && !v.is_contiguous());
    Ok((q, k, v))
}

/// Dense f32 copy of a tensor, in `[B, H, L, D]` order.
fn dense_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// The options of one case, owning what [`AttentionParams`] borrows.
#[derive(Clone, Debug, Default)]
struct Options {
    scale: Option<f32>,
    causal: Option<CausalAlign>,
    window: Option<Window>,
    key_lengths: Option<Vec<usize>>,
    /// Dense `[1|B, 1|H, q_len, kv_len]` values and their shape.
    bias: Option<(Vec<f32>, [usize; 4])>,
    mask: Option<(Vec<bool>, [usize; 4])>,
    alibi_slopes: Option<Vec<f32>>,
    softcap: Option<f32>,
    sinks: Option<Vec<f32>>,
}

impl Options {
    fn params(&self) -> AttentionParams<'_> {
        AttentionParams {
            scale: self.scale,
            causal: self.causal,
            window: self.window,
            key_lengths: self.key_lengths.as_deref(),
            bias: self.bias.as_ref().map(|(x, s)| View4::bhld(x, *s).unwrap()),
            mask: self.mask.as_ref().map(|(x, s)| View4::bhld(x, *s).unwrap()),
            alibi_slopes: self.alibi_slopes.as_deref(),
            softcap: self.softcap,
            sinks: self.sinks.as_deref(),
            ..Default::default()
        }
    }
}

/// Element `(b, h, i, j)` of a dense `[1|B, 1|H, q_len, kv_len]` tensor.
fn broadcast_at<T: Copy>(
    (data, [tb, th, l, n]): &(Vec<T>, [usize; 4]),
    b: usize,
    h: usize,
    i: usize,
    j: usize,
) -> T {
    let (b, h) = (if *tb == 1 { 0 } else { b }, if *th == 1 { 0 } else { h });
    data[((b * th + h) * l + i) * n + j]
}

/// Attention by candle's own ops in f64: `repeat_kv`, `Q·Kᵀ·scale`, soft-cap, ALiBi and bias,
/// the masks as `−∞`, the sink as an extra softmax column, softmax, `·V`. The mask rules are
/// written out here as the definition states them.
fn candle_reference(q: &Tensor, k: &Tensor, v: &Tensor, o: &Options) -> Result<Tensor> {
    let (batch, heads, q_len, d) = q.dims4()?;
    let kv_len = k.dim(2)?;
    let repeat_kv = |t: &Tensor| -> Result<Tensor> {
        let (b, h, l, d) = t.dims4()?;
        let rep = heads / h;
        t.to_dtype(DType::F64)?.unsqueeze(2)?.expand((b, h, rep, l, d))?.reshape((b, h * rep, l, d))
    };
    let (k, v) = (repeat_kv(k)?, repeat_kv(v)?);
    let scale = f64::from(o.scale.unwrap_or(1.0 / (d as f32).sqrt()));
    let mut s = (q.to_dtype(DType::F64)?.matmul(&k.t()?)? * scale)?;
    if let Some(c) = o.softcap.map(f64::from) {
        s = ((s / c)?.tanh()? * c)?;
    }

    let (mut add, mut visible) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let key_len = o.key_lengths.as_ref().map_or(kv_len, |l| l[b]);
        let off = key_len as i64 - q_len as i64;
        for h in 0..heads {
            for i in 0..q_len {
                for j in 0..kv_len {
                    let (ii, jj) = (i as i64, j as i64);
                    let causal = match o.causal {
                        None => true,
                        Some(CausalAlign::TopLeft) => jj <= ii,
                        Some(CausalAlign::BottomRight) => jj <= ii + off,
                    };
                    let window = o.window.is_none_or(|w| {
                        w.left.is_none_or(|x| jj >= ii + off - x as i64)
                            && w.right.is_none_or(|x| jj <= ii + off + x as i64)
                    });
                    let mask = o.mask.as_ref().is_none_or(|m| broadcast_at(m, b, h, i, j));
                    visible.push(u8::from(j < key_len && causal && window && mask));
                    let alibi = o
                        .alibi_slopes
                        .as_ref()
                        .map_or(0.0, |s| -f64::from(s[h]) * (ii + off - jj).abs() as f64);
                    add.push(alibi + o.bias.as_ref().map_or(0.0, |t| f64::from(broadcast_at(t, b, h, i, j))));
                }
            }
        }
    }
    let shape = (batch, heads, q_len, kv_len);
    let add = Tensor::from_vec(add, shape, &Device::Cpu)?;
    let visible = Tensor::from_vec(visible, shape, &Device::Cpu)?;
    let hidden = Tensor::full(f64::NEG_INFINITY, shape, &Device::Cpu)?;
    s = visible.where_cond(&(s + add)?, &hidden)?;
    if let Some(sinks) = &o.sinks {
        let col: Vec<f64> =
            (0..batch * heads * q_len).map(|r| f64::from(sinks[(r / q_len) % heads])).collect();
        s = Tensor::cat(&[s, Tensor::from_vec(col, (batch, heads, q_len, 1), &Device::Cpu)?], 3)?;
    }
    // A row that sees nothing has max −∞: shift it by the least finite value instead, so that its
    // weights are 0 and its output is 0, as the contract says.
    let m = s.max_keepdim(D::Minus1)?.maximum(f64::MIN)?;
    let e = s.broadcast_sub(&m)?.exp()?;
    let l = e.sum_keepdim(D::Minus1)?.maximum(f64::MIN_POSITIVE)?;
    e.broadcast_div(&l)?.narrow(3, 0, kv_len)?.contiguous()?.matmul(&v)
}

/// Largest |a − b| over two tensors of one shape, in f64.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?.abs()?;
    d.flatten_all()?.max(0)?.to_scalar::<f64>()
}

/// Our op on `(q, k, v)` against candle's f64 attention, within twice a naive f32 loop's error.
fn check(q: &Tensor, k: &Tensor, v: &Tensor, o: &Options) -> Result<()> {
    let params = o.params();
    let ours = scaled_dot_product_attention(q, k, v, &params)?;
    let exact = candle_reference(q, k, v, o)?;
    assert_eq!(ours.dims(), exact.dims());
    assert_eq!(ours.dtype(), DType::F32);

    let (qd, kd, vd) = (dense_f32(q)?, dense_f32(k)?, dense_f32(v)?);
    let naive = attention_f32_naive(
        View4::bhld(&qd, q.dims4()?.into())?,
        View4::bhld(&kd, k.dims4()?.into())?,
        View4::bhld(&vd, v.dims4()?.into())?,
        &params,
    );
    let naive = Tensor::from_vec(naive.out, exact.shape().clone(), &Device::Cpu)?;
    let (err, naive_err) = (max_abs_diff(&ours, &exact)?, max_abs_diff(&naive, &exact)?);
    assert!(err <= 2.0 * naive_err + 1e-5, "error {err} against naive f32 {naive_err}; options {o:?}");
    Ok(())
}

/// One option at a time (and all of them at once), each on the strided GQA inputs.
fn each_option(n: Dims) -> Vec<Options> {
    let bias: Vec<f32> =
        (0..n.heads * n.q_len * n.kv_len).map(|x| ((x * 7) % 11) as f32 * 0.1 - 0.5).collect();
    let mask: Vec<bool> = (0..n.batch * n.q_len * n.kv_len).map(|x| x % 3 != 1).collect();
    let slopes: Vec<f32> = (0..n.heads).map(|h| 0.5f32.powi(h as i32 + 1)).collect();
    let sinks: Vec<f32> = (0..n.heads).map(|h| h as f32 * 0.4 - 0.6).collect();
    let lengths: Vec<usize> = (0..n.batch).map(|b| if b == 0 { n.kv_len - 3 } else { 0 }).collect();
    let window = Window { left: Some(2), right: Some(1) };
    let all = Options {
        scale: Some(0.3),
        causal: Some(CausalAlign::BottomRight),
        window: Some(Window { left: Some(3), right: None }),
        key_lengths: Some((0..n.batch).map(|b| n.kv_len - b).collect()),
        bias: Some((bias.clone(), [1, n.heads, n.q_len, n.kv_len])),
        mask: Some((mask.clone(), [n.batch, 1, n.q_len, n.kv_len])),
        alibi_slopes: Some(slopes.clone()),
        softcap: Some(2.0),
        sinks: Some(sinks.clone()),
    };
    vec![
        Options::default(),
        Options { scale: Some(0.7), ..Default::default() },
        Options { causal: Some(CausalAlign::TopLeft), ..Default::default() },
        Options { causal: Some(CausalAlign::BottomRight), ..Default::default() },
        Options { window: Some(window), ..Default::default() },
        Options { key_lengths: Some(lengths), ..Default::default() },
        Options { bias: Some((bias, [1, n.heads, n.q_len, n.kv_len])), ..Default::default() },
        Options { mask: Some((mask, [n.batch, 1, n.q_len, n.kv_len])), ..Default::default() },
        Options { alibi_slopes: Some(slopes), ..Default::default() },
        Options { softcap: Some(1.5), ..Default::default() },
        Options { sinks: Some(sinks), ..Default::default() },
        all,
    ]
}

#[test]
fn every_option_matches_candle_in_f64_on_strided_views() -> Result<()> {
    let (q, k, v) = strided_inputs(GQA)?;
    for o in each_option(GQA) {
        check(&q, &k, &v, &o)?;
    }
    Ok(())
}

#[test]
fn contiguous_inputs_and_plain_heads_match() -> Result<()> {
    let n = Dims { batch: 1, heads: 3, kv_heads: 3, q_len: 7, kv_len: 7, d: 32, dv: 32 };
    let q = randn(&[n.batch, n.heads, n.q_len, n.d], 0.0)?;
    let k = randn(&[n.batch, n.kv_heads, n.kv_len, n.d], 0.0)?;
    let v = randn(&[n.batch, n.kv_heads, n.kv_len, n.dv], 0.0)?;
    check(&q, &k, &v, &Options::default())?;
    check(&q, &k, &v, &Options { causal: Some(CausalAlign::TopLeft), ..Default::default() })
}

#[test]
fn a_start_offset_on_every_input_is_honoured() -> Result<()> {
    // Batch entry 1 of 3 of each tensor: a start offset with dense strides after it.
    let pick = |t: Tensor| t.narrow(0, 1, 1);
    let q = pick(randn(&[3, 2, 4, 8], 0.0)?)?;
    let k = pick(randn(&[3, 2, 6, 8], 0.0)?)?;
    let v = pick(randn(&[3, 2, 6, 8], 0.0)?)?;
    check(&q, &k, &v, &Options { causal: Some(CausalAlign::BottomRight), ..Default::default() })
}

#[test]
fn half_precision_k_and_v_match() -> Result<()> {
    let (q, k, v) = strided_inputs(GQA)?;
    let causal = Options { causal: Some(CausalAlign::BottomRight), ..Default::default() };
    for dtype in [DType::F16, DType::BF16] {
        // to_dtype copies densely: V is converted in its [B, L, H, D] order and transposed again,
        // K gets its start offset back from a narrow of a longer cache.
        let k = k.to_dtype(dtype)?;
        let v = v.transpose(1, 2)?.to_dtype(dtype)?.transpose(1, 2)?;
        check(&q, &k, &v, &causal)?;
        let k_long = Tensor::cat(&[&k, &k], 2)?.narrow(2, GQA.kv_len, GQA.kv_len)?;
        check(&q, &k_long, &v, &causal)?;
    }
    Ok(())
}

/// The message of an `Err`, or a panic if the call succeeded.
fn error_of(r: Result<Tensor>) -> String {
    r.expect_err("the call should have been refused").to_string()
}

#[test]
fn bad_dtypes_ranks_and_shapes_are_candle_errors() -> Result<()> {
    let (q, k, v) = strided_inputs(GQA)?;
    let p = AttentionParams::default();
    let msg = error_of(scaled_dot_product_attention(&q.to_dtype(DType::F16)?, &k, &v, &p));
    assert!(msg.contains("Q must be f32"), "{msg}");
    let msg = error_of(scaled_dot_product_attention(&q, &k, &v.to_dtype(DType::F16)?, &p));
    assert!(msg.contains("K and V must share one dtype"), "{msg}");
    let msg =
        error_of(scaled_dot_product_attention(&q, &k.to_dtype(DType::F64)?, &v.to_dtype(DType::F64)?, &p));
    assert!(msg.contains("K and V must share one dtype"), "{msg}");
    let msg = error_of(scaled_dot_product_attention(&q.flatten(0, 1)?, &k, &v, &p));
    assert!(msg.contains("rank 4"), "{msg}");
    let msg = error_of(scaled_dot_product_attention(&q, &k.narrow(3, 0, 8)?, &v, &p));
    assert!(msg.contains("head dim"), "{msg}");
    let msg = error_of(scaled_dot_product_attention(&q, &k, &v.narrow(2, 0, 4)?, &p));
    assert!(msg.contains("shape mismatch"), "{msg}");
    let sinks = [0.0f32; 3];
    let msg =
        error_of(scaled_dot_product_attention(&q, &k, &v, &AttentionParams { sinks: Some(&sinks), ..p }));
    assert!(msg.contains("3 sinks for 4 query heads"), "{msg}");
    Ok(())
}

#[test]
fn a_flashcpu_error_converts_with_its_message() {
    let e = candle_core::Error::from(flashcpu::Error::ShapeMismatch("K is short".into()));
    assert!(e.to_string().contains("shape mismatch: K is short"), "{e}");
}

/// A generation loop on the cache: a prompt, then one token at a time, each step against our op
/// on the whole sequence so far (f32 cache: identical keys), and against candle in f64.
#[test]
fn a_decode_loop_on_the_cache_matches_attention_over_the_whole_sequence() -> Result<()> {
    let n = Dims { batch: 2, heads: 4, kv_heads: 2, q_len: 6, kv_len: 6, d: 16, dv: 16 };
    for dtype in [KvDtype::F32, KvDtype::F16] {
        let cfg = KvCacheConfig {
            batch: n.batch,
            kv_heads: n.kv_heads,
            head_dim: n.d,
            value_dim: n.dv,
            capacity: 16,
            dtype,
            window: None,
        };
        let mut cache = KvCache::new(cfg)?;
        let (mut ks, mut vs) = (Vec::new(), Vec::new());
        let decode = Options { causal: Some(CausalAlign::BottomRight), ..Default::default() };
        for (step, len) in [n.q_len, 1, 1, 1].into_iter().enumerate() {
            let k = randn(&[n.batch, len, n.kv_heads, n.d], 0.0)?.transpose(1, 2)?;
            let v = randn(&[n.batch, len, n.kv_heads, n.dv], 0.0)?.transpose(1, 2)?;
            let q = randn(&[n.batch, len, n.heads, n.d], 0.0)?.transpose(1, 2)?;
            cache.append(&k, &v)?;
            let kv_dtype = if dtype == KvDtype::F16 { DType::F16 } else { DType::F32 };
            ks.push(k.to_dtype(kv_dtype)?);
            vs.push(v.to_dtype(kv_dtype)?);
            let (k_all, v_all) = (Tensor::cat(&ks, 2)?, Tensor::cat(&vs, 2)?);
            let got = cache.attend(&q, &decode.params())?;
            let want = scaled_dot_product_attention(&q, &k_all, &v_all, &decode.params())?;
            assert!(max_abs_diff(&got, &want)? <= 1e-5, "step {step}, {dtype:?}");
            check(&q, &k_all, &v_all, &decode)?;
        }
        assert_eq!(cache.len(0).unwrap(), n.q_len + 3);
    }
    Ok(())
}

#[test]
fn cache_misuse_is_a_candle_error() -> Result<()> {
    let cfg =
        KvCacheConfig { batch: 1, kv_heads: 2, head_dim: 8, value_dim: 8, capacity: 4, ..Default::default() };
    let mut cache = KvCache::new(cfg)?;
    let kv = randn(&[1, 2, 3, 8], 0.0)?;
    cache.append(&kv, &kv)?;
    let msg = cache.append(&kv, &kv).expect_err("over capacity").to_string();
    assert!(msg.contains("exceeds the cache"), "{msg}");
    let ints = kv.to_dtype(DType::U32)?;
    let msg = cache.append(&ints, &ints).expect_err("integer K").to_string();
    assert!(msg.contains("unsupported dtype"), "{msg}");
    let msg = cache.append(&kv.narrow(3, 0, 4)?, &kv).expect_err("short head dim").to_string();
    assert!(msg.contains("shape mismatch"), "{msg}");
    let q = randn(&[1, 4, 1, 8], 0.0)?;
    let msg = error_of(cache.attend(&q.to_dtype(DType::BF16)?, &AttentionParams::default()));
    assert!(msg.contains("Q must be f32"), "{msg}");
    assert_eq!(cache.attend(&q, &AttentionParams::default())?.dims(), &[1, 4, 1, 8]);
    Ok(())
}
