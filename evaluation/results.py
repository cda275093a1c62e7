"""One evaluation run's result: a JSON document and a one-line summary.

Contract of the JSON (written atomically by `write_result`):
    {"metric": "depth" | "camera" | "nvs",
     "protocol": {...the settings that define the numbers: ranges, crop, alignment, thresholds...},
     "checkpoint": "<what made the predictions, as the user named it>" or null,
     "dataset": {"name": "nyuv2" | "diode" | "gso" | "folder", "path": "<ground truth>"},
     "predictions": "<prediction folder>",
     "summary": {"<value>": mean over the evaluated items, ...} (null values when none was evaluated),
     "counts": {"evaluated": n, "skipped": n},
     "items": [{"item": "<id>", "<value>": ..., ...}, ...]      (sorted by id),
     "skipped": [{"item": "<id>", "reason": "<one line>"}, ...]  (sorted by id)}
An item is skipped for bad input only (`ItemError`: missing / extra prediction, wrong size, no valid
pixels, NaNs); skipped items never enter the summary. Anything else raised while scoring is a bug and
propagates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ItemError(Exception):
    """One item's input cannot be scored (bad input, not a bug): the message is its one-line reason."""


@dataclass
class EvalResult:
    """What one `onegen eval` run found; `summary` is filled by `finish`."""

    metric: str
    protocol: dict[str, Any]
    dataset: str
    dataset_path: str
    predictions: str
    checkpoint: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, float | None] = field(default_factory=dict)

    def add(self, item: str, values: dict[str, Any]) -> None:
        """Record one scored item: numbers, or lists of numbers (e.g. per-camera errors), all finite (a
        NaN here is a bug: bad input must have been refused as an `ItemError` before)."""
        bad = [name for name, value in values.items()
               if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value]))]
        if bad:
            raise ValueError(f"{item}: non-finite {', '.join(bad)} reached the result: {values}")
        self.items.append({"item": item, **values})

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append({"item": item, "reason": reason})

    def finish(self, names: tuple[str, ...], summary: dict[str, float] | None = None) -> EvalResult:
        """Sort items and skips by id; the summary is the mean of each value over the scored items,
        unless the protocol's own `summary` (e.g. an accuracy pooled over cameras) is given."""
        self.items.sort(key=lambda entry: entry["item"])
        self.skipped.sort(key=lambda entry: entry["item"])
        if summary is not None:
            self.summary = dict(summary)
        else:
            self.summary = {name: (sum(e[name] for e in self.items) / len(self.items) if self.items else None)
                            for name in names}
        return self

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "protocol": self.protocol, "checkpoint": self.checkpoint,
                "dataset": {"name": self.dataset, "path": self.dataset_path}, "predictions": self.predictions,
                "summary": self.summary, "counts": {"evaluated": len(self.items), "skipped": len(self.skipped)},
                "items": self.items, "skipped": self.skipped}

    def summary_line(self, out: str) -> str:
        """`eval depth nyuv2: abs_rel 0.0512, delta1 0.9601 over 652 items (2 skipped) -> out.json`."""
        values = ", ".join(f"{name} {'n/a' if value is None else f'{value:.4f}'}"
                           for name, value in self.summary.items())
        return (f"eval {self.metric} {self.dataset}: {values} over {len(self.items)} items "
                f"({len(self.skipped)} skipped) -> {out}")


def write_result(result: EvalResult, path: str) -> None:
    """The result's JSON at `path`, atomically (manifests.files: temp name, fsync, rename)."""
    from onegen.manifests import files

    files.commit_json(path, result.to_json())
