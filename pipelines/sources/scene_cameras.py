"""Readers that turn one multiview scene folder into ONE catalog row (CATALOG_SCHEMA, kind "scene").

Every reader converts its format's cameras once, here, to the project convention: OpenCV
camera-to-world `c2w` (4, 4) (camera x right, y down, z forward) and pinhole `K` (3, 3) in pixels
of the stored image. The row's `meta` is a JSON string
  {"cameras": [{"c2w", "K", "width", "height"}, ...], "convention": "opencv_c2w", "reader": <name>, ...}
with one camera per entry of `view_images` (the image files' bytes, unchanged) and `view_uris`.
`width`/`height` are view 0's; `sha256` is `scene_sha256(view bytes)`; `key` is
`<source>-<first 20 hex of sha256>` (the caller may replace it). No ray code is imported here.

Formats: nerfstudio / instant-ngp transforms.json (`read_transforms_json`), COLMAP sparse models in
text or binary (`read_colmap`); CO3D has a module of its own (pipelines/sources/co3d.py) built on
`scene_row` and `fit_intrinsics`. Every file is read through fsspec
(a folder may be a local path or an s3:// / gs:// URL); K always follows the picture actually read
(`fit_intrinsics`: a calibration of w x h applied to a picture k times smaller is divided by k).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import struct
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
from PIL import Image

from onegen.core.camera_geometry import opengl_to_opencv

CONVENTION = "opencv_c2w"


def scene_sha256(view_bytes: list[bytes]) -> str:
    """sha256 over all views: the hash of the concatenated per-view sha256 digests, in view order."""
    outer = hashlib.sha256()
    for data in view_bytes:
        outer.update(hashlib.sha256(data).digest())
    return outer.hexdigest()


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_bytes(path: str | Path) -> bytes:
    """A whole file through fsspec (local path or URL)."""
    with fsspec.open(str(path), "rb") as handle:
        return handle.read()


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an encoded picture's header."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def scene_row(
    source: str,
    uri: str,
    reader: str,
    image_paths: list[str | Path],
    c2w: list[np.ndarray],
    intrinsics: list[np.ndarray],
    extra_meta: dict[str, Any] | None = None,
    view_bytes: list[bytes] | None = None,
) -> dict[str, Any]:
    """Assemble the catalog row from per-view pictures and their cameras (K already in the stored
    picture's pixels: readers pass K through `fit_intrinsics`); width/height are read from the
    pictures' headers. `view_bytes` are the views when the reader already holds them (read once, or
    undistorted); else each path is read through fsspec."""
    if not image_paths:
        raise ValueError(f"{uri}: no views")
    views = view_bytes if view_bytes is not None else [read_bytes(path) for path in image_paths]
    cameras = []
    for data, pose, k in zip(views, c2w, intrinsics, strict=True):
        width, height = image_size(data)
        cameras.append(
            {"c2w": np.asarray(pose).tolist(), "K": np.asarray(k).tolist(), "width": width, "height": height}
        )
    sha = scene_sha256(views)
    fmt = posixpath.splitext(str(image_paths[0]))[1].lower().lstrip(".")
    meta = {"cameras": cameras, "convention": CONVENTION, "reader": reader, **(extra_meta or {})}
    return {
        "key": f"{source}-{sha[:20]}",
        "source": source,
        "uri": uri,
        "kind": "scene",
        "image": None,
        "image_format": "jpg" if fmt == "jpeg" else fmt,
        "width": cameras[0]["width"],
        "height": cameras[0]["height"],
        "sha256": sha,
        "caption_original": None,
        "meta": json.dumps(meta),
        "subject": None,
        "view_images": views,
        "view_uris": [str(path) for path in image_paths],
    }


def fit_intrinsics(k: np.ndarray, calibrated: tuple[float, float], size: tuple[int, int], what: str) -> np.ndarray:
    """Rescale K from the calibrated (width, height) to a picture of `size` (same aspect only)."""
    width, height = size
    sx, sy = width / calibrated[0], height / calibrated[1]
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise ValueError(f"{what}: image {width}x{height} does not match calibration {calibrated}")
    return np.diag([sx, sy, 1.0]) @ k


def _fit_intrinsics(k: np.ndarray, calibrated: tuple[float, float], path: str | Path) -> np.ndarray:
    """`fit_intrinsics` for the picture at `path` (its header read through fsspec)."""
    with fsspec.open(str(path), "rb") as handle, Image.open(handle) as im:
        size = im.size
    return fit_intrinsics(k, calibrated, size, str(path))


def pick_views(n: int, max_views: int | None) -> list[int]:
    """Indices of at most `max_views` views spread evenly over n (all when None or 0)."""
    if not max_views or n <= max_views:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_views)})



# --- nerfstudio / instant-ngp -----------------------------------------------------------------
DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")  # OpenCV's order for its 5-coefficient model


def _frame_intrinsics(frame: dict, top: dict, size: tuple[int, int], what: str) -> tuple[np.ndarray, tuple[float, float]]:
    """K and calibrated (w, h) of one frame: per-frame keys override top-level ones; `size` is the
    picture's own (width, height), the calibration when the file names none."""

    def get(name: str) -> Any:
        return frame.get(name, top.get(name))

    w, h = get("w"), get("h")
    if w is None or h is None:
        w, h = size
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        angle_x = get("camera_angle_x")
        if angle_x is None:
            raise ValueError(f"{what}: transforms.json has neither fl_x nor camera_angle_x")
        fx = 0.5 * w / np.tan(0.5 * angle_x)
    if fy is None:
        angle_y = get("camera_angle_y")
        fy = 0.5 * h / np.tan(0.5 * angle_y) if angle_y is not None else fx
    cx, cy = get("cx"), get("cy")
    return intrinsics_matrix(fx, fy, w / 2 if cx is None else cx, h / 2 if cy is None else cy), (w, h)


