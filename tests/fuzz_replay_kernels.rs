//! Replays the committed fuzz corpus of the kernels crate's API (views, packing, the
//! macro-kernel) through its harness on stable Rust, then a few hundred seeded random inputs.

mod common;

#[path = "../fuzz/harness/kernels.rs"]
mod kernels_harness;

#[test]
fn kernels_corpus() {
    common::replay_corpus("kernels", kernels_harness::run);
}

#[test]
fn kernels_seeded_random_inputs() {
    common::replay_random(0x9E37_79B9_7F4A_7C15, 96, kernels_harness::run);
}
