//! Replays the committed fuzz corpus through the fuzz harnesses on stable Rust, so CI checks every
//! input the fuzzer kept without needing cargo-fuzz or nightly; then a few hundred seeded random
//! inputs through the same harness.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../fuzz/harness/matmul.rs"]
mod matmul_harness;

/// Every file of `fuzz/corpus/<target>`, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("reading the corpus").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `harness` on `data`, naming the input if it panics.
fn replay(name: &str, data: &[u8], harness: fn(&[u8])) {
    if std::panic::catch_unwind(|| harness(data)).is_err() {
        panic!("fuzz input {name} ({} bytes: {data:02x?}) failed", data.len());
    }
}

#[test]
fn matmul_corpus() {
    let files = corpus("matmul");
    assert!(files.len() >= 10, "the matmul corpus has only {} files", files.len());
    for path in files {
        let data = fs::read(&path).expect("reading a corpus file");
        replay(&path.display().to_string(), &data, matmul_harness::run);
    }
}

#[test]
fn matmul_seeded_random_inputs() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..400 {
        let len = (next() % 48) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        replay(&format!("random #{case}"), &data, matmul_harness::run);
    }
}
