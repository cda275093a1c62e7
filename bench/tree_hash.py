"""A short sha256 of onegen's packaged source: pyproject.toml and every file of its package folders.

bench/device_wheels.sh writes it (computed on the copy it builds the onegen wheel from) into the wheel set's
BUILD file; bench/gpu_suite.sh --wheels computes it on the tree it runs from and refuses a wheel set built from
another tree, so a loan never measures stale code. Bytecode caches are left out (they come and go).

    python bench/tree_hash.py [ROOT]      # ROOT: a checkout or a copy of one (default: this repository)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import tomllib


def tree_hash(root: Path) -> str:
    """16 hex digits over the relative path and bytes of each packaged file, in sorted path order."""
    pyproject = root / "pyproject.toml"
    folders = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"].values()
    files = {pyproject}
    for folder in folders:
        files |= {p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    print(tree_hash(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])))
