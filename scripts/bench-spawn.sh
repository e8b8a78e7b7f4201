#!/usr/bin/env bash
# Benchmark: a root task fanning out to N no-op Rust children
# (crates/weft/examples/fan_out), each child its own process, started three
# ways on three `weft dev` side by side, alternating, ROUNDS times each:
#   spawner   the default: forked by weft's spawner, one exec
#   launcher  WEFT_SPAWNER=off: the weft binary spawned, then the exec
#   fork      WEFT_LAUNCHER=off: the runtime forks itself
# Prints wall seconds per run, the runtime's own CPU (user+sys) per child,
# and the whole machine's busy CPU per child (every process: the runtime,
# the spawner, the task processes, the kernel's work for them).
#   scripts/bench-spawn.sh [N=1000] [ROUNDS=3] [extra weft dev args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
N="${1:-1000}"; ROUNDS="${2:-3}"; shift $(( $# < 2 ? $# : 2 ))
cargo build --release --quiet -p weft-workflows-cli -p weft-workflows --bins --examples
R="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
modes=(spawner launcher fork)
port_of() { case $1 in spawner) echo 8411 ;; launcher) echo 8412 ;; fork) echo 8413 ;; esac; }
start() { # mode [weft dev args...]
  local mode=$1; shift
  local env=()
  case $mode in launcher) env=(WEFT_SPAWNER=off) ;; fork) env=(WEFT_LAUNCHER=off) ;; esac
  env "${env[@]}" "$R/weft" dev --quiet --port "$(port_of "$mode")" --db "$work/$mode.db" "$@" \
    -- "$R/examples/fan_out" >"$work/$mode.log" 2>&1 &
}
for mode in "${modes[@]}"; do start "$mode" "$@"; done
sleep 2
for mode in "${modes[@]}"; do
  "$R/weft" run fan_out "[10]" --url "http://127.0.0.1:$(port_of "$mode")" >/dev/null 2>&1
done
cpu() { awk '{print $14+$15}' "/proc/$(pgrep -f "port $1 " | head -1)/stat"; }
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
printf '| spawn | run | wall (s) | runtime CPU per child (ms) | machine CPU per child (ms) |\n|---|---:|---:|---:|---:|\n'
for round in $(seq "$ROUNDS"); do
  for mode in "${modes[@]}"; do
    port=$(port_of "$mode")
    before=$(cpu "$port"); b0=$(busy); t0=$(date +%s.%N)
    "$R/weft" run fan_out "[$N]" --url "http://127.0.0.1:$port" >/dev/null 2>&1
    t1=$(date +%s.%N); after=$(cpu "$port"); b1=$(busy)
    awk -v m="$mode" -v r="$round" -v w="$(echo "$t1 - $t0" | bc)" -v c=$((after - before)) \
      -v b=$((b1 - b0)) -v n="$N" \
      'BEGIN { printf "| %s | %d | %.2f | %.2f | %.2f |\n", m, r, w, c * 10 / n, b * 10 / n }'
  done
done
