"""Multiview training samples from a catalog scene row + its `cameras` annotation (docs/design.md §4-§5). Pure; no Ray.

One scene row gives `samples_per_scene` samples. Each sample picks 2-12 views (a random subset in
random order, or a sliding window of consecutive frames), brings every view to a square
`resolution` x `resolution` RGB image (centre crop to the shorter side, then area resize), and pairs
it with its 16-channel Plücker ray latent recomputed at that resolution:

- The view's K (pixels of the stored image, from `cameras_json`) is adjusted for the crop
  (principal point minus the crop offset) and the resize (every pixel coordinate times
  resolution / side; exact for the half-pixel-centre convention shared by OpenCV's resize and
  `onegen.core.camera_geometry`).
- The chosen views' normalised c2w are normalised again (`normalize_cameras`) so the FIRST chosen
  view is camera 0 (docs/design.md §5: the normalisation is per sample, not per scene), with the same camera-0
  distance the annotator used.
- Rays: (16, resolution / 8, resolution / 8) float16 `.npy` bytes (np.save), the latent
  [d, m, d, m, d, m_x] * 1.658.

Members, interleaved: img0.jpg (JPEG q95), ray0.npy, img1.jpg, ray1.npy, ..., then "txt" (the prompt
`[[multiview]] <caption>` from `task_prompts.multiview_prompt`, the caption being the one the builder
chose with `--caption`: the scene's caption.txt, or the `caption` annotator's scene caption of one view,
or none, so the token alone, as for CO3D) and "json" (the samples.py meta: task, n_views, roles, prompt, source_keys,
plus "view_indices" = the chosen views' positions in `view_images` and "cameras" = the chosen views'
re-normalised c2w and adjusted K, one per image view). Data problems come back as skip reasons
(strings), never exceptions.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from onegen.annotators.base import key_rng
from onegen.annotators.cameras_annotator import CamerasAnnotator, npy_bytes
from onegen.core.camera_geometry import normalize_cameras, plucker_rays, rays_to_latent
from onegen.core.image_codec import encode_jpeg
from onegen.core.task_prompts import multiview_prompt
from onegen.core.tasks import MULTIVIEW as TASK
from onegen.core.tasks import TASKS
from onegen.manifests.shard_writer import Sample
from onegen.pipelines.samples.common import sample_meta, text_members
from onegen.pipelines.samples.settings import MultiviewConfig
from onegen.pipelines.sources.image_checks import to_rgb_array

CAMERAS_STORE = TASKS[TASK].annotator  # the store of the scene's normalised cameras (the task table's)


@dataclass(frozen=True)
class _View:
    """One view brought to the output square: JPEG bytes and K (3, 3) in output pixels."""

    jpeg: bytes
    intrinsics: np.ndarray


def choose_views(key: str, sample_index: int, n: int, config: MultiviewConfig) -> list[int]:
    """Indices into the scene's views for one sample (n >= config.min_views), seeded by key + index.

    Random mode: a subset in random order (the first becomes camera 0). Sliding window: a random
    start and that many consecutive views in frame order (no wrap-around).
    """
    rng = key_rng(key, f"{TASK}-views-{sample_index}")
    count = int(rng.integers(config.min_views, min(config.max_views, n) + 1))
    if config.sliding_window:
        start = int(rng.integers(0, n - count + 1))
        return list(range(start, start + count))
    return [int(i) for i in rng.choice(n, size=count, replace=False)]


def square_view(data: bytes, intrinsics: np.ndarray, resolution: int) -> _View:
    """Decode one view, centre-crop it to a square, area-resize to `resolution`, adjust K to match."""
    return crop_view(decode_view(data), intrinsics, resolution)


def decode_view(data: bytes) -> np.ndarray:
    """One view's stored bytes as (H, W, 3) uint8 RGB, alpha composited on white.

    EXIF orientation is deliberately ignored: the scene's K is in the stored pixel grid. Raises on
    undecodable bytes or an unsupported pixel mode (the caller turns that into a skip reason).
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return to_rgb_array(image)


def crop_view(rgb: np.ndarray, intrinsics: np.ndarray, resolution: int) -> _View:
    """A decoded (H, W, 3) view centre-cropped to a square and area-resized to `resolution`, K adjusted."""
    height, width = rgb.shape[:2]
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    crop = np.ascontiguousarray(rgb[top : top + side, left : left + side])  # (side, side, 3)
    resized = cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_AREA)
    scale = resolution / side
    k = np.array(intrinsics, dtype=np.float64)
    k[0, 2] -= left
    k[1, 2] -= top
    k = np.diag([scale, scale, 1.0]) @ k  # pixel coordinates (half-pixel centres) scale exactly
    return _View(jpeg=encode_jpeg(resized, 95), intrinsics=k)


