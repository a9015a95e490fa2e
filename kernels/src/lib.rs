//! `flashcpu-kernels`: every intrinsic and every `unsafe` of flashcpu.
//!
//! Functions here take views and buffers whose shapes the caller has checked; each public entry
//! point re-checks its O(1) preconditions with `assert!` and then runs single-threaded SIMD code for
//! the ISA that its [`isa::Isa`] proves. Threads, masks and errors live in the `flashcpu` crate.

pub mod attention;
pub mod gemm;
pub mod isa;
pub mod peak;
pub mod reference;
pub mod softmax;
pub mod view;

pub use isa::{Isa, IsaKind};
pub use view::{MatMut, MatRef};
