#!/usr/bin/env bash
# Everything: lints, native tests of the filter logic, behavioural tests of the built .wasm in
# the wasmtime host, and end-to-end tests through a real Envoy. The README's test command.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/setup.sh"
SKIP_SETUP=1 bash "$ROOT/scripts/build.sh"
cd "$ROOT"
log "package (dist/, and the modules the Kubernetes wasm server serves)"
[ -f target/demo-jwt/jwks.json ] || bash scripts/mint-demo-token.sh > /dev/null
python3 scripts/package.py > /dev/null

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

log "fuzz every target for a short fixed time (scripts/fuzz.sh; a long run is --seconds 600)"
bash "$ROOT/scripts/fuzz.sh" --seconds "${FUZZ_SECONDS:-6}"

# The Envoy version matrix: the end-to-end tests through Envoy again, on the older Envoy.
envoy_tests=()
for t in integration/tests/*_envoy.rs integration/tests/fail_policy.rs integration/tests/configs.rs; do
  envoy_tests+=(--test "$(basename "$t" .rs)")
done
log "Envoy e2e tests again on Envoy $OLDER_ENVOY_VERSION (the version matrix)"
ENVOY_BIN="$OLDER_ENVOY" cargo test -q -p integration "${envoy_tests[@]}"
