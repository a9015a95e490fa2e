#!/usr/bin/env python3
"""Draw docs/prefill.svg and rewrite the generated tables of BENCHMARKS.md and README.md.

    python3 scripts/plot.py [FLASHCPU.jsonl [PEERS.jsonl]]

Reads the JSON lines that scripts/bench_sweep.sh collects (`flashcpu ... --json` and
scripts/peers.py); by default the newest benchmarks/flashcpu-*.jsonl and benchmarks/peers-*.jsonl
(without a flashcpu file, the peers alone, and no % of peak).
Python's standard library only: the SVG is written by hand.

A case measured several times (`ROUNDS=N scripts/bench_sweep.sh`) is reported by its median
GFLOP/s, and "% of peak" is against the median FMA peak `flashcpu peak` measured in the flashcpu
run, for flashcpu and the peers alike (same machine, same thread count).
"""
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = [512, 1024, 2048, 4096]
SHAPE = re.compile(r"b(\d+)h(\d+)kv(\d+)q(\d+)k(\d+)d(\d+)(-causal)?$")


def newest(pattern):
    files = sorted((ROOT / "benchmarks").glob(pattern))
    return files[-1] if files else None


def load(path):
    if path is None:
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Results:
    """The rows of one flashcpu run and one peers run, indexed by case (a case's rounds together)."""

    def __init__(self, ours, theirs):
        self.host = next((r for r in ours + theirs if r["op"] == "host"), {})
        peaks = [r["gflops"] for r in ours if r["op"] == "peak" and r["shape"] == "fma-chains"]
        peaks += [r["peak_gflops"] for r in ours if "peak_gflops" in r]
        self.peak = statistics.median(peaks) if peaks else None
        self.threads = next((r["threads"] for r in ours + theirs if "threads" in r), 1)
        self.date = next((r["date"] for r in ours if r["op"] == "host"), None)
        self.cases = {}
        for who, rows in (("flashcpu", ours), ("peer", theirs)):
            for r in rows:
                if r["op"] in ("attention", "matmul"):
                    self.cases.setdefault((who, r["op"], r["shape"]), []).append(r)
        self.rounds = max((len(rows) for rows in self.cases.values()), default=1)
        self.peer_date = next((r["date"] for r in theirs if r["op"] == "host"), "?")

    def gflops(self, who, op, shape):
        rows = self.cases.get((who, op, shape))
        return statistics.median(r["gflops"] for r in rows) if rows else None


def threads(res):
    return "1 thread" if res.threads == 1 else f"{res.threads} threads"


def attention_shape(heads, kv_heads, length, d, causal):
    return f"b1h{heads}kv{kv_heads}q{length}k{length}d{d}" + ("-causal" if causal else "")


SERIES = [  # (who, kv_heads, label, colour, dash)
    ("flashcpu", 32, "flashcpu, 32 heads", "#1f5fbf", ""),
    ("flashcpu", 8, "flashcpu, 32/8 heads (GQA)", "#1f5fbf", "6 4"),
    ("peer", 32, "ONNX Runtime MultiHeadAttention", "#d9731a", ""),
    ("peer", 8, "ONNX Runtime GroupQueryAttention (32/8)", "#d9731a", "6 4"),
]


def svg(res):
    """Four panels (d 64 / 128 × no mask / causal) of GFLOP/s against L, % of peak on the right."""
    pw, ph, left, top, gap_x, gap_y = 300, 190, 70, 110, 150, 70
    width, height = left + 2 * pw + gap_x + 90, top + 2 * ph + gap_y + 60
    top_rate = max([res.gflops(*case) for case in res.cases] + [res.peak or 0, 1])
    ymax = 50 * math.ceil(top_rate / 50)
    peak = f"FMA peak {res.peak:.0f} GFLOP/s (flashcpu peak)" if res.peak else "no flashcpu run"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">Attention prefill, B = 1, '
           f'{threads(res)}, f32: GFLOP/s of kept work against sequence length</text>',
           f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">{res.host.get("cpu", "")}; '
           f'{peak}, {res.host.get("date", "")}</text>']
    for i, (_, _, label, colour, dash) in enumerate(SERIES):
        x, y = left + i // 2 * 370, 60 + i % 2 * 16
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 28}" y2="{y - 4}" stroke="{colour}" '
                   f'stroke-width="2.5" stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{x + 34}" y="{y}">{label}</text>')
    for row, d in enumerate((64, 128)):
        for col, causal in enumerate((False, True)):
            x0, y0 = left + col * (pw + gap_x), top + row * (ph + gap_y)
            out += panel(res, x0, y0, pw, ph, ymax, d, causal)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def panel(res, x0, y0, pw, ph, ymax, d, causal):
    def px(i):
        return x0 + 20 + i * (pw - 40) / (len(LENGTHS) - 1)

    def py(g):
        return y0 + ph - g / ymax * ph

    title = f"d = {d}, {'causal' if causal else 'no mask'}"
    out = [f'<text x="{x0 + pw / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for g in range(0, ymax + 1, 50):
        out.append(f'<line x1="{x0}" y1="{py(g):.1f}" x2="{x0 + pw}" y2="{py(g):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{py(g) + 4:.1f}" text-anchor="end">{g}</text>')
    for pct in range(0, 101, 25) if res.peak else []:
        y = py(res.peak * pct / 100)
        out.append(f'<text x="{x0 + pw + 6}" y="{y + 4:.1f}" fill="#555">{pct} %</text>')
    for i, length in enumerate(LENGTHS):
        out.append(f'<text x="{px(i):.1f}" y="{y0 + ph + 16}" text-anchor="middle">{length}</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 32}" text-anchor="middle" fill="#555">sequence length L</text>')
    out.append(f'<text transform="translate({x0 - 42},{y0 + ph / 2}) rotate(-90)" text-anchor="middle" '
               f'fill="#555">GFLOP/s</text>')
    if res.peak:
        out.append(f'<text transform="translate({x0 + pw + 48},{y0 + ph / 2}) rotate(90)" '
                   f'text-anchor="middle" fill="#555">% of peak</text>')
    for who, kv_heads, _, colour, dash in SERIES:
        points = [(px(i), py(g)) for i, length in enumerate(LENGTHS)
                  if (g := res.gflops(who, "attention", attention_shape(32, kv_heads, length, d, causal)))]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5" '
                       f'stroke-dasharray="{dash}"/>')
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    return out


