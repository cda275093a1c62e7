"""`onegen eval camera`: predicted cameras of each scene against the ground truth (RayDiffusion's
camera-centre accuracy, camera_metrics.py).

Predictions, one folder per scene: `<scene>/cameras.json` as `onegen sample --task camera_pose --out
<scene>` writes it (its "c2w": cameras recovered from the generated rays) or `<scene>/rays.npy` (rays
(N, h, w, 6) or a ray latent (N, 16, h, w), turned into cameras here). Camera i is the i-th --condition
image given to the sampler.

Ground truth (`--dataset`):
- gso: EscherNet's GSO renders (kxhit/EscherNet eval_eschernet.py reads them):
  `<object>/render_mvs_25/model/NNN.npy`, a 3 x 4 world-to-camera [R | t] per view (centre -R^T t);
  `views` names the view numbers in the order they were given to the sampler (the paper: six views); the
  scene scale comes from all of the object's views, as RayDiffusion takes it from the whole sequence.
- folder: `<scene>/cameras.json` with "c2w" (OpenCV) or "c2w_opengl" (N, 4, 4) of the evaluated views in
  order (the file `onegen sample --cameras` reads), and optionally "scene_c2w" (M, 4, 4), all cameras
  of the scene, for the scene scale (default: the evaluated ones). Only centres are read, so the
  convention and world frame do not matter (the metric is similarity-invariant).
The summary pools every camera of the scored scenes; per scene the errors and accuracies are kept.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from onegen.core.errors import PathError
from onegen.evaluation.camera_metrics import (
    THRESHOLDS,
    accuracy,
    centre_errors,
    centres_from_rays,
    scene_scale,
)
from onegen.evaluation.pairing import pair_predictions
from onegen.evaluation.results import EvalResult, ItemError

GSO_CAMERAS = "render_mvs_25/model"
PREDICTION_FILES = ("cameras.json", "rays.npy")


@dataclass(frozen=True)
class CameraEvalConfig:
    gt: str
    predictions: str
    dataset: str = "folder"
    views: tuple[int, ...] = ()  # gso: the ground-truth view numbers, in the sampler's order
    thresholds: tuple[float, ...] = THRESHOLDS
    checkpoint: str | None = None


def gso_truth(folder: str, views: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(centres of `views` (N, 3), centres of all the object's views (M, 3)) from its w2c .npy files."""
    model = os.path.join(folder, GSO_CAMERAS)
    numbers = sorted(int(name[:-4]) for name in os.listdir(model) if name[:-4].isdigit() and name.endswith(".npy"))
    missing = [v for v in views if v not in numbers]
    if missing:
        raise ItemError(f"ground truth has no view {', '.join(f'{v:03d}' for v in missing)} in {GSO_CAMERAS}")
    centres = {}
    for number in numbers:
        w2c = _load(os.path.join(model, f"{number:03d}.npy"))
        if w2c.shape[-2:] not in ((3, 4), (4, 4)):
            raise ItemError(f"ground truth {number:03d}.npy has shape {w2c.shape}, not a 3 x 4 [R | t]")
        centres[number] = -w2c[:3, :3].T @ w2c[:3, 3]
    return np.stack([centres[v] for v in views]), np.stack(list(centres.values()))


def folder_truth(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(centres of the evaluated views, centres for the scene scale) from `<scene>/cameras.json`."""
    document = _read_json(os.path.join(folder, "cameras.json"), "ground truth")
    key = "c2w" if "c2w" in document else "c2w_opengl"
    if key not in document:
        raise ItemError("ground-truth cameras.json has no 'c2w' or 'c2w_opengl'")
    centres = _centres(document[key], "ground-truth")
    return centres, _centres(document["scene_c2w"], "ground-truth scene") if "scene_c2w" in document else centres


def predicted_centres(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return centres_from_rays(_load(path))
    document = _read_json(path, "prediction")
    if "c2w" not in document:
        raise ItemError("prediction cameras.json has no 'c2w'")
    return _centres(document["c2w"], "predicted")


def evaluate_camera(config: CameraEvalConfig) -> EvalResult:
    """Score every ground-truth scene of `config` (module docstring); PathError for an unusable folder."""
    for path, what in ((config.gt, "--gt folder"), (config.predictions, "predictions folder")):
        if not os.path.isdir(path):
            raise PathError(f"{path}: no such {what}")
    if config.dataset == "gso" and not config.views:
        raise PathError("--dataset gso needs --views: the view numbers given to the sampler, in order (e.g. 0-5)")
    marker = GSO_CAMERAS if config.dataset == "gso" else "cameras.json"
    scenes = sorted(n for n in os.listdir(config.gt) if os.path.exists(os.path.join(config.gt, n, marker)))
    if not scenes:
        raise PathError(f"{config.gt}: no scene folder with {marker} (--dataset {config.dataset})")
    protocol = {"reference": "jasonyzhang/RayDiffusion ray_diffusion/eval/utils.py + eval_jobs.py",
                "alignment": "umeyama_similarity", "scale": "gt_centroid_to_farthest_camera",
                "thresholds": list(config.thresholds), "pooled": "all cameras of the scored scenes"}
    if config.views:
        protocol["views"] = list(config.views)
    result = EvalResult("camera", protocol, config.dataset, config.gt, config.predictions, config.checkpoint)
    pairing = pair_predictions(scenes, config.predictions, lambda s: [f"{s}/{n}" for n in PREDICTION_FILES],
                               lambda p: p.rsplit("/", 1)[-1] in PREDICTION_FILES)
    pooled = []
    for scene in scenes:
        try:
            if scene in pairing.problems:
                raise ItemError(pairing.problems[scene])
            folder = os.path.join(config.gt, scene)
            gt, everything = gso_truth(folder, config.views) if config.dataset == "gso" else folder_truth(folder)
            errors = centre_errors(predicted_centres(pairing.found[scene]), gt, scene_scale(everything))
        except ItemError as error:
            result.skip(scene, str(error))
            continue
        pooled.append(errors)
        result.add(scene, {**{f"acc_{t:g}": accuracy(errors, t) for t in config.thresholds},
                           "centre_errors": [float(e) for e in errors]})
    for path in pairing.extra:
        result.skip(path, "extra prediction: no ground-truth scene of this name")
    every = np.concatenate(pooled) if pooled else None
    return result.finish((), {f"acc_{t:g}": None if every is None else accuracy(every, t) for t in config.thresholds})


def _centres(c2w, what: str) -> np.ndarray:
    try:
        c2w = np.asarray(c2w, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ItemError(f"{what} c2w is not an (N, 4, 4) array: {error}") from None
    if c2w.ndim != 3 or c2w.shape[1:] not in ((4, 4), (3, 4)):
        raise ItemError(f"{what} c2w has shape {c2w.shape}, not (N, 4, 4)")
    return c2w[:, :3, 3]


def _load(path: str) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as error:
        raise ItemError(f"unreadable {os.path.basename(path)}: {error}") from None


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        raise ItemError(f"unreadable {what} {os.path.basename(path)}: {error}") from None
    if not isinstance(document, dict):
        raise ItemError(f"{what} {os.path.basename(path)} is not a JSON object")
    return document
