//! [`scaled_dot_product_attention`]: [`crate::attention`] as a candle `CustomOp3`.

use super::{dense_output, on_cpu, view};
use crate::attention::{AttentionParams, KvElement, attention};
use crate::view::View4;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

/// `softmax(Q·Kᵀ·scale + masks)·V` on candle CPU tensors: Q `[B, H, q_len, d]` in f32, K
/// `[B, H_kv, kv_len, d]` and V `[B, H_kv, kv_len, d_v]` both in f32, f16 or bf16; the result is
/// a new dense f32 tensor `[B, H, q_len, d_v]`.
///
/// The inputs are taken through their strides and start offset, whatever candle's layout:
/// contiguous, after `transpose(1, 2)`, or `narrow`ed. Prefill copies K and V whose rows are not
/// adjacent once per call (see [`crate::attention_with_lse`]); everything else is read in place.
///
/// Every [`AttentionParams`] option applies as in [`crate::attention`]; its borrowed parts (bias,
/// mask, slopes, sinks, key lengths) are plain slices and views, for instance made with
/// [`View4::bhld`].
///
/// Errors (candle's, with the reason): a tensor off the CPU, Q not f32, K and V not sharing f32,
/// f16 or bf16, a rank other than 4, or anything [`crate::attention`] refuses (wrapped
/// [`crate::Error`]). The op has no backward pass.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    params: &AttentionParams<'_>,
) -> candle_core::Result<Tensor> {
    for (t, name) in [(q, "Q"), (k, "K"), (v, "V")] {
        on_cpu(t, name)?;
    }
    if q.dtype() != DType::F32 {
        return Err(candle_core::Error::UnsupportedDTypeForOp(
            q.dtype(),
            "flashcpu attention (Q must be f32)",
        ));
    }
    if k.dtype() != v.dtype() || !matches!(k.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(candle_core::Error::msg(format!(
            "flashcpu attention: K and V must share one dtype of f32, f16 or bf16, got K {:?} and V {:?}",
            k.dtype(),
            v.dtype()
        )));
    }
    q.apply_op3_no_bwd(k, v, &Attention { params })
}

/// The op: candle calls `cpu_fwd` with each tensor's storage and layout.
struct Attention<'a, 'p> {
    params: &'a AttentionParams<'p>,
}

impl Attention<'_, '_> {
    fn run<T: KvElement>(
        &self,
        q: View4<'_>,
        k: (&[T], &Layout),
        v: (&[T], &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (k, v) = (view(k.0, k.1, "K")?, view(v.0, v.1, "V")?);
        let [b, h, q_len, _] = q.shape();
        dense_output([b, h, q_len, v.shape()[3]], |out| attention(q, k, v, out, self.params))
    }
}

impl CustomOp3 for Attention<'_, '_> {
    fn name(&self) -> &'static str {
        "flashcpu-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(q) = q else {
            return Err(candle_core::Error::msg("flashcpu attention: Q must be f32"));
        };
        let q = view(q, q_layout, "Q")?;
        match (k, v) {
            (CpuStorage::F32(k), CpuStorage::F32(v)) => self.run(q, (k, k_layout), (v, v_layout)),
            (CpuStorage::F16(k), CpuStorage::F16(v)) => self.run(q, (k, k_layout), (v, v_layout)),
            (CpuStorage::BF16(k), CpuStorage::BF16(v)) => self.run(q, (k, k_layout), (v, v_layout)),
            _ => Err(candle_core::Error::msg(
                "flashcpu attention: K and V must share one dtype of f32, f16 or bf16",
            )),
        }
    }
}
