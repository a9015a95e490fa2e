//! `cargo +nightly fuzz run kernels`: the kernels crate's views, packing and macro-kernel on
//! decoded sizes, strides and values; the checks live in the shared harness, which
//! `tests/fuzz_replay_kernels.rs` also runs.
#![no_main]

#[path = "../harness/kernels.rs"]
mod kernels;

libfuzzer_sys::fuzz_target!(|data: &[u8]| kernels::run(data));
