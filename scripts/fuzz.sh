#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (libFuzzer, nightly Rust), each for a fixed time, and
# prints the executions of each. A crash stops the run with libFuzzer's report; the input is
# kept in fuzz/artifacts/<target>/ (the README, "Fuzzing", says how to reproduce it).
#
#   scripts/fuzz.sh                      # every target, 6 s each (what CI runs)
#   scripts/fuzz.sh --seconds 600        # the long run: 10 minutes per target
#   scripts/fuzz.sh --seconds 60 pf_response_sse tb_usage
#
# The working corpus grows in $CARGO_TARGET_DIR/fuzz-corpus/<target> (kept between runs on a
# machine); the committed seeds in fuzz/seeds/<target> are read as a second corpus.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

seconds=6
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

export PATH="$TOOLS/bin:$PATH"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: run scripts/setup.sh" >&2; exit 1; }
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

log "cargo fuzz build (${#targets[@]} targets)"
# -O: optimised; -a: debug assertions on, so arithmetic overflow is found; -s none: no
# sanitizer (safe Rust; about 5 times the executions of AddressSanitizer in the same time).
flags=(--fuzz-dir fuzz --target-dir "$target_dir" -O -a -s none)
cargo +nightly fuzz build "${flags[@]}"

total=0
report=()
for t in "${targets[@]}"; do
  corpus="$target_dir/fuzz-corpus/$t"
  mkdir -p "$corpus" "fuzz/seeds/$t"
  out="$target_dir/fuzz-logs/$t.log"
  mkdir -p "$(dirname "$out")"
  log "fuzz $t for ${seconds}s"
  # -rss_limit_mb: an input that makes a filter's memory grow without bound is a failure.
  # -timeout: so is one that takes seconds.
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 -print_final_stats=1 > "$out" 2>&1; then
    tail -60 "$out" >&2
    echo "fuzz: $t FAILED (log: $out; the crashing input is in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)"
  corpus_size="$(find "$corpus" -type f | wc -l)"
  total=$((total + ${runs:-0}))
  report+=("$(printf '%-22s %12s executions  %6s corpus inputs' "$t" "${runs:-?}" "$corpus_size")")
done
printf '%s\n' "${report[@]}"
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, $total executions, no crash"
# The plain closing line test runners print (each target is one test: it found no crash).
echo "fuzz: ${#targets[@]} passed, 0 failed"
