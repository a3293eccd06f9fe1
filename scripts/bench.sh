#!/usr/bin/env bash
# Benchmarks every filter against a bare Envoy and an empty proxy-wasm filter (and the native
# filters doing the same jobs), in one interleaved run. Results: target/bench/results.md (and
# results.json), charted in target/bench/results.png.
# Options pass through: --seconds N --rounds N --connections N --only a,b
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/setup.sh"
SKIP_SETUP=1 bash "$ROOT/scripts/build.sh"
cd "$ROOT"
cargo run -q -p integration --bin bench -- "$@"
"$VENV/bin/python" "$ROOT/scripts/bench_chart.py"
