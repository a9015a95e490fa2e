#!/usr/bin/env python3
"""Time flashcpu's peers the way `flashcpu bench ... --json` times flashcpu: one JSON line per case.

    python3 scripts/peers.py attention --heads 32 --kv-heads 8 --q-len 2048 --head-dim 128 --causal
    python3 scripts/peers.py matmul --m 2048 --n 2048 --k 2048 --threads 1

attention: ONNX Runtime's CPU contrib operators, MultiHeadAttention when --kv-heads equals --heads
           (with --causal its `unidirectional` mask), GroupQueryAttention otherwise.
matmul:    numpy's `@` on f32, which calls OpenBLAS's sgemm (its AVX-512 kernel on an AVX-512 CPU).

The first run creates a virtual environment outside the repository ($FLASHCPU_PEERS_VENV, default
~/.cache/flashcpu-peers) with the pinned versions below and re-runs itself there.

Timing as in the CLI: one warm-up call, then calls until at least 7 have run and 1 s has passed (at
most 50); the median is reported. GFLOP/s count the work the mask keeps, exactly as the CLI counts
it (4·d per visible query-key pair; 2·m·n·k for matmul). Each attention case is checked against a
float64 computation on a few query rows of its first and last head before it is timed; the largest
difference is reported as `max_abs_err`. `cpu_share` is the CPU time the process had during the timed
calls over their wall time, per thread: below about 0.95, something else was running.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PINNED = ["numpy==2.4.6", "onnx==1.23.2", "onnxruntime==1.32.0", "threadpoolctl==3.8.0"]
VENV = Path(os.environ.get("FLASHCPU_PEERS_VENV", Path.home() / ".cache" / "flashcpu-peers"))
CHECKED_ROWS = 6


def ensure_venv():
    """Re-execute inside the peers' venv, creating it first if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python, pins = VENV / "bin" / "python", VENV / "flashcpu-pins.txt"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not pins.exists() or pins.read_text() != "\n".join(PINNED):
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINNED], check=True)
        pins.write_text("\n".join(PINNED))
    os.execv(python, [str(python), __file__, *sys.argv[1:]])


def median_seconds(call, threads):
    """The median time of `call`, and the share of `threads` cores it had meanwhile (below about
    0.95, something else was running and the figure is suspect)."""
    call()
    times, start, cpu_start = [], time.perf_counter(), time.process_time()
    while len(times) < 7 or (time.perf_counter() - start < 1.0 and len(times) < 50):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    cpu_share = (time.process_time() - cpu_start) / (time.perf_counter() - start) / threads
    return statistics.median(times), cpu_share


def visible_keys(i, q_len, kv_len, causal):
    """Keys query row i sees, causal aligned bottom-right (as the CLI counts them)."""
    return min(max(i + 1 + kv_len - q_len, 0), kv_len) if causal else kv_len


def shape_label(a):
    causal = "-causal" if a.causal else ""
    return f"b1h{a.heads}kv{a.kv_heads}q{a.q_len}k{a.kv_len}d{a.head_dim}{causal}"


