//! What an attention call computes besides Q, K and V.

use crate::IsaKind;
use crate::matmul::Parallelism;
use crate::view::View4;

/// Causal alignment: which diagonal a query row's last visible key sits on. The two agree when
/// `q_len = key_len`; they differ when the queries are the last rows of a longer sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CausalAlign {
    /// Query i sees keys `j ≤ i` (PyTorch `is_causal`).
    TopLeft,
    /// Query i sees keys `j ≤ i + key_len − q_len` (FlashAttention, KV caches).
    BottomRight,
}

/// A sliding window around the bottom-right diagonal: query i sees keys j with
/// `i + off − left ≤ j ≤ i + off + right`, where `off = key_len − q_len`. `None` leaves a side
/// unbounded. `Window { left: Some(w − 1), right: Some(0) }` is Mistral's window of w keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Keys visible before the diagonal.
    pub left: Option<usize>,
    /// Keys visible after the diagonal.
    pub right: Option<usize>,
}

/// Options of [`crate::attention()`]. `Default` is plain softmax attention with scale 1/√d.
///
/// Masks combine: a key is visible only if every mask present allows it. Causal masks, windows
/// and key lengths are rules (no tensor is built or read); `bias` and `mask` are read only where
/// the rules leave keys visible.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionParams<'a> {
    /// Multiplies Q·Kᵀ; default `1/√d`. Must be finite and positive.
    pub scale: Option<f32>,
    /// Causal mask and its alignment.
    pub causal: Option<CausalAlign>,
    /// Sliding window (bottom-right frame).
    pub window: Option<Window>,
    /// Valid keys per batch entry (`len = batch`, each `≤ kv_len`); keys beyond are padding and
    /// are never read. Bottom-right alignment (causal and windows) uses these lengths.
    pub key_lengths: Option<&'a [usize]>,
    /// Additive bias `[1|B, 1|H, q_len, kv_len]`; a −∞ entry hides its key exactly as a `false`
    /// mask bit does.
    pub bias: Option<View4<'a>>,
    /// Boolean mask `[1|B, 1|H, q_len, kv_len]`; `false` hides a key.
    pub mask: Option<View4<'a, bool>>,
    /// ALiBi slopes, one per query head: score (i, j) gets `−slope·|i + off − j|`.
    pub alibi_slopes: Option<&'a [f32]>,
    /// Logit soft-cap c > 0: scores become `c·tanh(s/c)` (before ALiBi, bias and masks).
    pub softcap: Option<f32>,
    /// Attention sinks: one logit per query head that joins the softmax denominator only.
    pub sinks: Option<&'a [f32]>,
    /// Force an instruction set; `None` uses the detected (or `FLASHCPU_ISA`) default.
    pub isa: Option<IsaKind>,
    /// Threads.
    pub parallelism: Parallelism,
}
