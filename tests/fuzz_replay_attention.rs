//! Replays the committed attention fuzz corpus through its harness on stable Rust, so CI checks
//! every input the fuzzer kept without cargo-fuzz or nightly; then a few hundred seeded random
//! inputs through the same harness.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../fuzz/harness/attention.rs"]
mod attention_harness;

/// Every file of `fuzz/corpus/attention`, sorted.
fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/attention");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("reading the corpus").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs the harness on `data`; on a panic, returns a line naming the input.
fn replay(name: &str, data: &[u8]) -> Option<String> {
    std::panic::catch_unwind(|| attention_harness::run(data))
        .is_err()
        .then(|| format!("fuzz input {name} ({} bytes: {data:02x?}) failed", data.len()))
}

/// Panics listing every failed input (each one's own panic message is printed above).
fn assert_none_failed(failed: Vec<String>) {
    assert!(failed.is_empty(), "{} inputs failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn attention_corpus() {
    let files = corpus();
    assert!(files.len() >= 10, "the attention corpus has only {} files", files.len());
    let failed = files
        .iter()
        .filter_map(|path| {
            replay(&path.display().to_string(), &fs::read(path).expect("reading a corpus file"))
        })
        .collect();
    assert_none_failed(failed);
}

#[test]
fn attention_seeded_random_inputs() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failed = Vec::new();
    for case in 0..400 {
        // Short inputs decode the header and parameters from the bytes and fill the tensors from
        // the seeded stream (finite values); longer ones also put NaN and ∞ into the tensors.
        let len = (next() % 160) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        failed.extend(replay(&format!("random #{case}"), &data));
    }
    assert_none_failed(failed);
}
