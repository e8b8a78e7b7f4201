#!/usr/bin/env bash
# The whole test suite, from a fresh clone: prepares what it needs (a Python
# venv with the official Render SDK, PostgreSQL running), then checks
# formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A build cache outside the clone makes repeated runs fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Python with the official SDKs (`render` 1.5.0, and the older `render_sdk`
# 0.8.0 the tutorial was written for), the readers the pipeline's tests use
# to check its output, moto's S3 server (with boto3, an independent S3
# client) for the pipeline's object-storage tests, and OpenTelemetry's
# protobuf definitions and Python SDK for the trace tests (a receiver that
# decodes what weft exports, a task that exports spans of its own).
if ! .venv/bin/python -c 'import render, render_sdk, pyarrow, duckdb, moto.server, boto3, opentelemetry.proto, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  echo "==> preparing .venv (render==1.5.0, render_sdk==0.8.0, pyarrow, duckdb, moto[server], opentelemetry)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check render==1.5.0 render_sdk==0.8.0 pyarrow duckdb 'moto[server]' \
    opentelemetry-proto opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
fi
export WEFT_PYTHON="$PWD/.venv/bin/python"

# The newest TypeScript SDK is not on the npm registry here; its tests run
# when WEFT_TS_SDK_DIR names a build of it (README: "TypeScript").
if [ -z "${WEFT_TS_SDK_DIR:-}" ]; then
  echo "==> WEFT_TS_SDK_DIR is not set: the tests on @renderinc/sdk 1.x are ignored"
fi

# The dashboard's browser tests: Debian's chromium (never a downloaded
# browser) driven by playwright-core from the npm registry.
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium (apt)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q chromium >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
if [ ! -d crates/weft-cli/tests/browser/node_modules/playwright-core ]; then
  echo "==> installing playwright-core (npm ci)"
  (cd crates/weft-cli/tests/browser && npm ci --no-audit --no-fund --silent)
fi

# PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "==> cargo test"
cargo test --workspace "$@"
# Tests that need what not every machine has are ignored by default (the
# runner counts them as ignored, not passed); where it is here, they run.
if [ -n "${WEFT_TS_SDK_DIR:-}" ]; then
  echo "==> cargo test: the tests on @renderinc/sdk 1.x (WEFT_TS_SDK_DIR)"
  cargo test -p weft-workflows-cli --test typescript_sdk --test init -- --ignored
fi
