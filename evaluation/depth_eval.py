"""`onegen eval depth`: a folder of depth predictions against NYUv2 / DIODE / a plain folder (Marigold's
protocol; the metrics and what we changed are in depth_metrics.py, the layouts in depth_datasets.py).

Every ground-truth item is paired with its prediction (pairing.py); a missing, ambiguous or unreadable
prediction, a wrong size, NaNs or a ground truth without valid pixels make the item a skip with its
reason, and every prediction without a ground-truth item is a skip too ("extra prediction"). The summary
is the mean of the per-image AbsRel and delta1 over the scored images only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from onegen.core.errors import PathError
from onegen.evaluation.depth_datasets import (
    LAYOUTS,
    load_ground_truth,
    looks_like_depth_prediction,
    prediction_candidates,
    read_depth_prediction,
)
from onegen.evaluation.depth_metrics import DIODE, NYUV2, DepthProtocol, score_depth
from onegen.evaluation.pairing import pair_predictions
from onegen.evaluation.results import EvalResult, ItemError

PROTOCOLS = {"nyuv2": NYUV2, "diode": DIODE, "folder": DepthProtocol("folder", 0.0, float("inf"))}


@dataclass(frozen=True)
class DepthEvalConfig:
    """One run: ground truth `gt` of layout `dataset`, `predictions` folder, what the predictions hold
    ("inverse": grey inverse depth as `onegen sample --task image2depth` writes it; "depth"), and the
    depth range of a plain folder (`min_depth`, `max_depth`; NYUv2 and DIODE keep Marigold's)."""

    gt: str
    predictions: str
    dataset: str = "nyuv2"
    prediction: str = "inverse"
    min_depth: float | None = None
    max_depth: float | None = None
    checkpoint: str | None = None

    def protocol(self) -> DepthProtocol:
        protocol = PROTOCOLS[self.dataset]
        if self.dataset != "folder" and (self.min_depth is not None or self.max_depth is not None):
            raise PathError(f"--min-depth / --max-depth are for --dataset folder; {self.dataset} uses "
                            f"Marigold's range ({protocol.min_depth:g}, {protocol.max_depth:g})")
        return replace(protocol, min_depth=protocol.min_depth if self.min_depth is None else self.min_depth,
                       max_depth=protocol.max_depth if self.max_depth is None else self.max_depth)


def evaluate_depth(config: DepthEvalConfig) -> EvalResult:
    """Score every ground-truth item of `config` (module docstring); PathError for an unusable folder."""
    protocol = config.protocol()
    for path, what in ((config.gt, "--gt folder"), (config.predictions, "predictions folder")):
        if not os.path.isdir(path):
            raise PathError(f"{path}: no such {what}")
    list_items, layout = LAYOUTS[config.dataset]
    items = list_items(config.gt)
    if not items:
        raise PathError(f"{config.gt}: no ground truth of --dataset {config.dataset} found (expected {layout})")
    alignment = "least_square" if config.prediction == "depth" else "least_square_disparity"
    result = EvalResult("depth", {"reference": "prs-eth/Marigold script/depth/eval.py", "alignment": alignment,
                                  "prediction": config.prediction, **protocol.to_json()},
                        config.dataset, config.gt, config.predictions, config.checkpoint)
    by_id = {item.item: item for item in items}
    stems = {item.item: item.prediction_stem for item in items}
    pairing = pair_predictions(by_id, config.predictions, lambda i: prediction_candidates(stems[i]),
                               looks_like_depth_prediction)
    for item_id, item in by_id.items():
        try:
            if item_id in pairing.problems:
                raise ItemError(pairing.problems[item_id])
            gt, mask = load_ground_truth(item)
            pred = read_depth_prediction(pairing.found[item_id])
            result.add(item_id, score_depth(pred, gt, protocol, config.prediction, mask))
        except ItemError as error:
            result.skip(item_id, str(error))
    for path in pairing.extra:
        result.skip(path, "extra prediction: no ground-truth item of this name")
    return result.finish(("abs_rel", "delta1"))
