# Shared helpers for the scripts in this directory. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"
WASM_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/wasm32-wasip1/release"
BINARYEN_VERSION="132.0.0"
# The older Envoy of the version matrix (README, "Envoy versions"), in its own virtualenv; the
# Envoy e2e tests run against it too. Envoy Gateway 1.6 ships Envoy 1.36.
OLDER_ENVOY_VERSION="1.36.4"
OLDER_ENVOY="$TOOLS/envoy-$OLDER_ENVOY_VERSION/bin/envoy"
CARGO_FUZZ_VERSION="0.13.2"

# The filter crates and the artifacts they build (crate name -> target/.../<artifact>.wasm).
FILTERS=(ab-variant token-budget jwt-claims provider-fallback)
# Built like the filters, for the tests only: the empty-filter baseline and a trapping build.
TEST_FILTERS=(test-filter)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Runs a command as root (CI and these machines run as root; elsewhere sudo is asked for).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
