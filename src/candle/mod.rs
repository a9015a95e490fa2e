//! [candle](https://github.com/huggingface/candle) integration (feature `candle`): attention as a
//! candle custom op over the tensors' own memory, and a KV cache a candle model can keep.
//!
//! candle hands a custom op each input as its `CpuStorage` (one `Vec` per dtype) and a `Layout`
//! (shape, strides in elements, start offset). Those are exactly what a [`View4`] is made of, so
//! a tensor in candle's `[B, H, L, D]` order, the `[B, L, H, D]` projection output after
//! `transpose(1, 2)`, or a `narrow`ed part of either, is taken where it lies, with no
//! `.contiguous()` first. The one copy: prefill over K and V whose rows are not adjacent copies
//! them once per call (see [`crate::attention_with_lse`]), which keeps it as fast as over dense
//! tensors. The output is new memory, dense `[B, H, q_len, d_v]` f32.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use flashcpu::AttentionParams;
//! use flashcpu::candle::scaled_dot_product_attention;
//! let dev = Device::Cpu;
//! // [B, L, H, D] projections, viewed as [B, H, L, D] without a copy.
//! let q = Tensor::randn(0f32, 1.0, (1, 5, 4, 8), &dev)?.transpose(1, 2)?;
//! let k = Tensor::randn(0f32, 1.0, (1, 5, 2, 8), &dev)?.transpose(1, 2)?;
//! let v = Tensor::randn(0f32, 1.0, (1, 5, 2, 8), &dev)?.transpose(1, 2)?;
//! let causal = AttentionParams { causal: Some(flashcpu::CausalAlign::BottomRight), ..Default::default() };
//! let out = scaled_dot_product_attention(&q, &k, &v, &causal)?;
//! assert_eq!(out.dims(), &[1, 4, 5, 8]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod cache;
mod op;

pub use cache::KvCache;
pub use op::scaled_dot_product_attention;

use crate::error::Error;
use crate::view::{View4, View4Mut};
use candle_core::{CpuStorage, Layout, Shape, Tensor};

/// A flashcpu error becomes candle's wrapped error, its message kept.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Refuses a tensor that is not on the CPU, naming it.
fn on_cpu(t: &Tensor, name: &str) -> candle_core::Result<()> {
    if t.device().is_cpu() {
        Ok(())
    } else {
        Err(candle_core::Error::msg(format!(
            "flashcpu attention runs on the CPU; {name} is on {:?}",
            t.device().location()
        )))
    }
}

/// `data` read through `layout` (shape, strides, start offset) as `[B, H, L, D]`; a rank other
/// than 4, or a layout that reaches past `data`, is an error.
fn view<'a, T: Copy>(data: &'a [T], layout: &Layout, name: &str) -> candle_core::Result<View4<'a, T>> {
    let (Ok(shape), Ok(strides)) =
        (<[usize; 4]>::try_from(layout.dims()), <[usize; 4]>::try_from(layout.stride()))
    else {
        return Err(candle_core::Error::msg(format!(
            "flashcpu attention: {name} must have rank 4 [B, H, L, D], got shape {:?}",
            layout.shape()
        )));
    };
    let data = data.get(layout.start_offset()..).ok_or_else(|| {
        Error::OutOfBounds(format!(
            "{name} starts at {} in a storage of {}",
            layout.start_offset(),
            data.len()
        ))
    })?;
    Ok(View4::new(data, shape, strides)?)
}

/// Runs `fill` on a new dense `[B, H, q_len, d_v]` output and hands it to candle.
fn dense_output(
    shape: [usize; 4],
    fill: impl FnOnce(View4Mut<'_>) -> crate::Result<()>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let len = shape
        .iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x))
        .ok_or_else(|| Error::InvalidParameter(format!("output {shape:?} overflows usize")))?;
    let mut out = vec![0.0f32; len];
    fill(View4Mut::bhld(&mut out, shape)?)?;
    Ok((CpuStorage::F32(out), Shape::from(&shape)))
}
