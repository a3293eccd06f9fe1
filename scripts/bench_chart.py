#!/usr/bin/env python3
"""Draws the benchmark results as a PNG: requests/s (with the ratio to bare Envoy) and p99 per
scenario, in one figure beside results.md.

    bench_chart.py [RESULTS_JSON [OUT_PNG]]

Reads what integration/src/bin/bench.rs writes (target/bench/results.json by default, under
CARGO_TARGET_DIR when it is set) and writes results.png next to it. Called by scripts/bench.sh.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        results = json.load(f)
    scenarios = results.get("scenarios") or []
    if not scenarios:
        raise SystemExit(f"{path}: no scenarios")
    return results.get("settings", {}), scenarios


def draw(settings, scenarios, out):
    names = [s["name"] for s in scenarios]
    rps = [float(s["rps"]) for s in scenarios]
    p99 = [float(s["p99_ms"]) for s in scenarios]
    bare = next((float(s["rps"]) for s in scenarios if s["name"] == "bare"), None)

    height = max(3.0, 0.38 * len(names) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, height), sharey=True, gridspec_kw={"wspace": 0.05})
    ys = range(len(names))

    colours = ["#7f7f7f" if n == "bare" else "#1f77b4" for n in names]
    left.barh(ys, rps, color=colours)
    left.set_xlabel("requests/s (median of rounds)")
    left.set_yticks(list(ys), names)
    left.invert_yaxis()
    for y, value in zip(ys, rps):
        label = f"{value:,.0f}"
        if bare:
            label += f"  ({value / bare:.2f}× bare)"
        left.text(value, y, " " + label, va="center", fontsize=8)
    left.set_xlim(0, max(rps) * 1.45 if rps else 1)
    left.set_title("Throughput, ratio to bare Envoy")

    right.barh(ys, p99, color="#d62728")
    right.set_xlabel("p99 latency (ms)")
    for y, value in zip(ys, p99):
        right.text(value, y, f" {value:.2f} ms", va="center", fontsize=8)
    right.set_xlim(0, max(p99) * 1.3 if p99 else 1)
    right.set_title("p99 latency")

    detail = ", ".join(f"{k} {v}" for k, v in settings.items())
    fig.suptitle(f"Filter benchmarks ({detail})" if detail else "Filter benchmarks", fontsize=10, y=1.04)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target")
    results = argv[1] if len(argv) > 1 else os.path.join(target, "bench", "results.json")
    out = argv[2] if len(argv) > 2 else os.path.join(os.path.dirname(results), "results.png")
    settings, scenarios = load(results)
    draw(settings, scenarios, out)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
