"""Pairing ground-truth items with the files of a prediction folder: found, missing, ambiguous, extra.

Every protocol names, per ground-truth item id, the relative paths its prediction may have
(`candidates`), e.g. Marigold's `test/kitchen_0004/pred_0001.npy`, a PNG of the same stem, or the
`onegen sample --out` folder of that stem (`.../pred_0001/view_1_generated.png`). Exactly one of them must
exist: none is "missing", two are "ambiguous" (which one was meant is not ours to guess). Every other
file under the prediction folder that looks like a prediction (`looks_like`) is "extra": a prediction
without a ground-truth item, reported by path. Local folders only (os.walk).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# what `onegen sample --out` writes next to the generated view(s) (training/sample.py write_outputs)
SAMPLE_VIEW = re.compile(r"view_(\d+)(_generated)?\.png")
SAMPLE_OTHERS = ("grid.png", "cameras.json")


@dataclass
class Pairing:
    found: dict[str, str] = field(default_factory=dict)  # item id -> prediction path (absolute)
    problems: dict[str, str] = field(default_factory=dict)  # item id -> one-line reason
    extra: list[str] = field(default_factory=list)  # relative paths of predictions without an item


def relative_files(root: str) -> list[str]:
    """Every file under `root`, relative, "/"-separated, sorted."""
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/") for n in names]
    return sorted(found)


def pair_predictions(ids: Iterable[str], root: str, candidates: Callable[[str], list[str]],
                     looks_like: Callable[[str], bool]) -> Pairing:
    """Pair each item id with the one existing candidate path under `root` (module docstring)."""
    pairing = Pairing()
    present = set(relative_files(root))
    used = set()
    for item in ids:
        names = candidates(item)
        hits = [n for n in names if n in present]
        if len(hits) == 1:
            pairing.found[item] = os.path.join(root, hits[0])
            used.add(hits[0])
        elif not hits:
            pairing.problems[item] = f"no prediction (looked for {' or '.join(names)})"
        else:
            pairing.problems[item] = f"ambiguous prediction: {' and '.join(hits)} all exist"
            used.update(hits)
    pairing.extra = sorted(p for p in present - used if looks_like(p))
    return pairing


def is_sample_companion(path: str) -> bool:
    """True for the files `onegen sample` writes besides the prediction itself (given views, grid)."""
    name = path.rsplit("/", 1)[-1]
    match = SAMPLE_VIEW.fullmatch(name)
    return name in SAMPLE_OTHERS or bool(match and not match.group(2))
