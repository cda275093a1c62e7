"""Depth metrics as Marigold's evaluation computes them: masks, least-squares alignment, AbsRel, delta1.

Read from prs-eth/Marigold (commit b1dffaa, "Marigold-v1-1"):
- script/depth/eval.py: per image, align the prediction to the ground truth by least squares over the
  valid pixels (`--alignment least_square`, what script/depth/eval/12_eval_nyu.sh and 52_eval_diode.sh
  run for both NYUv2 and DIODE: scale and shift in *depth* space), clip the aligned depth to the
  dataset's [min_depth, max_depth], then to >= 1e-6, and score it on the valid pixels. Its other mode,
  `least_square_disparity`, fits the prediction to the ground truth's disparity 1/g over the pixels
  valid with g > 0 and prediction > 0, clips the aligned disparity to >= 1e-3 and inverts it.
- src/util/alignment.py `align_depth_least_square`: `np.linalg.lstsq([p, 1], g)` over the masked
  pixels, then `p * scale + shift` on the whole map; `depth2disparity`: 1/d where d > 0, else 0.
- src/util/metric.py: `abs_relative_difference` = sum over valid |p - g| / g divided by the count of
  valid pixels; `delta1_acc` = fraction of valid pixels with max(p/g, g/p) < 1.25 (strict); both per
  image, then averaged over images (`MetricTracker`, weight 1 per image).
- src/dataset/nyu_dataset.py: NYUv2 valid = (1e-3 < g < 10) on the raw depth, and the Eigen crop
  [45:471, 41:601]; src/dataset/diode_dataset.py: DIODE valid = its own `*_depth_mask.npy` (the range
  [0.6, 350] is only used for clipping); src/dataset/base_depth_dataset.py `_get_valid_mask`.

Where we differ, and why:
- Which space the prediction is in is a setting (`prediction`): "depth" runs Marigold's `least_square`
  (the issue's and docs/design.md §8's "scale and shift in depth space"); "inverse" runs Marigold's
  `least_square_disparity`, because `onegen sample --task image2depth` writes the depth annotator's
  convention, grey *inverse* depth (near = white, annotators/depth.py), for which a fit in depth space is
  meaningless. Both are Marigold's own code paths.
- Computation in float64 (Marigold: float32 for the fit, torch float32 for the metrics); it changes
  numbers in the 6th-7th digit.
- Bad input is refused per item (`ItemError`) instead of crashing or averaging garbage: a prediction
  whose size is not the ground truth's (Marigold asserts), a prediction with NaN/inf, a ground truth
  with no valid pixel (Marigold would divide by zero), non-finite ground truth under the mask. DIODE's
  mask is intersected with g > 0 so that a zero under a mask cannot divide by zero (the published masks
  hold only positive depths, so the numbers do not change).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from onegen.evaluation.results import ItemError

EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), columns [41, 601) of a 480 x 640 NYUv2 map
DELTA1 = 1.25


@dataclass(frozen=True)
class DepthProtocol:
    """What defines the numbers of one dataset: its depth range (valid: min < g < max, also the clip
    range), whether the Eigen crop applies, and whether the valid mask comes from the dataset's files."""

    name: str
    min_depth: float
    max_depth: float
    eigen_crop: bool = False
    mask_from_files: bool = False

    def to_json(self) -> dict:
        return asdict(self)


NYUV2 = DepthProtocol("nyuv2", 1e-3, 10.0, eigen_crop=True)
DIODE = DepthProtocol("diode", 0.6, 350.0, mask_from_files=True)


