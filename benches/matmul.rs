//! Placeholder until the matmul benchmarks land.
fn main() {}
