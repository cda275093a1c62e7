#!/usr/bin/env bash
# The wheel set that bench/gpu_suite.sh installs on the GPU machine, downloaded and built here.
#
# That machine's image (Python 3.12, torch 2.11; bench/device/image-packages.txt) can download nothing, so every
# package the suite needs beyond the image travels as a wheel with the source tree. This writes into DIR:
#   - exactly the wheels of bench/device/wheels.txt, for CPython 3.12 on manylinux x86-64 (pip download, no deps);
#   - onegen itself, built as a wheel from this tree (tracked and untracked-but-not-ignored files, the same files
#     the device tool sends), in a temporary copy so that no stale build/ folder can leak into it;
#   - BUILD: one line naming the tree the onegen wheel was built from, with its bench/tree_hash.py hash (the suite
#     records the line with every result and refuses the set on a tree with another hash).
# Older wheels in DIR are removed first (two versions of one package would stop the install). It prints each
# wheel's size and the total, and fails if the total passes 32 MiB (what travels is 64 MiB in all).
#
#   bench/device_wheels.sh                 # -> bench/wheels/ (git-ignored)
#   bench/device_wheels.sh --out DIR
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=bench/wheels
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift ;;
    *) echo "device_wheels.sh: unknown argument $1 (use --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python3}"
LIMIT_BYTES=$((32 * 1024 * 1024))

mkdir -p "$OUT"
rm -f "$OUT"/*.whl "$OUT/BUILD"

# The image's interpreter and platform; pip matches manylinux_2_N exactly, so name the tags these wheels use.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$OUT" -r bench/device/wheels.txt

SRC=$(mktemp -d "${TMPDIR:-/tmp}/onegen-wheel-src-XXXXXX")
trap 'rm -rf "$SRC"' EXIT
# Files that exist (a tracked file deleted in the work tree is not part of the tree being built).
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -f "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$SRC"
# A setuptools here that builds wheels by itself (>= 70.1) builds it offline; otherwise pip fetches one.
ISOLATION=--no-build-isolation
"$PY" -c "import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1))" \
  2>/dev/null || ISOLATION=
"$PY" -m pip wheel --quiet --no-deps $ISOLATION -w "$OUT" "$SRC" >/dev/null
echo "onegen $(git describe --always --dirty --abbrev=12) built $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
  "tree $("$PY" bench/tree_hash.py "$SRC")" >"$OUT/BUILD"

wanted=$(grep -cvE '^\s*(#|$)' bench/device/wheels.txt)
got=$(find "$OUT" -maxdepth 1 -name '*.whl' | wc -l)
if [ "$got" != $((wanted + 1)) ]; then
  echo "device_wheels.sh: $got wheels in $OUT, expected $wanted listed + onegen" >&2
  exit 1
fi
total=0
for wheel in "$OUT"/*.whl; do
  size=$(stat -c %s "$wheel")
  total=$((total + size))
  printf '%10d  %s\n' "$size" "$(basename "$wheel")"
done
printf '%10d  total (%s MiB) in %s, %s\n' "$total" "$(awk "BEGIN {printf \"%.1f\", $total / 1048576}")" "$OUT" \
  "$(cat "$OUT/BUILD")"
if [ "$total" -gt "$LIMIT_BYTES" ]; then
  echo "device_wheels.sh: the wheel set is over $((LIMIT_BYTES / 1048576)) MiB" >&2
  exit 1
fi
