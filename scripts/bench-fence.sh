#!/usr/bin/env bash
# Benchmark: how soon a `weft serve` node cut off from PostgreSQL fences
# itself (kills its task processes), how soon the others take its work
# over, and what the heartbeat's own connection costs. Needs PostgreSQL on
# 127.0.0.1:5432 (database `test`) and the test venv (`.venv`), as the
# tests do; curl.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! .venv/bin/python -c 'import render' 2>/dev/null; then
  python3 -m venv .venv && .venv/bin/pip install --quiet --disable-pip-version-check render==1.5.0
fi
export WEFT_PYTHON="$PWD/.venv/bin/python"
cargo bench --quiet -p weft-workflows-cli --bench fence