def valid_mask(gt: np.ndarray, protocol: DepthProtocol, file_mask: np.ndarray | None = None) -> np.ndarray:
    """Marigold's valid pixels: the dataset's mask file when it has one (DIODE, and g > 0), else the open
    range (min, max) on the ground truth (and a plain folder's optional mask file); NYUv2 adds the Eigen
    crop. NaN ground truth fails the range test."""
    if protocol.mask_from_files:
        if file_mask is None:
            raise ValueError(f"protocol {protocol.name} needs the dataset's mask file")
        valid = file_mask.astype(bool) & ~(gt <= 0)  # NaN stays valid here: checked by `score_depth`
    else:  # a plain folder's optional mask narrows the range test
        valid = (gt > protocol.min_depth) & (gt < protocol.max_depth)
        if file_mask is not None:
            valid &= file_mask.astype(bool)
    if protocol.eigen_crop:
        top, bottom, left, right = EIGEN_CROP
        crop = np.zeros_like(valid)
        crop[top:bottom, left:right] = True
        valid &= crop
    return valid


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Least-squares (scale, shift) minimising sum over `mask` of (scale * pred + shift - target)^2
    (Marigold's `align_depth_least_square`: np.linalg.lstsq on [pred, 1])."""
    p = pred[mask].astype(np.float64)
    a = np.stack([p, np.ones_like(p)], axis=-1)  # (M, 2)
    (scale, shift), *_ = np.linalg.lstsq(a, target[mask].astype(np.float64), rcond=None)
    return float(scale), float(shift)


def align_depth(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, prediction: str) -> np.ndarray:
    """The prediction aligned to metric depth, before the dataset clip.

    "depth": scale * pred + shift fitted to g over `valid`; "inverse": scale * pred + shift fitted to 1/g
    over valid & g > 0 & pred > 0, clipped to >= 1e-3 and inverted (Marigold's least_square_disparity)."""
    if prediction == "depth":
        scale, shift = fit_scale_shift(pred, gt, valid)
        return pred * scale + shift
    if prediction != "inverse":
        raise ValueError(f"prediction must be 'depth' or 'inverse', got {prediction!r}")
    disparity = np.zeros_like(gt)
    positive = gt > 0
    disparity[positive] = 1.0 / gt[positive]
    fit = valid & positive & (pred > 0)
    if not fit.any():
        raise ItemError("no valid pixel where the prediction is positive (inverse depth needs > 0 to fit)")
    scale, shift = fit_scale_shift(pred, disparity, fit)
    return 1.0 / np.clip(pred * scale + shift, 1e-3, None)


def abs_rel(depth: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Mean over valid pixels of |p - g| / g."""
    return float(np.mean(np.abs(depth[valid] - gt[valid]) / gt[valid]))


def delta1(depth: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Fraction of valid pixels with max(p / g, g / p) < 1.25."""
    p, g = depth[valid], gt[valid]
    return float(np.mean(np.maximum(p / g, g / p) < DELTA1))


def score_depth(pred: np.ndarray, gt: np.ndarray, protocol: DepthProtocol, prediction: str,
                file_mask: np.ndarray | None = None) -> dict[str, float]:
    """One image's {"abs_rel", "delta1"} under `protocol`; `ItemError` for input that cannot be scored."""
    if pred.shape != gt.shape:
        raise ItemError(f"prediction is {_size(pred)}, ground truth {_size(gt)}")
    if not np.isfinite(pred).all():
        raise ItemError(f"prediction has {int((~np.isfinite(pred)).sum())} NaN/inf pixels")
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    valid = valid_mask(gt, protocol, file_mask)
    if not valid.any():
        raise ItemError(f"ground truth has no valid pixel ({_validity(protocol)})")
    if not np.isfinite(gt[valid]).all():
        raise ItemError(f"ground truth has {int((~np.isfinite(gt[valid])).sum())} NaN/inf pixels under its mask")
    depth = align_depth(pred, gt, valid, prediction)
    depth = np.clip(np.clip(depth, protocol.min_depth, protocol.max_depth), 1e-6, None)
    return {"abs_rel": abs_rel(depth, gt, valid), "delta1": delta1(depth, gt, valid)}


def _size(array: np.ndarray) -> str:
    return "x".join(str(s) for s in array.shape)


def _validity(protocol: DepthProtocol) -> str:
    rule = "its mask file and > 0" if protocol.mask_from_files else f"{protocol.min_depth:g} < depth < {protocol.max_depth:g}"
    return rule + (", Eigen crop" if protocol.eigen_crop else "")
