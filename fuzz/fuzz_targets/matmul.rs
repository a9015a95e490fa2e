//! `cargo +nightly fuzz run matmul`: `flashcpu::matmul_with` on decoded shapes, strides, scalars
//! and values; the checks live in the shared harness, which `tests/fuzz_replay.rs` also runs.
#![no_main]

#[path = "../harness/matmul.rs"]
mod matmul;

libfuzzer_sys::fuzz_target!(|data: &[u8]| matmul::run(data));
