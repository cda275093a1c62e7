"""`onegen eval depth` / `eval camera` while training (`onegen train --eval-every N`), on small held-out sets.

Every N steps (and at the last one) the trainer hands each evaluator the model holding the weights it
validates (the EMA by default, training/train.py), its VAE and text encoder. An evaluator samples the
predictions the way `onegen sample` does (training/sample.py `generate` + `write_outputs`, the same files)
into a scratch folder, then scores them with the very code of `onegen eval` (evaluate_depth,
evaluate_camera), so the numbers in TensorBoard (`eval/depth/abs_rel`, `eval/depth/delta1`,
`eval/camera/acc_0.1`, `eval/camera/acc_0.3`, and `.../not_scored`) are the ones the command would print for
that checkpoint on that set.

Sets (TrainConfig `eval_depth`, `eval_camera`; at most `eval_items` each, the first by name):
- depth: `<name>.npy` metric depth maps (eval depth's `folder` layout), each beside its photo `<name>.png` or
  `<name>.jpg`; the prediction is sampled at the depth map's size (sides multiples of 16), `image2depth`,
  seed 0, `eval_sample_steps` Euler steps; scored with Marigold's protocol (least squares in disparity).
- camera: `<scene>/cameras.json` ("c2w" of the views in order, eval camera's `folder` layout) and the scene's
  views `<scene>/*.png|*.jpg` sorted by name, in that order; `camera_pose` from all of them at the first
  view's size; RayDiffusion's camera-centre accuracy at 0.1 and 0.3.
Items that cannot be scored (a photo missing, a side not a multiple of 16, a prediction `eval` refuses) are
counted in `not_scored` and never averaged, as `onegen eval` does. Every rank runs the sampler (FSDP2 gathers
parameters inside forward); the scratch folders are per rank and removed after each evaluation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from onegen.core.tasks import CAMERA_POSE, DEPTH2IMAGE, TASKS
from onegen.evaluation.camera_eval import CameraEvalConfig, evaluate_camera
from onegen.evaluation.depth_datasets import folder_items
from onegen.evaluation.depth_eval import DepthEvalConfig, evaluate_depth
from onegen.training.sample import SampleRequest, generate, write_outputs
from onegen.training.train_config import TrainConfig

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_TO_DEPTH = TASKS[DEPTH2IMAGE].sample_as[-1]  # the sampler's name for depth2image reversed (image2depth)
SIDE_MULTIPLE = 16  # latent patches: the sampler's sizes are multiples of 16 pixels


def training_evaluators(config: TrainConfig) -> list[Callable[..., dict[str, float | None]]]:
    """The evaluators `--eval-every` asks for (none when it is off)."""
    if not config.eval_every:
        return []
    evaluators = []
    if config.eval_depth:
        evaluators.append(lambda model, vae, text, step: depth_now(model, vae, text, config))
    if config.eval_camera:
        evaluators.append(lambda model, vae, text, step: camera_now(model, vae, text, config))
    return evaluators


def depth_now(model, vae, text_encoder, config: TrainConfig) -> dict[str, float | None]:
    """Sample image2depth for the first `eval_items` photos of `eval_depth` and score them (module docstring)."""
    work = tempfile.mkdtemp(prefix="onegen-eval-depth-")
    try:
        gt, predictions = os.path.join(work, "gt"), os.path.join(work, "pred")
        os.makedirs(gt)
        skipped = 0
        for item in folder_items(config.eval_depth)[: config.eval_items]:
            photo = _photo_beside(item.depth[: -len(".npy")])
            height, width = np.load(item.depth, mmap_mode="r").shape[:2]
            if photo is None or height % SIDE_MULTIPLE or width % SIDE_MULTIPLE:
                skipped += 1  # no photo, or a size the sampler cannot produce: not scored
                continue
            os.makedirs(os.path.dirname(os.path.join(gt, item.item)), exist_ok=True)
            shutil.copy(item.depth, os.path.join(gt, item.item + ".npy"))
            request = SampleRequest(IMAGE_TO_DEPTH, conditions=(photo,), size=(height, width),
                                    steps=config.eval_sample_steps, seed=0)
            _sample(model, request, vae, text_encoder, os.path.join(predictions, item.item))
        if not os.listdir(gt):
            return {"depth/abs_rel": None, "depth/delta1": None, "depth/not_scored": float(skipped)}
        result = evaluate_depth(DepthEvalConfig(gt=gt, predictions=predictions, dataset="folder"))
        return {"depth/abs_rel": result.summary["abs_rel"], "depth/delta1": result.summary["delta1"],
                "depth/not_scored": float(skipped + len(result.skipped))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def camera_now(model, vae, text_encoder, config: TrainConfig) -> dict[str, float | None]:
    """Sample camera_pose for the first `eval_items` scenes of `eval_camera` and score them."""
    work = tempfile.mkdtemp(prefix="onegen-eval-camera-")
    try:
        gt, predictions = os.path.join(work, "gt"), os.path.join(work, "pred")
        skipped = 0
        scenes = sorted(name for name in os.listdir(config.eval_camera)
                        if os.path.isfile(os.path.join(config.eval_camera, name, "cameras.json")))
        for scene in scenes[: config.eval_items]:
            folder = os.path.join(config.eval_camera, scene)
            views = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(PHOTO_SUFFIXES))
            if len(views) < 2:
                skipped += 1
                continue
            with Image.open(views[0]) as first:
                width, height = first.size
            if height % SIDE_MULTIPLE or width % SIDE_MULTIPLE:
                skipped += 1
                continue
            os.makedirs(os.path.join(gt, scene))
            shutil.copy(os.path.join(folder, "cameras.json"), os.path.join(gt, scene, "cameras.json"))
            request = SampleRequest(CAMERA_POSE, conditions=tuple(views), size=(height, width),
                                    steps=config.eval_sample_steps, seed=0)
            _sample(model, request, vae, text_encoder, os.path.join(predictions, scene))
        if not os.path.isdir(gt):
            return {"camera/acc_0.1": None, "camera/acc_0.3": None, "camera/not_scored": float(skipped)}
        result = evaluate_camera(CameraEvalConfig(gt=gt, predictions=predictions))
        return {**{f"camera/{name}": value for name, value in result.summary.items()},
                "camera/not_scored": float(skipped + len(result.skipped))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _photo_beside(stem: str) -> str | None:
    return next((stem + suffix for suffix in PHOTO_SUFFIXES if os.path.isfile(stem + suffix)), None)


def _sample(model, request: SampleRequest, vae, text_encoder, out: str) -> Any:
    latents, kinds, flags = generate(model, request, vae, text_encoder)
    return write_outputs(latents, kinds, flags, vae, out, request.task, request.conditions)
