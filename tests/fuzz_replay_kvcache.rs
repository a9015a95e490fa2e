//! Replays the committed KV-cache fuzz corpus through its harness on stable Rust, so CI checks every
//! input the fuzzer kept without needing cargo-fuzz or nightly; then a few hundred seeded random
//! inputs through the same harness.

mod common;

#[path = "../fuzz/harness/kvcache.rs"]
mod kvcache_harness;

#[test]
fn kvcache_corpus() {
    common::replay_corpus("kvcache", kvcache_harness::run);
}

#[test]
fn kvcache_seeded_random_inputs() {
    // Short inputs decode the shape and the first operations from the bytes and the rest from the
    // seeded stream; longer ones choose more of the operations themselves.
    common::replay_random(0xD1B5_4A32_D192_ED03, 400, kvcache_harness::run);
}
