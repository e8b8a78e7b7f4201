#!/usr/bin/env bash
# The release's packages, built and tried as a user would install them:
# scripts/package.sh builds dist/ (a release build with zig: about ten
# minutes on two cores, which is why the main suite leaves these tests
# ignored), then the ignored tests of crates/weft-cli/tests/packages.rs run
# against it. The TypeScript template's test runs when WEFT_TS_SDK_DIR
# names a build of @renderinc/sdk 1.x (README: "TypeScript").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
./scripts/package.sh
skip=()
if [ -z "${WEFT_TS_SDK_DIR:-}" ]; then
  echo "==> WEFT_TS_SDK_DIR is not set: the TypeScript template's test is left out"
  skip=(--skip the_typescript_template_runs_on_npx_weft)
fi
WEFT_PYTHON="${WEFT_PYTHON:-$PWD/.venv/bin/python}" \
  cargo test -p weft-workflows-cli --test packages -- --ignored "${skip[@]}"
