# Redis and envoyproxy/ratelimit for the local gateway in token-budget's global mode
# (envoy-config/local/envoy-global.yaml). Source it after lib.sh, in a script that keeps the
# PIDs it starts in the array `pids` and stops them on exit (scripts/run-local.sh --global):
#
#   source "$ROOT/scripts/ratelimit-local.sh"
#   start_ratelimit "$RUN_DIR" envoy-config/local/envoy-global.yaml
#
# Redis listens only on a unix socket in the run directory, without persistence. The service
# listens on 127.0.0.1: gRPC on 18091 (the bootstrap's `ratelimit` cluster), HTTP on 18092
# (/healthcheck) and debug on 18093 (/rlconfig dumps the loaded limits). Its descriptor config
# is generated from the bootstrap's token-budget configuration by scripts/ratelimit-config.py.
# The settings mirror integration/src/ratelimit.rs, which starts the same pair for the tests.

RATELIMIT_GRPC_PORT="${RATELIMIT_GRPC_PORT:-18091}"
RATELIMIT_HTTP_PORT="${RATELIMIT_HTTP_PORT:-18092}"
RATELIMIT_DEBUG_PORT="${RATELIMIT_DEBUG_PORT:-18093}"

start_ratelimit() { # run_dir bootstrap
  local dir="$1" bootstrap="$2"
  local config="$dir/runtime/ratelimit/config"
  mkdir -p "$config"
  "$VENV/bin/python" "$ROOT/scripts/ratelimit-config.py" --from "$bootstrap" --out-dir "$config"

  redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" --dir "$dir" &
  pids+=($!)
  local i
  for i in $(seq 1 100); do
    [ "$(redis-cli -s "$dir/redis.sock" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  [ "$(redis-cli -s "$dir/redis.sock" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start" >&2; cat "$dir/redis.log" >&2; return 1; }

  env -i PATH="$PATH" \
    RUNTIME_ROOT="$dir/runtime" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_WATCH_ROOT=false RUNTIME_IGNOREDOTFILES=true \
    USE_STATSD=false LOG_LEVEL=warn LOCAL_CACHE_SIZE_IN_BYTES=0 \
    REDIS_SOCKET_TYPE=unix REDIS_URL="$dir/redis.sock" REDIS_TIMEOUT=2s \
    GRPC_HOST=127.0.0.1 GRPC_PORT="$RATELIMIT_GRPC_PORT" HOST=127.0.0.1 PORT="$RATELIMIT_HTTP_PORT" \
    DEBUG_HOST=127.0.0.1 DEBUG_PORT="$RATELIMIT_DEBUG_PORT" \
    "$TOOLS/bin/service_cmd" > "$dir/ratelimit.log" 2>&1 &
  pids+=($!)
  local pid=$!
  for i in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RATELIMIT_HTTP_PORT/healthcheck" 2>/dev/null)" = 200 ] && \
       [ -n "$(curl -s "http://127.0.0.1:$RATELIMIT_DEBUG_PORT/rlconfig" 2>/dev/null)" ]; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the rate limit service did not become ready (config loaded, /healthcheck 200)" >&2
  cat "$dir/ratelimit.log" >&2
  return 1
}
