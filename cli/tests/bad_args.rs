//! The built `flashcpu` binary answers every bad argument with one line on stderr and a failing
//! exit status: never a panic (status 101), never an abort (a signal), never a benchmark run.

use std::process::Command;

/// Runs `flashcpu args…` and checks the refusal; returns the stderr line.
fn refused(args: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_flashcpu"))
        .args(args.split_whitespace())
        .env_remove("FLASHCPU_ISA")
        .output()
        .expect("running the flashcpu binary");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let code = output.status.code();
    assert!(
        matches!(code, Some(c) if c != 0 && c != 101),
        "`flashcpu {args}` exited with {:?} (stderr: {stderr})",
        output.status
    );
    assert!(
        output.stdout.is_empty(),
        "`flashcpu {args}` printed {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "`flashcpu {args}` wrote {stderr:?}");
    assert!(stderr.starts_with("flashcpu: "), "`flashcpu {args}` wrote {stderr:?}");
    stderr
}

/// Asserts that the refusal of `args` mentions `word`.
fn refused_for(args: &str, word: &str) {
    let line = refused(args);
    assert!(line.contains(word), "`flashcpu {args}`: {line:?} does not mention {word:?}");
}

#[test]
fn zero_sizes() {
    refused_for("bench attention --heads 0 --q-len 16", "--heads");
    refused_for("bench attention --batch 0 --q-len 16", "--batch");
    refused_for("bench attention --kv-heads 0 --q-len 16", "--kv-heads");
    refused_for("bench attention --q-len 0", "--q-len");
    refused_for("bench attention --q-len 16 --kv-len 0", "--kv-len");
    refused_for("bench attention --q-len 16 --head-dim 0", "--head-dim");
    refused_for("bench matmul --m 0", "--m");
    refused_for("bench matmul --n 0 --m 8 --k 8", "--n");
    refused_for("bench matmul --k 0 --m 8 --n 8", "--k");
    refused_for("bench decode --heads 0", "--heads");
    refused_for("bench decode --kv-heads 0", "--kv-heads");
    refused_for("bench decode --kv-len 0", "--kv-len");
    refused_for("bench decode --q-len 0", "--q-len");
    refused_for("bench decode --head-dim 0", "--head-dim");
    refused_for("bench decode --batch 0", "--batch");
    refused_for("bench mha --heads 0", "--heads");
    refused_for("bench mha --kv-heads 0", "--kv-heads");
    refused_for("bench mha --seq 0", "--seq");
    refused_for("bench mha --batch 0", "--batch");
    refused_for("bench mha --d-model 0", "--d-model");
    refused_for("peak --threads 0", "--threads");
}

#[test]
fn head_counts_that_do_not_divide() {
    refused_for("bench attention --heads 3 --kv-heads 2 --q-len 16", "--kv-heads");
    refused_for("bench attention --heads 2 --kv-heads 4 --q-len 16", "--kv-heads");
    refused_for("bench decode --heads 3 --kv-heads 2", "--kv-heads");
    refused_for("bench mha --d-model 64 --heads 4 --kv-heads 3", "--kv-heads");
    refused_for("bench mha --d-model 10 --heads 3", "--d-model");
}

#[test]
fn sizes_no_machine_holds() {
    // 10¹⁶ floats of C, and products that overflow usize.
    refused_for("bench matmul --m 100000000 --n 100000000 --k 1", "allocate");
    refused_for("bench matmul --m 18446744073709551615 --n 2 --k 2", "address");
    refused_for("bench attention --q-len 18446744073709551615 --head-dim 2 --heads 2", "address");
    refused_for("bench attention --q-len 4000000000000 --heads 1 --head-dim 64", "allocate");
    refused_for("bench attention --q-len 16 --kv-len 4000000000000 --heads 1 --head-dim 64", "allocate");
    refused_for("bench decode --kv-len 1000000000000", "allocate");
    refused_for("bench decode --kv-len 18446744073709551615", "address");
    refused_for("bench mha --d-model 100000000 --heads 1 --kv-heads 1", "allocate");
    refused_for("bench mha --seq 100000000000 --d-model 64 --heads 1 --kv-heads 1", "allocate");
    refused_for("peak --threads 1000000000", "--threads");
}

#[test]
fn malformed_arguments() {
    refused("bench matmul --m -1");
    refused("bench matmul --m abc");
    refused("bench matmul --m 99999999999999999999999");
    refused("bench attention --heads");
    refused("bench attention --no-such-flag");
    refused("bench nothing");
    refused_for("bench matmul --m 8 --n 8 --k 8 --isa sse9", "sse9");
    refused_for("bench decode --kv-dtype f8", "f8");
}

/// A reader that goes away (`flashcpu bench … | head -0`) ends the command quietly: no panic
/// message, a successful exit.
#[test]
fn a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashcpu"))
        .args(["bench", "matmul", "--m", "64", "--n", "64", "--k", "64", "--threads", "1"])
        .env_remove("FLASHCPU_ISA")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the flashcpu binary");
    // Closed before the one result line is written (the benchmark runs for about a second).
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("waiting for flashcpu");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.is_empty(), "{:?}, stderr {stderr:?}", output.status);
}
