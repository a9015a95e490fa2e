//! `cargo +nightly fuzz run kvcache`: sequences of `KvCache` appends, truncations, resets and
//! attends against a plain model and the f64 reference; the checks live in the shared harness,
//! which `tests/fuzz_replay_kvcache.rs` also runs.
#![no_main]

#[path = "../harness/kvcache.rs"]
mod kvcache;

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvcache::run(data));