def ort_attention(a):
    """An ONNX model of one attention node over [1, L, H·d] tensors, and a call that runs it."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    h, hkv, lq, lk, d = a.heads, a.kv_heads, a.q_len, a.kv_len, a.head_dim
    rng = np.random.default_rng(11)
    q, k, v = (rng.uniform(-1, 1, (rows, heads, d)).astype(np.float32)
               for rows, heads in ((lq, h), (lk, hkv), (lk, hkv)))
    feeds = {"query": q.reshape(1, lq, h * d), "key": k.reshape(1, lk, hkv * d),
             "value": v.reshape(1, lk, hkv * d)}
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f32, x.shape) for n, x in feeds.items()]
    outputs = [helper.make_tensor_value_info("output", f32, [1, lq, h * d])]
    if h == hkv:
        op = "MultiHeadAttention"
        node = helper.make_node(op, ["query", "key", "value"], ["output"], domain="com.microsoft",
                                num_heads=h, unidirectional=int(a.causal))
    else:
        op = "GroupQueryAttention"
        if lq != lk:
            sys.exit("GroupQueryAttention here needs --q-len equal to --kv-len")
        feeds["seqlens_k"] = np.array([lk - 1], dtype=np.int32)
        feeds["total_sequence_length"] = np.array(lk, dtype=np.int32)
        inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
                   helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
        present = [1, hkv, lk, d]
        outputs += [helper.make_tensor_value_info(n, f32, present) for n in ("present_k", "present_v")]
        node = helper.make_node(op, ["query", "key", "value", "", "", "seqlens_k", "total_sequence_length"],
                                ["output", "present_k", "present_v"], domain="com.microsoft",
                                num_heads=h, kv_num_heads=hkv, causal=int(a.causal))
    graph = helper.make_graph([node], "attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    binding = session.io_binding()
    for name, x in feeds.items():
        binding.bind_cpu_input(name, x)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cpu")

    def call():
        session.run_with_iobinding(binding)

    def output():
        return binding.get_outputs()[0].numpy().reshape(lq, h, d)

    return f"onnxruntime {ort.__version__} {op}", call, output, (q, k, v)


def sampled_error(a, out, q, k, v):
    """Max |out − float64 attention| over a few rows of the first and last head."""
    import numpy as np

    err = 0.0
    for head in (0, a.heads - 1):
        kv_head = head // (a.heads // a.kv_heads)
        for i in range(0, a.q_len, max(-(-a.q_len // CHECKED_ROWS), 1)):
            keys = visible_keys(i, a.q_len, a.kv_len, a.causal)
            s = k[:keys, kv_head].astype(np.float64) @ q[i, head].astype(np.float64) / np.sqrt(a.head_dim)
            p = np.exp(s - s.max())
            want = (p / p.sum()) @ v[:keys, kv_head].astype(np.float64)
            err = max(err, float(np.abs(out[i, head] - want).max()))
    return err


def cmd_attention(a):
    a.kv_heads = a.kv_heads or a.heads
    a.kv_len = a.kv_len or a.q_len
    if a.heads % a.kv_heads:
        sys.exit("--kv-heads must divide --heads")
    impl, call, output, (q, k, v) = ort_attention(a)
    call()
    err = sampled_error(a, output(), q, k, v)
    median_s, cpu_share = median_seconds(call, a.threads)
    pairs = sum(visible_keys(i, a.q_len, a.kv_len, a.causal) for i in range(a.q_len))
    flops = 4.0 * a.heads * a.head_dim * pairs
    return dict(op="attention", shape=shape_label(a), impl=impl, threads=a.threads, median_s=median_s,
                gflops=flops / median_s / 1e9, max_abs_err=err, cpu_share=cpu_share)


def cmd_matmul(a):
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, (a.m, a.k)).astype(np.float32)
    y = rng.uniform(-1, 1, (a.k, a.n)).astype(np.float32)
    with threadpool_limits(a.threads, "blas"):
        median_s, cpu_share = median_seconds(lambda: x @ y, a.threads)
    blas = next((i for i in threadpool_info() if i.get("internal_api") == "openblas"), {})
    impl = f"OpenBLAS {blas.get('version', '?')} ({blas.get('architecture', '?')}) via numpy {np.__version__}"
    return dict(op="matmul", shape=f"{a.m}x{a.k}x{a.n}", impl=impl, threads=a.threads, median_s=median_s,
                gflops=2.0 * a.m * a.n * a.k / median_s / 1e9, cpu_share=cpu_share)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    att = sub.add_parser("attention", help="ONNX Runtime attention on dense [1, L, H·d] tensors")
    att.add_argument("--heads", type=int, default=32)
    att.add_argument("--kv-heads", type=int, help="default: --heads")
    att.add_argument("--q-len", type=int, default=2048)
    att.add_argument("--kv-len", type=int, help="default: --q-len")
    att.add_argument("--head-dim", type=int, default=128)
    att.add_argument("--causal", action="store_true")
    mm = sub.add_parser("matmul", help="numpy (OpenBLAS) f32 C = A·B, row-major")
    for dim in ("m", "n", "k"):
        mm.add_argument(f"--{dim}", type=int, default=1024)
    for p in (att, mm):
        p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads < 1:
        sys.exit("--threads must be at least 1")
    ensure_venv()
    # OpenBLAS may pick its AVX2 (Haswell) kernel on AMD CPUs with AVX-512; SkylakeX is its AVX-512 one.
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    row = {"cmd_attention": cmd_attention, "cmd_matmul": cmd_matmul}[f"cmd_{args.cmd}"](args)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