def frame_distortion(frame: dict, top: dict) -> list[float]:
    """OpenCV (k1, k2, p1, p2, k3) of a frame (per-frame keys override top-level ones; absent = 0)."""
    return [float(frame.get(name, top.get(name)) or 0.0) for name in DISTORTION_KEYS]


def _frame_image(fs: fsspec.AbstractFileSystem, folder: str, file_path: str, images_dir: str = "") -> str:
    """The picture a frame names, in `images_dir` instead of its own folder when given (nerfstudio's
    downscaled copies: "images/frame_00001.png" is read as "images_4/frame_00001.png")."""
    relative = posixpath.normpath(file_path)
    if images_dir:
        relative = posixpath.join(images_dir, posixpath.basename(relative))
    path = posixpath.join(folder, relative)
    if not fs.exists(path) and not posixpath.splitext(path)[1] and fs.exists(path + ".png"):
        path = path + ".png"  # Blender-synthetic style "./train/r_0" without extension
    if not fs.exists(path):
        raise FileNotFoundError(f"{path}: image named in transforms.json is missing")
    return path


def read_transforms_json(
    folder: str | Path,
    source: str = "nerfstudio",
    filename: str = "transforms.json",
    max_views: int | None = None,
    images_dir: str = "",
    reader: str = "transforms_json",
) -> dict[str, Any]:
    """nerfstudio / instant-ngp `transforms.json` -> catalog row.

    Input convention: each frame's `transform_matrix` is an OpenGL c2w (camera x right, y up,
    z backward) in the file's world (nerfstudio's `applied_transform`, when present, only says how that
    world was made from the original data's and is recorded, not undone); intrinsics fl_x, fl_y, cx, cy,
    w, h at top level or per frame, in pixels of the w x h calibration, or `camera_angle_x` (horizontal
    field of view in radians; fl_y = fl_x unless camera_angle_y is given); cx, cy default to the image
    centre. K is rescaled to the picture actually read (`images_dir`, e.g. "images_4", reads the
    downscaled copies). Lens distortion (k1, k2, p1, p2, k3; OpenCV's model, nerfstudio's OPENCV camera)
    is removed: each distorted view is undistorted with OpenCV onto the same K (pipelines/sources/lens.py)
    and meta records the coefficients (`undistorted`). Frames keep the file's order; `max_views` keeps
    that many, evenly spaced. Converted to OpenCV by flipping the camera's y and z axes.
    """
    from onegen.pipelines.sources.lens import undistort_view

    fs, root = fsspec.core.url_to_fs(str(folder))
    with fs.open(posixpath.join(root, filename), "rb") as handle:
        top = json.loads(handle.read())
    frames = top.get("frames") or []
    frames = [frames[i] for i in pick_views(len(frames), max_views)]
    paths, poses, ks, views, undistorted = [], [], [], [], []
    for frame in frames:
        path = _frame_image(fs, root, frame["file_path"], images_dir)
        with fs.open(path, "rb") as handle:
            data = handle.read()
        k, calibrated = _frame_intrinsics(frame, top, image_size(data), path)
        k = fit_intrinsics(k, calibrated, image_size(data), path)
        coefficients = frame_distortion(frame, top)
        if any(coefficients):
            data = undistort_view(data, k, coefficients, posixpath.splitext(path)[1])
            undistorted.append(coefficients)
        paths.append(fs.unstrip_protocol(path) if "://" in str(folder) else path)
        views.append(data)
        ks.append(k)
        poses.append(opengl_to_opencv(np.asarray(frame["transform_matrix"], dtype=np.float64)))
    extra: dict[str, Any] = {}
    if undistorted:
        extra["undistorted"] = {"model": "opencv", "coefficients": DISTORTION_KEYS, "views": len(undistorted),
                                "first": undistorted[0]}
    if "applied_transform" in top:
        extra["applied_transform"] = top["applied_transform"]
    uri = posixpath.join(str(folder), filename)
    return scene_row(source, uri, reader, paths, poses, ks, extra, view_bytes=views)


