#!/usr/bin/env bash
# Builds the filters: target/wasm32-wasip1/release/<filter>.wasm, optimised for size with
# wasm-opt -Oz after cargo's size profile.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "${SKIP_SETUP:-}" = 1 ] || bash "$ROOT/scripts/setup.sh"

args=()
for f in "${FILTERS[@]}" "${TEST_FILTERS[@]}"; do args+=(-p "$f"); done
log "cargo build --release --target wasm32-wasip1 ${args[*]}"
(cd "$ROOT" && cargo build --release --target wasm32-wasip1 "${args[@]}")

for f in "${FILTERS[@]}" "${TEST_FILTERS[@]}"; do
  wasm="$WASM_DIR/${f//-/_}.wasm"
  stamp="$wasm.opt-sha256"
  # cargo rewrites the file only when sources change; optimise each new build once.
  if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum "$wasm" | cut -d' ' -f1)" ]; then
    before=$(stat -c %s "$wasm")
    "$TOOLS/node_modules/.bin/wasm-opt" -Oz --enable-bulk-memory --enable-sign-ext \
      --enable-nontrapping-float-to-int --enable-mutable-globals --strip-producers \
      "$wasm" -o "$wasm.tmp"
    mv "$wasm.tmp" "$wasm"
    sha256sum "$wasm" | cut -d' ' -f1 > "$stamp"
    log "$(basename "$wasm"): $before -> $(stat -c %s "$wasm") bytes"
  fi
done
