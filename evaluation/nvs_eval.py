"""`onegen eval nvs`: generated views against held-out views, per object then averaged (EscherNet's GSO
protocol, nvs_metrics.py).

Ground truth (`--dataset`): gso = EscherNet's layout `<object>/render_mvs_25/model/NNN.png` (RGBA), the
held-out views `views` (default 10-24, EscherNet's test views of 25), view id `NNN`; folder =
`<object>/<view>.png`, every PNG of the object folder held out, view id its stem. Each ground-truth view is
put on white where fully transparent and resized to `size` x `size` (PIL bicubic, as EscherNet).

Predictions, one folder per object: `<object>/<view id>.png`, or the folder `onegen sample --task
multiview --out <object>` wrote, whose generated views (`view_<i>_generated.png`, in order of i) are
taken as the held-out views in order. A prediction must be `size` x `size`. An object with a missing,
unreadable or wrongly sized view is skipped whole (its mean would be over other views than the
protocol's); prediction files and object folders without ground truth are reported as extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from onegen.core.errors import PathError
from onegen.evaluation.nvs_metrics import psnr, ssim, ssim_available, white_background
from onegen.evaluation.pairing import SAMPLE_VIEW, is_sample_companion, relative_files
from onegen.evaluation.results import EvalResult, ItemError

GSO_VIEWS = "render_mvs_25/model"
ESCHERNET_TEST_VIEWS = tuple(range(10, 25))


@dataclass(frozen=True)
class NvsEvalConfig:
    gt: str
    predictions: str
    dataset: str = "gso"
    views: tuple[int, ...] = ESCHERNET_TEST_VIEWS  # gso: held-out view numbers
    size: int = 256
    checkpoint: str | None = None


def truth_views(config: NvsEvalConfig, obj: str) -> dict[str, str]:
    """{view id: ground-truth path} of one object's held-out views."""
    if config.dataset == "gso":
        folder = os.path.join(config.gt, obj, GSO_VIEWS)
        return {f"{v:03d}": os.path.join(folder, f"{v:03d}.png") for v in config.views}
    folder = os.path.join(config.gt, obj)
    return {n[:-4]: os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".png")}


def predicted_views(folder: str, ids: list[str]) -> tuple[dict[str, str], list[str]]:
    """({view id: prediction path}, extra file names) of one object's prediction folder."""
    names = sorted(os.listdir(folder))
    named = {n[:-4]: os.path.join(folder, n) for n in names if n.endswith(".png") and n[:-4] in ids}
    generated = sorted((int(m.group(1)), n) for n in names if (m := SAMPLE_VIEW.fullmatch(n)) and m.group(2))
    if generated and not named:  # an `onegen sample --out` folder: generated views in order
        if len(generated) != len(ids):
            raise ItemError(f"the sample folder has {len(generated)} generated views, the protocol holds out "
                            f"{len(ids)}")
        return {view: os.path.join(folder, n) for view, (_, n) in zip(ids, generated, strict=True)}, []
    extra = [n for n in names if n.endswith(".png") and n[:-4] not in ids and not is_sample_companion(n)]
    missing = [view for view in ids if view not in named]
    if missing:
        raise ItemError(f"no prediction for view(s) {', '.join(missing)}")
    return named, extra


def score_object(config: NvsEvalConfig, truth: dict[str, str], predicted: dict[str, str]) -> dict:
    """{"psnr", "ssim" (when available), "views_psnr"} of one object: means over its held-out views."""
    values, similarities = [], []
    for view, gt_path in truth.items():
        gt = _read(gt_path, "ground truth", alpha=True)
        if gt.shape[:2] != (config.size, config.size):
            from PIL import Image

            gt = np.asarray(Image.fromarray(gt).resize((config.size, config.size), Image.BICUBIC))
        pred = _read(predicted[view], "prediction", alpha=False)
        if pred.shape != gt.shape:
            raise ItemError(f"prediction {view} is {pred.shape[1]}x{pred.shape[0]}, the protocol's size is "
                            f"{config.size}x{config.size}")
        values.append(psnr(pred, gt))
        similarities.append(ssim(pred, gt))
    scores = {"psnr": float(np.mean(values)), "views_psnr": values}
    if None not in similarities:
        scores["ssim"] = float(np.mean(similarities))
    return scores


def evaluate_nvs(config: NvsEvalConfig) -> EvalResult:
    """Score every ground-truth object of `config` (module docstring); PathError for an unusable folder."""
    for path, what in ((config.gt, "--gt folder"), (config.predictions, "predictions folder")):
        if not os.path.isdir(path):
            raise PathError(f"{path}: no such {what}")
    marker = GSO_VIEWS if config.dataset == "gso" else ""
    objects = sorted(n for n in os.listdir(config.gt) if os.path.isdir(os.path.join(config.gt, n, marker)))
    if not objects:
        raise PathError(f"{config.gt}: no object folder{' with ' + marker if marker else ''} (--dataset {config.dataset})")
    protocol = {"reference": "kxhit/EscherNet metrics/eval_2D_NVS.py", "psnr": "cv2.PSNR on uint8",
                "background": "white where alpha == 0", "size": config.size, "ssim": ssim_available(),
                "average": "per object over its views, then over objects"}
    if config.dataset == "gso":
        protocol["views"] = list(config.views)
    result = EvalResult("nvs", protocol, config.dataset, config.gt, config.predictions, config.checkpoint)
    for obj in objects:
        folder = os.path.join(config.predictions, obj)
        try:
            if not os.path.isdir(folder):
                raise ItemError(f"no prediction folder {obj}/")
            truth = truth_views(config, obj)
            predicted, extra = predicted_views(folder, list(truth))
            result.add(obj, score_object(config, truth, predicted))
        except ItemError as error:
            result.skip(obj, str(error))
            continue
        for name in extra:
            result.skip(f"{obj}/{name}", "extra prediction: not a held-out view")
    for path in relative_files(config.predictions):
        if path.split("/", 1)[0] not in objects and path.endswith(".png") and not is_sample_companion(path):
            result.skip(path, "extra prediction: no ground-truth object of this name")
    names = ("psnr", "ssim") if ssim_available() else ("psnr",)
    return result.finish(names)


def _read(path: str, what: str, alpha: bool) -> np.ndarray:
    """uint8 (H, W, 3): RGBA on white where alpha is 0 (`alpha`), else the RGB channels as stored."""
    from PIL import Image

    if not os.path.exists(path):
        raise ItemError(f"no {what} file {os.path.basename(path)}")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGBA" if alpha and "A" in image.getbands() else "RGB"))
    except OSError as error:
        raise ItemError(f"unreadable {what} {os.path.basename(path)}: {error}") from None
    return white_background(pixels)
