#!/usr/bin/env bash
# Benchmark: weft serve nodes on PostgreSQL next to weft dev on SQLite
# (fan-out throughput, claim latency, cross-node wake, the 100k ETL).
# Needs PostgreSQL on 127.0.0.1:5432 (database `test`), as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
cargo build --release --quiet -p weft-workflows-cli -p customer-etl -p weft-workflows --examples --bins
cargo bench --quiet -p weft-workflows-cli --bench cluster
