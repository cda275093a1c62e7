#!/usr/bin/env bash
# A Python 3.12 venv that stands in, on a machine without a GPU, for the GPU machine's image as the suite sees it:
# only the image's packages that bench/gpu_suite.sh imports (bench/device/image-pins.txt, each installed with
# --no-deps, so nothing the image lacks slips in as a dependency), plus pip. The wheel set of
# bench/device_wheels.sh is not in it: gpu_suite.sh --wheels installs that, as it does on the machine.
#
# torch there is 2.11.0+cu130; the same version installs here from PyPI as its CUDA-13 build, which loads the
# CUDA 13 libraries at import even on a CPU. They are not installed into the venv (gigabytes): set
# LD_LIBRARY_PATH to the lib folders of an installed `nvidia` package before running it
# (tests/training/test_gpu_suite.py takes those of the interpreter running the tests).
#
#   bench/image_venv.sh VENV [PYTHON3.12]     # default: ~/.pyenv/versions/3.12.1/bin/python3, else python3.12
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${1:?usage: bench/image_venv.sh VENV [PYTHON3.12]}"
BASE="${2:-}"
if [ -z "$BASE" ]; then
  BASE="$HOME/.pyenv/versions/3.12.1/bin/python3"
  [ -x "$BASE" ] || BASE=$(command -v python3.12 || true)
fi
if [ -z "$BASE" ] || ! "$BASE" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
  echo "image_venv.sh: no Python 3.12 found (give one as the second argument)" >&2
  exit 2
fi

# pip from the interpreter's own bundled wheel, not compiled: seconds instead of ensurepip's tens of seconds
"$BASE" -m venv --without-pip "$VENV"
PIP_WHEEL=$(ls "$("$BASE" -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))')"/_bundled/pip-*.whl)
"$VENV/bin/python" "$PIP_WHEEL/pip" install --quiet --no-index --no-deps --no-compile "$PIP_WHEEL"
"$VENV/bin/python" -m pip install --quiet --no-deps --no-compile --only-binary=:all: -r bench/device/image-pins.txt
