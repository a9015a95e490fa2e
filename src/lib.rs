#![doc = include_str!("../README.md")]
//!
//! This crate is the safe layer: it validates every shape and stride, plans the work and spreads
//! it over rayon. The SIMD kernels live in `flashcpu-kernels`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attention;
#[cfg(feature = "candle")]
pub mod candle;
mod error;
mod isa;
mod kvcache;
mod matmul;
mod mha;
mod rope;
mod scratch;
mod view;

pub use attention::{AttentionParams, CausalAlign, KvElement, Window, attention, attention_with_lse, merge};
pub use error::{Error, Result};
pub use isa::{ISA_ENV, IsaKind, active_isa, available_isas, parse_isa};
pub use kvcache::{KvCache, KvCacheConfig, KvDtype};
pub use matmul::{MatmulOptions, Parallelism, matmul, matmul_with};
pub use mha::{MhaConfig, MhaWeights, MultiHeadAttention};
pub use rope::{Rope, RopeStyle};
pub use view::{MatMut, MatRef, View4, View4Mut};

pub mod peak;
pub mod reference;

#[cfg(test)]
mod tests;
