//! Replays the committed matmul fuzz corpus through its harness on stable Rust, so CI checks every
//! input the fuzzer kept without needing cargo-fuzz or nightly; then a few hundred seeded random
//! inputs through the same harness.

mod common;

#[path = "../fuzz/harness/matmul.rs"]
mod matmul_harness;

#[test]
fn matmul_corpus() {
    common::replay_corpus("matmul", matmul_harness::run);
}

#[test]
fn matmul_seeded_random_inputs() {
    common::replay_random(0x2545_F491_4F6C_DD1D, 48, matmul_harness::run);
}
