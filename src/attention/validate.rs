//! Every check of an attention call, before any work: after `validate` returns `Ok`, every index
//! the kernels touch is in bounds by construction.

use super::params::AttentionParams;
use crate::error::{Error, Result};

/// Largest window side accepted: far beyond any sequence, small enough that row ± window never
/// overflows i64.
const MAX_WINDOW: usize = 1 << 48;

/// The dimensions of a validated call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
}

fn mismatch(msg: String) -> Error {
    Error::ShapeMismatch(msg)
}

fn invalid(msg: String) -> Error {
    Error::InvalidParameter(msg)
}

/// Checks shapes, head ratio, mask/bias broadcast and parameters.
pub(super) fn validate(
    q_shape: [usize; 4],
    k_shape: [usize; 4],
    v_shape: [usize; 4],
    out_shape: [usize; 4],
    lse_shape: Option<[usize; 4]>,
    p: &AttentionParams<'_>,
) -> Result<Dims> {
    let [batch, heads, q_len, d] = q_shape;
    let [kb, kv_heads, kv_len, kd] = k_shape;
    let [vb, vh, vl, dv] = v_shape;
    if kb != batch || vb != batch {
        return Err(mismatch(format!("batch: Q {batch}, K {kb}, V {vb}")));
    }
    if kd != d {
        return Err(mismatch(format!("head dim: Q {d}, K {kd}")));
    }
    if vh != kv_heads || vl != kv_len {
        return Err(mismatch(format!("K is {:?} but V is {:?}", k_shape, v_shape)));
    }
    if heads > 0 && (kv_heads == 0 || heads % kv_heads != 0) {
        return Err(mismatch(format!("{heads} query heads are not a multiple of {kv_heads} KV heads")));
    }
    if out_shape != [batch, heads, q_len, dv] {
        return Err(mismatch(format!("output is {out_shape:?}, expected {:?}", [batch, heads, q_len, dv])));
    }
    if let Some(lse_shape) = lse_shape
        && lse_shape != [batch, heads, q_len, 1]
    {
        return Err(mismatch(format!("lse is {lse_shape:?}, expected {:?}", [batch, heads, q_len, 1])));
    }
    let scale = p.scale.unwrap_or(if d == 0 { 1.0 } else { 1.0 / (d as f32).sqrt() });
    if !(scale.is_finite() && scale > 0.0) {
        return Err(invalid(format!("scale must be finite and positive, got {scale}")));
    }
    if let Some(cap) = p.softcap
        && !(cap.is_finite() && cap > 0.0)
    {
        return Err(invalid(format!("softcap must be finite and positive, got {cap}")));
    }
    if let Some(w) = p.window
        && (w.left.is_some_and(|x| x > MAX_WINDOW) || w.right.is_some_and(|x| x > MAX_WINDOW))
    {
        return Err(invalid(format!("window {w:?} exceeds 2^48")));
    }
    if let Some(lens) = p.key_lengths {
        if lens.len() != batch {
            return Err(mismatch(format!("{} key lengths for a batch of {batch}", lens.len())));
        }
        if let Some((b, &l)) = lens.iter().enumerate().find(|&(_, &l)| l > kv_len) {
            return Err(invalid(format!("key length {l} of batch entry {b} exceeds kv_len {kv_len}")));
        }
    }
    per_head("alibi_slopes", p.alibi_slopes, heads)?;
    per_head("sinks", p.sinks, heads)?;
    if let Some(bias) = p.bias {
        broadcastable("bias", bias.shape(), [batch, heads, q_len, kv_len])?;
    }
    if let Some(mask) = p.mask {
        broadcastable("mask", mask.shape(), [batch, heads, q_len, kv_len])?;
    }
    Ok(Dims { batch, heads, kv_heads, q_len, kv_len, d, dv, scale })
}

fn per_head(name: &str, values: Option<&[f32]>, heads: usize) -> Result<()> {
    let Some(values) = values else { return Ok(()) };
    if values.len() != heads {
        return Err(mismatch(format!("{} {name} for {heads} query heads", values.len())));
    }
    if let Some(x) = values.iter().find(|x| !x.is_finite()) {
        return Err(invalid(format!("{name} must be finite, got {x}")));
    }
    Ok(())
}

fn broadcastable(name: &str, shape: [usize; 4], full: [usize; 4]) -> Result<()> {
    let ok = (shape[0] == full[0] || shape[0] == 1)
        && (shape[1] == full[1] || shape[1] == 1)
        && shape[2] == full[2]
        && shape[3] == full[3];
    if ok {
        Ok(())
    } else {
        Err(mismatch(format!("{name} is {shape:?}, which does not broadcast to {full:?}")))
    }
}
