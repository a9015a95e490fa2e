#!/usr/bin/env bash
# The benchmark sweep behind BENCHMARKS.md, the README's speed table and docs/prefill.svg.
#
#   scripts/bench_sweep.sh            flashcpu only; the peers' newest file in benchmarks/ is reused
#   scripts/bench_sweep.sh --peers    also ONNX Runtime and OpenBLAS (scripts/peers.py), each case
#                                     right after flashcpu's, so that both see the same machine
#
# Prefill: B = 1, 32 query heads with 32 KV heads (multi-head) or 8 (grouped-query), L = q_len =
# kv_len in {512, 1024, 2048, 4096}, d in {64, 128}, with and without a causal mask; then matmul
# shapes and the FMA peak. One thread unless THREADS is set. ROUNDS=N runs the whole sweep N times,
# round after round, so that the N measurements of a case lie minutes apart and the tables can take
# their median (these shared machines drift by 5-20 % from one minute to the next); one round
# unless set. Writes one JSON line per case and round to
# benchmarks/flashcpu-DATE.jsonl (and benchmarks/peers-DATE.jsonl), then runs scripts/plot.py, which
# redraws docs/prefill.svg and rewrites the generated tables in BENCHMARKS.md and README.md.
# The cases run one at a time, at normal priority, each once the machine is quiet (see below).
set -euo pipefail
cd "$(dirname "$0")/.."

peers=false
case "${1:-}" in
--peers) peers=true ;;
"") ;;
*) echo "usage: $0 [--peers]" >&2 && exit 2 ;;
esac
threads=${THREADS:-1}
rounds=${ROUNDS:-1}
day=$(date -u +%F)
ours=benchmarks/flashcpu-$day.jsonl
theirs=benchmarks/peers-$day.jsonl
mkdir -p benchmarks

# The build yields to anything else running; the measurements below do not.
nice -n 19 cargo build --release -q -p flashcpu-cli
flashcpu=${CARGO_TARGET_DIR:-target}/release/flashcpu

host() {
    local name family model
    name=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
    family=$(lscpu | sed -n 's/^CPU family: *//p' | head -n 1)
    model=$(lscpu | sed -n 's/^Model: *//p' | head -n 1)
    printf '{"op":"host","cpu":"%s (family %s, model %s)","cores":%s,"date":"%s"}\n' \
        "$name" "$family" "$model" "$(nproc)" "$day"
}

host >"$ours"
if $peers; then host >"$theirs"; fi

# Waits (up to 10 minutes) until processes at normal priority use less than a sixth of a core:
# /proc/stat counts the time of niced processes apart ("nice"), so niced builds do not hold it up.
wait_for_quiet() {
    local user1 system1 user2 system2 _
    for _ in $(seq 600); do
        read -r _ user1 _ system1 _ </proc/stat
        sleep 1
        read -r _ user2 _ system2 _ </proc/stat
        if (((user2 - user1) + (system2 - system1) < 15)); then return; fi
    done
    echo "bench_sweep: still busy after 10 minutes; measuring anyway" >&2
}

# One case: flashcpu's line, then (with --peers) the peer's, both appended as they finish.
run_case() {
    local cmd=$1
    shift
    wait_for_quiet
    "$flashcpu" bench "$cmd" "$@" --threads "$threads" --json | tee -a "$ours"
    if $peers; then run_peer "$cmd" "$@"; fi
}

# A peer's case, measured again (up to 3 times) while it had less than 95 % of its cores.
run_peer() {
    local line
    for _ in 1 2 3; do
        wait_for_quiet
        line=$(python3 scripts/peers.py "$@" --threads "$threads")
        if python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1])["cpu_share"] < 0.95)' "$line"; then
            break
        fi
    done
    echo "$line" | tee -a "$theirs"
}

for _ in $(seq "$rounds"); do
    wait_for_quiet
    "$flashcpu" peak --threads "$threads" --json | tee -a "$ours"
    for d in 64 128; do
        for len in 512 1024 2048 4096; do
            for kv_heads in 32 8; do
                run_case attention --heads 32 --kv-heads "$kv_heads" --q-len "$len" --head-dim "$d"
                run_case attention --heads 32 --kv-heads "$kv_heads" --q-len "$len" --head-dim "$d" --causal
            done
        done
    done
    for mkn in 1024 2048; do
        run_case matmul --m "$mkn" --n "$mkn" --k "$mkn"
    done
done

python3 scripts/plot.py "$ours"
