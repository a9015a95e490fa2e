//! Replays the committed attention fuzz corpus through its harness on stable Rust, so CI checks every
//! input the fuzzer kept without needing cargo-fuzz or nightly; then a few hundred seeded random
//! inputs through the same harness.

mod common;

#[path = "../fuzz/harness/attention.rs"]
mod attention_harness;

#[test]
fn attention_corpus() {
    common::replay_corpus("attention", attention_harness::run);
}

#[test]
fn attention_seeded_random_inputs() {
    // Short inputs decode the header and parameters from the bytes and fill the tensors from the
    // seeded stream (finite values); longer ones also put NaN and ∞ into the tensors.
    common::replay_random(0x9E37_79B9_7F4A_7C15, 160, attention_harness::run);
}
