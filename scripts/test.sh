#!/usr/bin/env bash
# Everything: lints, native tests of the filter logic, behavioural tests of the built .wasm in
# the wasmtime host, and end-to-end tests through a real Envoy. The README's test command.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/setup.sh"
SKIP_SETUP=1 bash "$ROOT/scripts/build.sh"
cd "$ROOT"

args=()
for f in "${FILTERS[@]}"; do args+=(-p "$f"); done
log "clippy (filters for wasm32-wasip1 with unwrap/expect/panic denied; everything natively)"
cargo clippy --release --target wasm32-wasip1 -q "${args[@]}" -p filter-common -- -D warnings
cargo clippy --workspace --all-targets -q -- -D warnings

log "cargo test --workspace (native logic tests, wasmtime host tests, Envoy e2e)"
cargo test --workspace -q "$@"

log "logic tests again as wasm32-wasip1, run by wasmtime (integration/src/bin/wasi-run.rs)"
cargo build -q -p integration --bin wasi-run
CARGO_TARGET_WASM32_WASIP1_RUNNER="${CARGO_TARGET_DIR:-$ROOT/target}/debug/wasi-run" \
  cargo test -q --target wasm32-wasip1 -p filter-common "${args[@]}"
