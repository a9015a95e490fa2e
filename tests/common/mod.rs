//! Replaying fuzz inputs as ordinary tests (shared by the per-target replay files; each harness
//! brings its own copy of `fuzz/harness/common.rs`, so each target gets its own test binary).

use std::fs;
use std::path::{Path, PathBuf};

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

/// Runs `harness` on `data`; on a panic, returns a line naming the input.
fn replay(name: &str, data: &[u8], harness: fn(&[u8])) -> Option<String> {
    std::panic::catch_unwind(|| harness(data))
        .is_err()
        .then(|| format!("fuzz input {name} ({} bytes: {data:02x?}) failed", data.len()))
}

/// Panics listing every failed input (each one's own panic message is printed above).
fn assert_none_failed(failed: Vec<String>) {
    assert!(failed.is_empty(), "{} inputs failed:\n{}", failed.len(), failed.join("\n"));
}

/// Replays every corpus file of `target`, which must hold at least 10.
pub fn replay_corpus(target: &str, harness: fn(&[u8])) {
    let files = corpus(target);
    assert!(files.len() >= 10, "the {target} corpus has only {} files", files.len());
    let failed = files
        .iter()
        .filter_map(|path| {
            replay(&path.display().to_string(), &fs::read(path).expect("reading a corpus file"), harness)
        })
        .collect();
    assert_none_failed(failed);
}

/// Replays 400 xorshift-generated inputs of up to `max_len` bytes from `seed`.
pub fn replay_random(seed: u64, max_len: u64, harness: fn(&[u8])) {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failed = Vec::new();
    for case in 0..400 {
        let len = (next() % max_len) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        failed.extend(replay(&format!("random #{case}"), &data, harness));
    }
    assert_none_failed(failed);
}