# --- COLMAP -----------------------------------------------------------------------------------
# model id -> (name, number of params), as in COLMAP's src/colmap/sensor/models.h
COLMAP_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}  # fmt: skip


def _read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def _read_colmap_text(sparse: str) -> tuple[dict[int, dict], list[dict]]:
    cameras = {}
    for line in _read_text(posixpath.join(sparse, "cameras.txt")).splitlines():
        if line.strip() and not line.startswith("#"):
            elems = line.split()
            cameras[int(elems[0])] = {
                "model": elems[1], "width": int(elems[2]), "height": int(elems[3]),
                "params": [float(x) for x in elems[4:]],
            }  # fmt: skip
    images = []
    lines = iter(_read_text(posixpath.join(sparse, "images.txt")).splitlines())
    for line in lines:
        if line.strip() and not line.startswith("#"):
            elems = line.split()
            images.append(
                {"qvec": [float(x) for x in elems[1:5]], "tvec": [float(x) for x in elems[5:8]],
                 "camera_id": int(elems[8]), "name": " ".join(elems[9:])}
            )  # fmt: skip
            next(lines, None)  # the POINTS2D line that follows every image line (may be empty)
    return cameras, images


def _read_colmap_binary(sparse: str) -> tuple[dict[int, dict], list[dict]]:
    cameras = {}
    with fsspec.open(posixpath.join(sparse, "cameras.bin"), "rb") as f:
        for _ in range(struct.unpack("<Q", f.read(8))[0]):
            camera_id, model_id, width, height = struct.unpack("<iiQQ", f.read(24))
            name, n_params = COLMAP_MODELS[model_id]
            params = list(struct.unpack(f"<{n_params}d", f.read(8 * n_params)))
            cameras[camera_id] = {"model": name, "width": width, "height": height, "params": params}
    images = []
    with fsspec.open(posixpath.join(sparse, "images.bin"), "rb") as f:
        for _ in range(struct.unpack("<Q", f.read(8))[0]):
            values = struct.unpack("<idddddddi", f.read(64))
            name = b""
            while (char := f.read(1)) != b"\x00":
                name += char
            n_points = struct.unpack("<Q", f.read(8))[0]
            f.seek(24 * n_points, 1)  # (x, y, point3D_id) per 2-D point: not needed
            images.append(
                {
                    "qvec": list(values[1:5]),
                    "tvec": list(values[5:8]),
                    "camera_id": values[8],
                    "name": name.decode(),
                }
            )
    return cameras, images