def _parse_cameras(cameras_row: dict, n_views: int) -> tuple[np.ndarray, np.ndarray, float] | str:
    """cameras_json -> (normalised c2w (N, 4, 4), K (N, 3, 3), camera-0 distance) or a skip reason."""
    document = json.loads(cameras_row.get("cameras_json") or "{}")
    cameras = document.get("cameras") or []
    if len(cameras) != n_views:
        return f"cameras:count_mismatch:{len(cameras)}_cameras_for_{n_views}_views"
    c2w = np.array([camera["c2w"] for camera in cameras], dtype=np.float64)
    intrinsics = np.array([camera["K"] for camera in cameras], dtype=np.float64)
    # cameras@2 records the camera-0 distance; cameras@1 put camera 0 at that distance from the origin.
    distance = float(document.get("distance") or np.linalg.norm(c2w[0, :3, 3]))
    return c2w, intrinsics, distance


def _build_sample(
    row: dict, views: list[_View], chosen: list[int], c2w: np.ndarray, distance: float,
    caption: str | None, store: str, config: MultiviewConfig, index: int, ordinal: int,
) -> Sample:  # fmt: skip
    """Assemble one sample from its processed views; c2w (N, 4, 4) are the scene-normalised cameras."""
    res = config.resolution
    renormalised, _ = normalize_cameras(c2w[chosen], distance=distance)  # first chosen view = camera 0
    intrinsics = np.stack([view.intrinsics for view in views])  # (V, 3, 3)
    latent = rays_to_latent(plucker_rays(renormalised, intrinsics, res, res))  # (V, 16, res/8, res/8)
    members: list[tuple[str, bytes]] = []
    for j, (view, ray) in enumerate(zip(views, latent, strict=True)):
        members += [(f"img{j}.jpg", view.jpeg), (f"ray{j}.npy", npy_bytes(ray.astype(np.float16)))]
    prompt = multiview_prompt(caption)
    meta = sample_meta(TASK, prompt, ["image", "rays"] * len(views), [row["key"]])
    meta["view_indices"] = chosen
    meta["cameras"] = [
        {"c2w": pose.tolist(), "K": view.intrinsics.tolist(), "width": res, "height": res}
        for pose, view in zip(renormalised, views, strict=True)
    ]
    return Sample(
        key=f"{row['key']}-{TASK}-{index}", task=TASK, prompt=prompt, source=row["source"],
        members=members + text_members(prompt, meta), n_views=2 * len(views), source_keys=[row["key"]],
        annotators=[store], width=res, height=res, ordinal=ordinal + index,
    )  # fmt: skip


def multiview_samples(
    row: dict, cameras_row: dict | None, caption: str | None, config: MultiviewConfig, ordinal: int
) -> list[Sample | str]:
    """`config.samples_per_scene` multiview samples (or skip reasons) for one catalog scene row.

    `row`: catalog columns as a dict (key, source, view_images = list of image file bytes).
    `cameras_row`: that key's `cameras` annotation row (status, annotator_version, cameras_json) or
    None. `caption`: chosen by the caller (None -> the task token alone). Sample i has key
    "<row key>-multiview-<i>" and ordinal `ordinal + i`. Skip reasons: "missing_annotation:cameras",
    "cameras:<status>", "cameras:count_mismatch:...", "too_few_views", "decode_error:view<j>: <exception>" (j the
    index in view_images) - the row-level ones come back once, decode errors once per affected sample.
    """
    if cameras_row is None:
        return [f"missing_annotation:{CamerasAnnotator.name}"]
    if cameras_row.get("status") != "ok":
        return [f"{CamerasAnnotator.name}:{cameras_row.get('status')}"]
    view_images = list(row.get("view_images") or [])
    if len(view_images) < config.min_views:
        return ["too_few_views"]
    parsed = _parse_cameras(cameras_row, len(view_images))
    if isinstance(parsed, str):
        return [parsed]
    c2w, intrinsics, distance = parsed
    store = f"{CamerasAnnotator.name}@{cameras_row.get('annotator_version') or CamerasAnnotator.version}"
    processed: dict[int, _View | str] = {}  # view index -> processed view or skip reason (decode once)
    out: list[Sample | str] = []
    for index in range(config.samples_per_scene):
        chosen = choose_views(row["key"], index, len(view_images), config)
        for j in chosen:
            if j not in processed:
                try:
                    rgb = decode_view(view_images[j])
                except Exception as error:  # noqa: BLE001 - any decoder failure is this view's data problem
                    processed[j] = f"decode_error:view{j}: {type(error).__name__}: {error}"
                    continue
                processed[j] = crop_view(rgb, intrinsics[j], config.resolution)  # a failure here is a bug
        failed = [processed[j] for j in chosen if isinstance(processed[j], str)]
        if failed:
            out.append(failed[0])
            continue
        views = [processed[j] for j in chosen]
        out.append(_build_sample(row, views, chosen, c2w, distance, caption, store, config, index, ordinal))
    return out
