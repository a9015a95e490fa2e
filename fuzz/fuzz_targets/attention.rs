//! `cargo +nightly fuzz run attention`: `flashcpu::attention_with_lse` on decoded shapes, strides,
//! parameters and values; the checks live in the shared harness, which
//! `tests/fuzz_replay_attention.rs` also runs.
#![no_main]

#[path = "../harness/attention.rs"]
mod attention;

libfuzzer_sys::fuzz_target!(|data: &[u8]| attention::run(data));
