"""The "cameras" annotator: normalised cameras and 16-channel Plücker ray maps of a scene (docs/design.md §5).

Input: a catalog row of kind "scene" whose meta (JSON) holds
  {"cameras": [{"c2w": 4x4 OpenCV camera-to-world, "K": 3x3 pixels, "width": int, "height": int}, ...]}
(written by `onegen.pipelines.sources.scene_cameras`), one camera per entry of `view_images`.

Outputs (one row per scene):
- cameras_json: JSON string {"cameras": [{"c2w", "K", "width", "height"}, ...] normalised,
  "normalization": Normalization.to_json() (how input world points map to the normalised world),
  "distance": the camera 0 - axes intersection distance (1.7), "ray_stride": 8, "ray_scale": 1.658,
  "convention": "opencv_c2w", "frame": "released"}. Since version 2 the normalised world is the
  released OneDiffusion frame (`onegen.core.camera_geometry`: camera 0's pytorch3d view frame, camera 0
  at the origin, view 0's moments 0); version 1 stores kept camera 0's OpenCV frame with the origin at
  the axes' intersection. Both stay readable: re-normalising any of them gives the released frame,
  and `distance` is camera 0's distance from the origin in version 1.
- rays: one float16 .npy (np.save bytes) per view, shape (16, ray_height, ray_width), the
  latent [d, m, d, m, d, m_x] * 1.658 of `onegen.core.camera_geometry`.
- ray_height, ray_width: height // 8, width // 8 (all views share one image size).
No model: setup() is a no-op and model_id is "".
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError
from onegen.core.camera_geometry import (
    CAMERA0_DISTANCE,
    RAY_SCALE,
    RAY_STRIDE,
    normalize_cameras,
    plucker_rays,
    rays_to_latent,
)


def npy_bytes(array: np.ndarray) -> bytes:
    """np.save bytes of `array` (deterministic: same array -> same bytes)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _matrix(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise RowError(f"bad_camera: {what} is not numeric ({error})") from error
    if array.shape != shape or not np.isfinite(array).all():
        raise RowError(f"bad_camera: {what} must be a finite {shape} matrix, got shape {array.shape}")
    return array


def parse_cameras(meta: dict[str, Any], n_views: int | None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """meta["cameras"] -> (c2w (N, 4, 4), K (N, 3, 3), width, height); RowError on any problem."""
    cameras = meta.get("cameras") if isinstance(meta, dict) else None
    if not cameras or not isinstance(cameras, list):
        raise RowError("missing_cameras: meta has no non-empty 'cameras' list")
    if n_views is not None and n_views != len(cameras):
        raise RowError(f"bad_camera: {len(cameras)} cameras for {n_views} view images")
    c2w, intrinsics, sizes = [], [], set()
    for i, camera in enumerate(cameras):
        if not isinstance(camera, dict) or not {"c2w", "K", "width", "height"} <= set(camera):
            raise RowError(f"bad_camera: camera {i} lacks one of c2w, K, width, height")
        pose = _matrix(camera["c2w"], (4, 4), f"camera {i} c2w")
        rotation = pose[:3, :3]
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) < 0:
            raise RowError(f"bad_camera: camera {i} c2w rotation is not a proper rotation")
        k = _matrix(camera["K"], (3, 3), f"camera {i} K")
        if k[0, 0] <= 0 or k[1, 1] <= 0 or abs(k[2, 2] - 1.0) > 1e-6 or np.abs(k[2, :2]).max() > 0:
            raise RowError(f"bad_camera: camera {i} K is not a pinhole matrix with positive focals")
        width, height = int(camera["width"]), int(camera["height"])
        if width < RAY_STRIDE or height < RAY_STRIDE:
            raise RowError(f"bad_camera: camera {i} image {width}x{height} is smaller than one ray cell")
        c2w.append(pose)
        intrinsics.append(k)
        sizes.add((width, height))
    if len(sizes) != 1:
        raise RowError(f"bad_camera: views differ in size {sorted(sizes)}; rays need one size per scene")
    ((width, height),) = sizes
    return np.stack(c2w), np.stack(intrinsics), width, height


@dataclass
class CamerasAnnotator(Annotator):
    """Normalise a scene's cameras (RayDiffusion) and render its per-view ray latents."""

    name: ClassVar[str] = "cameras"
    version: ClassVar[str] = "2"  # 2: the released frame (1: camera 0's OpenCV frame, origin at the centre)
    kinds: ClassVar[tuple[str, ...]] = ("scene",)
    decode_images: ClassVar[bool] = False
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("cameras_json", pa.string()),
            pa.field("rays", pa.list_(pa.binary())),
            pa.field("ray_height", pa.int32()),
            pa.field("ray_width", pa.int32()),
        ]
    )

    distance: float = CAMERA0_DISTANCE
    num_cpus: float = 0.25
    batch_size: int = 32

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        views = row.get("view_images")
        c2w, intrinsics, width, height = parse_cameras(row["meta"], None if views is None else len(views))
        normalised, transform = normalize_cameras(c2w, distance=self.distance)
        latent = rays_to_latent(plucker_rays(normalised, intrinsics, width, height))  # (N, 16, h, w)
        cameras = [
            {"c2w": pose.tolist(), "K": k.tolist(), "width": width, "height": height}
            for pose, k in zip(normalised, intrinsics, strict=True)
        ]
        document = {
            "cameras": cameras,
            "normalization": transform.to_json(),
            "distance": self.distance,
            "frame": "released",
            "ray_stride": RAY_STRIDE,
            "ray_scale": RAY_SCALE,
            "convention": "opencv_c2w",
        }
        return {
            "cameras_json": json.dumps(document),
            "rays": [npy_bytes(view.astype(np.float16)) for view in latent],
            "ray_height": latent.shape[-2],
            "ray_width": latent.shape[-1],
        }