def rate(res, who, op, shape):
    g = res.gflops(who, op, shape)
    if g is None:
        return ("–", "–")
    return (f"{g:.0f}", f"{100 * g / res.peak:.0f} %" if res.peak else "–")


def ratio(res, op, shape):
    ours, theirs = res.gflops("flashcpu", op, shape), res.gflops("peer", op, shape)
    return f"{ours / theirs:.2f}×" if ours and theirs else "–"


def attention_rows(res, lengths, dims):
    rows = ["| L | d | heads (q/kv) | mask | flashcpu GFLOP/s | % peak | ONNX Runtime | % peak | flashcpu / ORT |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in dims:
        for length in lengths:
            for kv_heads in (32, 8):
                for causal in (False, True):
                    shape = attention_shape(32, kv_heads, length, d, causal)
                    rows.append(f"| {length} | {d} | 32/{kv_heads} | {'causal' if causal else 'none'} | "
                                f"{' | '.join(rate(res, 'flashcpu', 'attention', shape))} | "
                                f"{' | '.join(rate(res, 'peer', 'attention', shape))} | "
                                f"{ratio(res, 'attention', shape)} |")
    return rows


def matmul_rows(res):
    rows = ["| m = n = k | flashcpu GFLOP/s | % peak | OpenBLAS | % peak | flashcpu / OpenBLAS |",
            "| --- | --- | --- | --- | --- | --- |"]
    for mkn in (1024, 2048):
        shape = f"{mkn}x{mkn}x{mkn}"
        rows.append(f"| {mkn} | {' | '.join(rate(res, 'flashcpu', 'matmul', shape))} | "
                    f"{' | '.join(rate(res, 'peer', 'matmul', shape))} | {ratio(res, 'matmul', shape)} |")
    return rows


def caption(res):
    peak = f"FMA peak {res.peak:.0f} GFLOP/s (`flashcpu peak`)" if res.peak else "FMA peak not measured"
    ours = f"flashcpu measured {res.date}" if res.date else "flashcpu not measured yet"
    rounds = f"; medians of {res.rounds} rounds" if res.rounds > 1 else ""
    return f"{res.host.get('cpu', '?')}, {threads(res)}, f32, B = 1; {ours}, peers {res.peer_date}{rounds}; {peak}."


def peer_names(res):
    names = sorted({row["impl"] for (who, _, _), rows in res.cases.items() if who == "peer" for row in rows})
    return "Peers: " + "; ".join(names) + "." if names else "Peers: none measured."


def replace_block(path, name, lines):
    """Replace the text between `<!-- generated: NAME -->` and `<!-- end: NAME -->`."""
    text = path.read_text()
    begin, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
    if begin not in text or end not in text:
        sys.exit(f"{path.name} has no '{begin}' … '{end}' block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


def main():
    ours = Path(sys.argv[1]) if len(sys.argv) > 1 else newest("flashcpu-*.jsonl")
    theirs = Path(sys.argv[2]) if len(sys.argv) > 2 else newest("peers-*.jsonl")
    if ours is None and theirs is None:
        sys.exit("nothing in benchmarks/: run scripts/bench_sweep.sh first")
    res = Results(load(ours), load(theirs))
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "prefill.svg").write_text(svg(res))
    replace_block(ROOT / "BENCHMARKS.md", "prefill",
                  [caption(res), peer_names(res), ""] + attention_rows(res, LENGTHS, (64, 128)))
    replace_block(ROOT / "BENCHMARKS.md", "matmul", [caption(res), ""] + matmul_rows(res))
    summary = attention_rows(res, [2048], [128])
    shape = "2048x2048x2048"
    summary.append(f"| matmul 2048³ | | | | {' | '.join(rate(res, 'flashcpu', 'matmul', shape))} | "
                   f"{' | '.join(rate(res, 'peer', 'matmul', shape))} (OpenBLAS) | "
                   f"{ratio(res, 'matmul', shape)} |")
    replace_block(ROOT / "README.md", "speed", [caption(res), ""] + summary)
    names = " and ".join(p.name for p in (ours, theirs) if p)
    print(f"wrote docs/prefill.svg, BENCHMARKS.md and README.md tables from {names}")


if __name__ == "__main__":
    main()
