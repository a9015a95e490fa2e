//! `flashcpu-kernels`: every intrinsic and every `unsafe` of flashcpu.
//!
//! Functions here take views and buffers whose shapes the caller has checked; each public entry
//! point re-checks its O(1) preconditions with `assert!` and then runs single-threaded SIMD code for
//! the ISA that its [`isa::Isa`] proves. Threads, masks and errors live in the `flashcpu` crate.
//!
//! ```
//! use flashcpu_kernels::gemm::{macro_kernel, Lhs, PackedB};
//! use flashcpu_kernels::{Isa, MatMut, MatRef};
//!
//! // C = A·B for 2×3 times 3×2, on the fastest ISA this CPU has.
//! let (a, b) = ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
//! let b = MatRef::new(&b, 3, 2, 2, 1).unwrap();
//! let mut buf = vec![0.0; PackedB::len_for(Isa::best(), 3, 2)];
//! let mut c = [0.0f32; 4];
//! let a = Lhs::Strided(MatRef::new(&a, 2, 3, 3, 1).unwrap());
//! macro_kernel(Isa::best(), a, PackedB::pack(Isa::best(), b, &mut buf), MatMut::new(&mut c, 2, 2, 2, 1).unwrap(), 1.0, 0.0);
//! assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
//! ```

pub mod attention;
pub mod blocking;
pub mod gemm;
pub mod isa;
pub mod peak;
pub mod reference;
pub mod softmax;
pub mod view;

pub use isa::{Isa, IsaKind};
pub use view::{MatMut, MatRef};
