#!/usr/bin/env bash
# Benchmark: run_task wall time for a Python parent fanning out to N
# children, on a release build of weft. Usage: scripts/bench-fanout.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
children="${1:-10}"; runs="${2:-20}"
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install --quiet render==1.5.0; }
cargo build --release --quiet -p weft-workflows-cli
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
"$CARGO_TARGET_DIR/release/weft" dev --quiet --port 0 --db "$dir/weft.db" -- .venv/bin/python examples/python-app/app.py 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do grep -q 'serving the Render Workflows API on' "$dir/log" && break; sleep 0.1; done
url=$(grep -o 'serving the Render Workflows API on [^ ]*' "$dir/log" | awk '{print $NF}')
.venv/bin/python bench/fanout.py --url "$url" --children "$children" --runs "$runs"
