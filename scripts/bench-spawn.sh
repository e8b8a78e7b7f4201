#!/usr/bin/env bash
# Benchmark: a root task fanning out to N no-op Rust children
# (crates/weft/examples/fan_out), each child its own process, with task
# processes spawned through weft's launcher (the default) and forked
# (WEFT_LAUNCHER=off), alternating, ROUNDS times each. Prints wall seconds
# per run and the runtime's own CPU (user+sys) per child.
#   scripts/bench-spawn.sh [N=1000] [ROUNDS=3] [extra weft dev args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
N="${1:-1000}"; ROUNDS="${2:-3}"; shift $(( $# < 2 ? $# : 2 ))
cargo build --release --quiet -p weft-cli -p weft --bins --examples
R="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
start() { # mode port [weft dev args...]
  local mode=$1 port=$2; shift 2
  if [ "$mode" = fork ]; then export WEFT_LAUNCHER=off; else unset WEFT_LAUNCHER; fi
  "$R/weft" dev --quiet --port "$port" --db "$work/$mode.db" "$@" -- "$R/examples/fan_out" >"$work/$mode.log" 2>&1 &
  unset WEFT_LAUNCHER
}
start launcher 8411 "$@"; start fork 8412 "$@"
sleep 2
cpu() { awk '{print $14+$15}' "/proc/$(pgrep -f "port $1 " | head -1)/stat"; }
printf '| spawn | run | wall (s) | runtime CPU per child (ms) |\n|---|---:|---:|---:|\n'
for round in $(seq "$ROUNDS"); do
  for mode in launcher fork; do
    port=$([ $mode = launcher ] && echo 8411 || echo 8412)
    before=$(cpu $port); t0=$(date +%s.%N)
    "$R/weft" run fan_out "[$N]" --url "http://127.0.0.1:$port" >/dev/null 2>&1
    t1=$(date +%s.%N); after=$(cpu $port)
    awk -v m=$mode -v r=$round -v w="$(echo "$t1 - $t0" | bc)" -v c=$((after - before)) -v n="$N" \
      'BEGIN { printf "| %s | %d | %.2f | %.2f |\n", m, r, w, c * 10 / n }'
  done
done
