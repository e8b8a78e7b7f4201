#!/usr/bin/env bash
# Builds everything a release ships into dist/ (README: "Install"):
#
#   weft_workflows-VERSION-py3-none-manylinux_2_28_x86_64.whl
#       the `weft` binary and the pytest fixture, for pip; built by maturin
#       with zig as the linker against glibc 2.28 (no Docker), so it runs on
#       any Linux distribution with glibc 2.28 or newer
#   weft-workflows-VERSION.tgz, weft-workflows-linux-x64-VERSION.tgz
#       the npm package (`bin`: weft) and its per-platform package with the
#       binary (esbuild's and biome's pattern)
#   weft-VERSION-x86_64-unknown-linux-gnu.tar.gz (+ .sha256)
#       the same stripped binary, with LICENSE and README
#   crates/*.crate
#       the Rust crates as `cargo publish` would upload them (checked by
#       building them from the packages, unless NO_VERIFY=1)
#   SIZES.md
#       what each artifact weighs
#
# This machine builds x86_64 Linux only. The layout is ready for a CI
# matrix (aarch64 Linux with TARGET=aarch64-unknown-linux-gnu, macOS on a
# macOS runner with TARGET=aarch64-apple-darwin or x86_64-apple-darwin): each
# adds its wheel and its npm platform package; the main npm package lists
# the platform packages built (PLATFORMS below).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
TARGET="${TARGET:-x86_64-unknown-linux-gnu}"
MANYLINUX="${MANYLINUX:-manylinux_2_28}"
DIST="${DIST:-$PWD/dist}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# The packaging tools, from PyPI: maturin, zig (the `ziglang` wheel) and
# auditwheel, in the project's venv.
py=.venv/bin/python
if ! $py -c 'import maturin, ziglang, auditwheel' 2>/dev/null; then
  echo "==> preparing .venv (maturin, ziglang, auditwheel)"
  [ -x $py ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'maturin>=1.7,<2' ziglang auditwheel
fi
export PATH="$PWD/.venv/bin:$PATH"

rm -rf "$DIST"; mkdir -p "$DIST"
case "$TARGET" in
  x86_64-unknown-linux-gnu) npm_platform=linux-x64; npm_os=linux; npm_cpu=x64 ;;
  aarch64-unknown-linux-gnu) npm_platform=linux-arm64; npm_os=linux; npm_cpu=arm64 ;;
  x86_64-apple-darwin) npm_platform=darwin-x64; npm_os=darwin; npm_cpu=x64 ;;
  aarch64-apple-darwin) npm_platform=darwin-arm64; npm_os=darwin; npm_cpu=arm64 ;;
  *) echo "package.sh: no npm platform for TARGET=$TARGET"; exit 2 ;;
esac

echo "==> wheel ($TARGET, $MANYLINUX, maturin --zig)"
zig=(); compat=()
case "$TARGET" in *linux*) zig=(--zig); compat=(--compatibility "$MANYLINUX") ;; esac
(cd packaging/python && maturin build --release --quiet --target "$TARGET" "${zig[@]}" "${compat[@]}" --out "$DIST")
wheel=$(ls "$DIST"/*.whl)
case "$TARGET" in *linux*) auditwheel show "$wheel" | tr -s ' \n' ' ' | fold -s -w 100; echo ;; esac

# The binary is taken from the wheel, so every artifact carries the same one.
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
$py - "$wheel" "$stage/weft" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/weft"))
    open(sys.argv[2], "wb").write(z.read(name))
PY
chmod 755 "$stage/weft"

echo "==> binary"
archive="weft-$version-$TARGET"
mkdir "$stage/$archive"
cp "$stage/weft" LICENSE README.md "$stage/$archive/"
tar -C "$stage" -czf "$DIST/$archive.tar.gz" "$archive"
(cd "$DIST" && sha256sum "$archive.tar.gz" >"$archive.tar.gz.sha256")

echo "==> npm packages ($npm_platform)"
platform_pkg="$stage/npm-platform"
mkdir -p "$platform_pkg/bin"
cp "$stage/weft" "$platform_pkg/bin/weft"
cp LICENSE "$platform_pkg/"
sed -e "s/{{name}}/weft-workflows-$npm_platform/" -e "s/{{platform}}/$npm_os $npm_cpu/" \
  packaging/npm/platform/README.md >"$platform_pkg/README.md"
libc=""; [ "$npm_os" = linux ] && libc=', "libc": ["glibc"]'
cat >"$platform_pkg/package.json" <<JSON
{
  "name": "weft-workflows-$npm_platform",
  "version": "$version",
  "description": "The weft binary of weft-workflows for $npm_os $npm_cpu",
  "license": "Apache-2.0",
  "os": ["$npm_os"],
  "cpu": ["$npm_cpu"]$libc,
  "files": ["bin/weft", "README.md", "LICENSE"],
  "preferUnplugged": true
}
JSON
main_pkg="$stage/npm-main"
cp -r packaging/npm/weft-workflows "$main_pkg"
cp LICENSE "$main_pkg/"
# The main package names the platform packages this build made (a CI
# matrix passes them all in PLATFORMS), at the same version.
PLATFORMS="${PLATFORMS:-$npm_platform}"
node -e '
  const fs = require("fs"); const [file, version, platforms] = process.argv.slice(1);
  const pkg = JSON.parse(fs.readFileSync(file, "utf8"));
  pkg.version = version;
  pkg.optionalDependencies = Object.fromEntries(platforms.split(/[ ,]+/).filter(Boolean).map((p) => [`weft-workflows-${p}`, version]));
  fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + "\n");
' "$main_pkg/package.json" "$version" "$PLATFORMS"
(cd "$DIST" && npm pack --silent "$platform_pkg" >/dev/null && npm pack --silent "$main_pkg" >/dev/null)

echo "==> crates (cargo package)"
verify=(); [ "${NO_VERIFY:-0}" = 1 ] && verify=(--no-verify)
# cargo verifies each crate against the others through a local registry:
# it unpacks them under $CARGO_HOME and builds them in the target folder by
# name and version, and takes an earlier run's unpacked copy and build of
# the same version as they are (a registry's crates never change). So ours
# go first, and the verification builds them afresh.
rm -rf "$CARGO_TARGET_DIR/package" "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/weft-workflows-"$version" \
  "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/weft-workflows-*-"$version" \
  "$CARGO_TARGET_DIR"/debug/.fingerprint/weft-workflows-*
cargo package --quiet --workspace --exclude customer-etl --allow-dirty "${verify[@]}"
mkdir -p "$DIST/crates"
cp "$CARGO_TARGET_DIR"/package/*-"$version".crate "$DIST/crates/"

{
  echo "| artifact | size |"
  echo "|---|---:|"
  for f in "$DIST"/*.whl "$DIST"/*.tgz "$DIST"/*.tar.gz "$DIST"/crates/*.crate; do
    echo "| $(basename "$f") | $(du -k "$f" | awk '{ if ($1 >= 1024) printf "%.1f MB", $1 / 1024; else printf "%d kB", $1 }') |"
  done
  echo "| the \`weft\` binary, stripped | $(du -k "$stage/weft" | awk '{ if ($1 >= 1024) printf "%.1f MB", $1 / 1024; else printf "%d kB", $1 }') |"
} >"$DIST/SIZES.md"
cat "$DIST/SIZES.md"