def read_colmap_model(sparse: str | Path) -> tuple[dict[int, dict], list[dict]]:
    """(cameras by id {"model", "width", "height", "params"}, images [{"qvec", "tvec", "camera_id", "name"}])
    from a sparse model folder, binary (`cameras.bin`, `images.bin`) when present, else text."""
    sparse = str(sparse)
    fs, root = fsspec.core.url_to_fs(sparse)
    if fs.exists(posixpath.join(root, "cameras.bin")) and fs.exists(posixpath.join(root, "images.bin")):
        return _read_colmap_binary(sparse)
    if fs.exists(posixpath.join(root, "cameras.txt")) and fs.exists(posixpath.join(root, "images.txt")):
        return _read_colmap_text(sparse)
    raise FileNotFoundError(f"{sparse}: no COLMAP model (cameras/images .bin or .txt)")


def quaternion_to_rotation(qvec: np.ndarray) -> np.ndarray:
    """COLMAP / Hamilton unit quaternion (w, x, y, z) -> rotation matrix (3, 3)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def colmap_intrinsics(model: str, params: list[float]) -> tuple[np.ndarray, bool]:
    """K from COLMAP camera params and whether distortion was dropped (non-zero coefficients)."""
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        f, cx, cy = params[:3]
        return intrinsics_matrix(f, f, cx, cy), any(p != 0 for p in params[3:])
    if model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
        fx, fy, cx, cy = params[:4]
        return intrinsics_matrix(fx, fy, cx, cy), any(p != 0 for p in params[4:])
    raise ValueError(f"COLMAP camera model {model} is not supported (pinhole/radial/OpenCV only)")


def read_colmap(
    folder: str | Path,
    sparse_dir: str = "sparse/0",
    images_dir: str = "images",
    source: str = "colmap",
    max_views: int | None = None,
) -> dict[str, Any]:
    """COLMAP sparse model (cameras + images, `.bin` preferred over `.txt`) -> catalog row.

    Input convention: an image's qvec (w, x, y, z) and tvec are world-to-camera in OpenCV axes,
    x_cam = R(q) x_world + t, so c2w = [R^T | -R^T t]. Intrinsics: SIMPLE_PINHOLE, PINHOLE,
    SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV reduce to K (distortion dropped; meta records
    `distortion_dropped`); fisheye models raise ValueError. Views are ordered by image name.
    """
    folder = str(folder)
    cameras, images = read_colmap_model(posixpath.join(folder, sparse_dir))
    images = sorted(images, key=lambda image: image["name"])
    images = [images[i] for i in pick_views(len(images), max_views)]
    paths, poses, ks, dropped = [], [], [], False
    for image in images:
        camera = cameras[image["camera_id"]]
        k, has_distortion = colmap_intrinsics(camera["model"], camera["params"])
        dropped |= has_distortion
        path = posixpath.join(folder, images_dir, image["name"])
        rotation = quaternion_to_rotation(image["qvec"])
        c2w = np.eye(4)
        c2w[:3, :3] = rotation.T
        c2w[:3, 3] = -rotation.T @ np.asarray(image["tvec"], dtype=np.float64)
        paths.append(path)
        poses.append(c2w)
        ks.append(_fit_intrinsics(k, (camera["width"], camera["height"]), path))
    extra = {"distortion_dropped": dropped}
    return scene_row(source, posixpath.join(folder, sparse_dir), "colmap", paths, poses, ks, extra)
