#!/usr/bin/env bash
# The soak (integration/src/soak.rs): 10 minutes at 100 requests/s, every request a new subject,
# through ab-variant, token-budget and provider-fallback in one Envoy (RSS and filter counters
# sampled every 10 s), then 300,000 requests through the same configs in the wasmtime host
# (shared-data keys and VM memory). Fails if a request fails, the key count passes its bound,
# or memory or keys grow after warm-up. Bounded in time, loopback only; stops by itself.
#
#   scripts/soak.sh                            # the documented 10-minute run
#   scripts/soak.sh --seconds 60 --no-assert   # a quick look at the curve
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/setup.sh"
SKIP_SETUP=1 bash "$ROOT/scripts/build.sh"
cd "$ROOT"
cargo build -q -p integration --bin soak
exec "${CARGO_TARGET_DIR:-$ROOT/target}/debug/soak" "$@"
