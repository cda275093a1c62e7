"""A rendered synthetic scene (pipelines/demo/synthetic_scene.py) written in Hypersim's published layout, so
that its EXACT depth and cameras enter onegen through the real Hypersim reader (`onegen ingest --kind
hypersim`, pipelines/sources/hypersim.py) and the `depth_gt` annotator (annotators/gt_depth.py).

The layout, as apple/ml-hypersim documents it (README.md "Working with the Hypersim Dataset",
"Coordinate conventions", "Camera intrinsics"; contrib/mikeroberts3000/README.md and its
metadata_camera_parameters.csv; the notebook
contrib/mikeroberts3000/jupyter/01_casting_rays_that_match_hypersim_images.ipynb), and as
pipelines/sources/hypersim.py and tests/pipelines/test_source_hypersim.py read and write it:

    ROOT/metadata_camera_parameters.csv   one row per scene: scene_name, settings_output_img_height/width,
                                          settings_units_info_meters_scale (meters per asset unit),
                                          M_cam_from_uv_ij (3 x 3)
    ROOT/ai_VVV_NNN/images/scene_cam_00_final_preview/frame.IIII.tonemap.jpg    the photo
    ROOT/ai_VVV_NNN/images/scene_cam_00_geometry_hdf5/frame.IIII.depth_meters.hdf5
                                          key "dataset", float16 (H, W): Euclidean DISTANCE in meters from
                                          the optical centre to the surface; NaN where nothing was hit
    ROOT/ai_VVV_NNN/_detail/cam_00/camera_keyframe_orientations.hdf5   (N, 3, 3) R_world_from_cam
    ROOT/ai_VVV_NNN/_detail/cam_00/camera_keyframe_positions.hdf5      (N, 3) positions in asset units

Conversions from the renderer's conventions (OpenCV c2w: x right, y down, z forward; planar z-depth):
- Hypersim's camera axes are x right, y up, z backward (away from the view direction), so
  R_world_from_cam = R_opencv @ diag(1, -1, -1); positions are meters / meters_scale.
- M_cam_from_uv maps (u, v, 1), u in [-1, 1] left to right and v in [-1, 1] bottom to top at pixel
  centres, to a Hypersim camera-space ray. For a pinhole with focal f (pixels) and the principal point at
  the image centre, the OpenCV ray of pixel (x, y) is ((x - W/2) / f, (y - H/2) / f, 1) =
  (u W / (2f), -v H / (2f), 1); flipped into Hypersim's axes that is (u W / (2f), v H / (2f), -1), so
  M = diag(W / (2f), H / (2f), -1) (the repo's untilted scenes have this form, e.g. diag(0.577, 0.433, -1)).
- distance = z * |K^-1 [x, y, 1]| at pixel centres (the inverse of annotators/gt_depth.py
  `planar_from_distance`); the renderer's 0 (sky) becomes NaN, as Hypersim's no-hit pixels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CAMERA_CSV = "metadata_camera_parameters.csv"
METERS_SCALE = 0.0254  # meters per asset unit (inches), a value Hypersim scenes use: exercises the conversion
HYPERSIM_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])  # camera axes: y and z flipped


def scene_name(index: int) -> str:
    """Hypersim's scene name pattern ai_VVV_NNN for scene `index`."""
    return f"ai_001_{index:03d}"


def m_cam_from_uv(k: np.ndarray, width: int, height: int) -> np.ndarray:
    """Hypersim's M_cam_from_uv (3, 3) of a square-pixel pinhole K centred on the image (module docstring)."""
    k = np.asarray(k, dtype=np.float64)
    if not (np.isclose(k[0, 2], width / 2) and np.isclose(k[1, 2], height / 2) and np.isclose(k[0, 1], 0)):
        raise ValueError(f"only a centred, unskewed pinhole maps to an untilted M_cam_from_uv, got K={k.tolist()}")
    return np.diag([width / (2 * k[0, 0]), height / (2 * k[1, 1]), -1.0])


def distance_from_planar(z: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(H, W) Euclidean distance to the optical centre from planar z-depth; NaN where z <= 0 (no surface)."""
    from onegen.annotators.gt_depth import pixel_rays_norm

    height, width = z.shape
    distance = np.asarray(z, dtype=np.float64) * pixel_rays_norm(k, width, height)
    return np.where(z > 0, distance, np.nan)


def _write_h5(path: Path, array: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        file.create_dataset("dataset", data=array)


def write_hypersim_scene(root: str | Path, name: str, images: np.ndarray, z_depth: np.ndarray, c2w: np.ndarray,
                         k: np.ndarray) -> dict[str, str]:
    """One scene `name` under `root`: images (N, H, W, 3) uint8, planar z-depth (N, H, W) (0: no surface),
    OpenCV c2w (N, 4, 4) in meters, shared K (3, 3). Returns its metadata_camera_parameters.csv row."""
    from PIL import Image

    scene = Path(root) / name
    preview = scene / "images" / "scene_cam_00_final_preview"
    geometry = scene / "images" / "scene_cam_00_geometry_hdf5"
    preview.mkdir(parents=True, exist_ok=True)
    for i, (image, depth) in enumerate(zip(images, z_depth, strict=True)):
        Image.fromarray(image).save(preview / f"frame.{i:04d}.tonemap.jpg", quality=95)
        _write_h5(geometry / f"frame.{i:04d}.depth_meters.hdf5", distance_from_planar(depth, k).astype(np.float16))
    detail = scene / "_detail" / "cam_00"
    _write_h5(detail / "camera_keyframe_orientations.hdf5", c2w[:, :3, :3] @ HYPERSIM_FROM_OPENCV)
    _write_h5(detail / "camera_keyframe_positions.hdf5", c2w[:, :3, 3] / METERS_SCALE)
    height, width = images.shape[1:3]
    m = m_cam_from_uv(k, width, height)
    return {"scene_name": name, "settings_output_img_height": float(height), "settings_output_img_width": float(width),
            "settings_units_info_meters_scale": METERS_SCALE,
            **{f"M_cam_from_uv_{i}{j}": float(m[i, j]) for i in range(3) for j in range(3)}}


def write_camera_csv(root: str | Path, rows: list[dict[str, str]]) -> None:
    """ROOT/metadata_camera_parameters.csv with one row per scene (the columns the reader uses)."""
    names = ["scene_name", "settings_output_img_height", "settings_output_img_width",
             "settings_units_info_meters_scale"] + [f"M_cam_from_uv_{i}{j}" for i in range(3) for j in range(3)]
    with open(Path(root) / CAMERA_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        writer.writerows(rows)
