#!/usr/bin/env bash
# Benchmark: time to first render of the dashboard (10,000 runs on `/`, a
# 1,000-child tree on `/runs/{id}`) in Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
export WEFT_PYTHON="${WEFT_PYTHON:-$PWD/.venv/bin/python}"
[ -d crates/weft-cli/tests/browser/node_modules/playwright-core ] ||
  (cd crates/weft-cli/tests/browser && npm ci --no-audit --no-fund --silent)
cargo bench --quiet -p weft-workflows-cli --bench dashboard
