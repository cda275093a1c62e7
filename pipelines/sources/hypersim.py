"""Hypersim as published (`--kind hypersim`, or detected): one photo per rendered frame, with its camera
and its ground-truth depth named in meta.

Read from apple/ml-hypersim: README.md ("Working with the Hypersim Dataset", "Coordinate conventions",
"Camera trajectories", "Camera intrinsics"), contrib/mikeroberts3000/README.md,
contrib/mikeroberts3000/metadata_camera_parameters.csv and the notebook
contrib/mikeroberts3000/jupyter/01_casting_rays_that_match_hypersim_images.ipynb.

    ai_VVV_NNN/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg     the photo (one per frame;
                      the color/gamma/diffuse/residual previews beside it are not photos of their own)
    ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5   key "dataset", float16,
                      EUCLIDEAN DISTANCE in meters to the camera's optical centre (not planar depth)
    ai_VVV_NNN/_detail/cam_XX/camera_keyframe_orientations.hdf5   (N, 3, 3) R_world_from_cam
    ai_VVV_NNN/_detail/cam_XX/camera_keyframe_positions.hdf5      (N, 3) in asset units
    metadata_camera_parameters.csv (the ml-hypersim repo's, put it in the source folder or its parent):
                      per scene `settings_units_info_meters_scale` (meters per asset unit, as the
                      notebook uses it), output size, and the 3 x 3 `M_cam_from_uv_ij`

Cameras: Hypersim's camera axes are x right, y up, z away from the view direction; a pixel's ray in
camera space is M_cam_from_uv [u, v, 1] with u in [-1, 1] left to right and v in [-1, 1] bottom to top at
pixel centres (the notebook). Scenes with tilt-shift lenses have M[2, 0], M[2, 1] != 0, a homography:
we write it exactly as a pinhole K (upper triangular, RQ decomposition) and a fixed rotation of the
camera frame, folded into c2w. c2w is OpenCV (x right, y down, z forward), positions in meters. K is in
pixels of the photo actually read (pixel centres at +0.5): the listing computes it for the CSV's
`settings_output_img_width` x `_height` (the size of every published frame), and the worker that reads a
photo of another size (a downscaled copy) rescales it (`fit_to_photo`; another aspect ratio is the
frame's `read_error`).

Depth: `meta.depth` = {"uri", "encoding": "hypersim_distance_hdf5", "K"}; the `depth_gt` annotator
(annotators/gt_depth.py) turns the distance into planar depth z = distance / |K^-1 [x, y, 1]| (for an
untilted camera with fx = fy = f: distance * f / |(x - cx, y - cy, f)|) and writes it in the depth
annotator's convention. A frame without its depth file is still a photo (meta.depth null). `meta.depth.K`
stays in pixels of the depth map (the CSV's size), so a downscaled photo's depth is the annotator's row
error (its size differs from the photo's), never a depth read with the wrong K.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re

import fsspec
import numpy as np

from onegen.pipelines.sources.names import SourceError
from onegen.pipelines.sources.scene_cameras import fit_intrinsics, image_size

SCENE = re.compile(r"^ai_\d{3}_\d{3}$")
PREVIEW = re.compile(r"^scene_(cam_\d+)_final_preview$")
FRAME = re.compile(r"^frame\.(\d+)\.tonemap\.jpg$")
CAMERA_CSV = "metadata_camera_parameters.csv"


def is_scene(fs: fsspec.AbstractFileSystem, folder: str) -> bool:
    return bool(SCENE.match(posixpath.basename(folder.rstrip("/")))) and fs.isdir(posixpath.join(folder, "images"))


def looks_like_hypersim(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    if is_scene(fs, root):
        return True
    return any(is_scene(fs, p) for p in sorted(fs.ls(root, detail=False))[:5])


def camera_parameters(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, dict[str, str]]:
    """scene name -> its row of metadata_camera_parameters.csv (searched in root and its parent)."""
    for folder in (root, posixpath.dirname(root.rstrip("/"))):
        path = posixpath.join(folder, CAMERA_CSV)
        if fs.exists(path):
            with fs.open(path, "rb") as handle:
                return {row["scene_name"]: row for row in csv.DictReader(io.StringIO(handle.read().decode()))}
    raise SourceError(f"{root}: Hypersim needs {CAMERA_CSV} (ml-hypersim/contrib/mikeroberts3000) in the source "
                      "folder or its parent")


def pinhole_from_hypersim(m_cam_from_uv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3) in pixels, R (3, 3)) with OpenCV-camera ray directions = R @ K^-1 [x, y, 1] for pixel
    coordinates (x, y) (centres at +0.5), equal up to scale to Hypersim's M_cam_from_uv rays with the y
    and z axes flipped. R is the identity for an untilted camera."""
    to_uv = np.array([[2.0 / width, 0.0, -1.0], [0.0, -2.0 / height, 1.0], [0.0, 0.0, 1.0]])
    flip = np.diag([1.0, -1.0, -1.0])
    rays = flip @ np.asarray(m_cam_from_uv, dtype=np.float64) @ to_uv  # OpenCV camera rays per pixel
    upper, ortho = _rq(np.linalg.inv(rays))  # inv(rays) = K @ R^T
    signs = np.diag(np.sign(np.diag(upper)))
    upper, ortho = upper @ signs, signs @ ortho  # positive diagonal (signs @ signs = I)
    if np.linalg.det(ortho) < 0:  # the same map with both factors negated: a rotation, diagonal negative
        upper, ortho = -upper, -ortho
    return upper / upper[2, 2], ortho.T


def _rq(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import scipy.linalg

    return scipy.linalg.rq(matrix)


def hypersim_cameras(row: dict[str, str], orientations: np.ndarray, positions: np.ndarray) -> tuple[list, np.ndarray]:
    """(OpenCV c2w (4, 4) per keyframe, K) of one camera trajectory of a scene."""
    m = np.array([[float(row[f"M_cam_from_uv_{i}{j}"]) for j in range(3)] for i in range(3)])
    width, height = output_size(row)
    k, tilt = pinhole_from_hypersim(m, width, height)
    meters = float(row["settings_units_info_meters_scale"])
    flip = np.diag([1.0, -1.0, -1.0])
    poses = []
    for rotation, position in zip(orientations, positions, strict=True):
        c2w = np.eye(4)
        c2w[:3, :3] = np.asarray(rotation, dtype=np.float64) @ flip @ tilt
        c2w[:3, 3] = np.asarray(position, dtype=np.float64) * meters
        poses.append(c2w)
    return poses, k


def _read_hdf5(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    import h5py

    with fs.open(path, "rb") as handle, h5py.File(io.BytesIO(handle.read()), "r") as data:
        return data["dataset"][:]


def list_hypersim(spec) -> list[dict]:
    """One item per frame that has a tonemapped preview (see the module docstring)."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    scenes = [root] if is_scene(fs, root) else [p for p in sorted(fs.ls(root, detail=False)) if is_scene(fs, p)]
    parameters = camera_parameters(fs, root)
    items = []
    for scene in scenes:
        name = posixpath.basename(scene.rstrip("/"))
        images = posixpath.join(scene, "images")
        for preview in sorted(fs.ls(images, detail=False)):
            match = PREVIEW.match(posixpath.basename(preview.rstrip("/")))
            if match:
                items.extend(_camera_items(fs, scene, name, match.group(1), preview, parameters.get(name)))
    return items


def output_size(parameters: dict[str, str]) -> tuple[int, int]:
    """(width, height) of a scene's rendered frames, from its metadata_camera_parameters.csv row."""
    return int(float(parameters["settings_output_img_width"])), int(float(parameters["settings_output_img_height"]))


def _camera_items(fs, scene: str, name: str, cam: str, preview: str, parameters: dict | None) -> list[dict]:
    detail = posixpath.join(scene, "_detail", cam)
    problem, poses, k = None, [], None
    try:
        if parameters is None:
            raise ValueError(f"scene {name} is not in {CAMERA_CSV}")
        orientations = _read_hdf5(fs, posixpath.join(detail, "camera_keyframe_orientations.hdf5"))
        positions = _read_hdf5(fs, posixpath.join(detail, "camera_keyframe_positions.hdf5"))
        poses, k = hypersim_cameras(parameters, orientations, positions)
    except (OSError, KeyError, ValueError) as error:  # the trajectory's frames are rejected with this reason
        problem = f"{name}/{cam}: cameras unreadable: {type(error).__name__}: {error}"
    items = []
    geometry = posixpath.join(scene, "images", f"scene_{cam}_geometry_hdf5")
    for path in sorted(fs.ls(preview, detail=False)):
        frame = FRAME.match(posixpath.basename(path))
        if not frame:
            continue
        index = int(frame.group(1))
        depth = posixpath.join(geometry, f"frame.{frame.group(1)}.depth_meters.hdf5")
        meta: dict = {"reader": "hypersim", "scene": name, "camera": cam, "frame": index}
        error = problem or (None if index < len(poses) else f"{name}/{cam}: no camera keyframe {index}")
        if error is None:
            meta["cameras"] = [{"c2w": poses[index].tolist(), "K": k.tolist(), "calibrated_size": output_size(parameters)}]
            meta["convention"] = "opencv_c2w"
            meta["depth"] = ({"uri": fs.unstrip_protocol(depth), "encoding": "hypersim_distance_hdf5",
                              "K": k.tolist()} if fs.exists(depth) else None)
        info = fs.info(path)
        items.append({"uri": fs.unstrip_protocol(path), "path": path, "size": info.get("size"), "caption": None,
                      "caption_key": f"{name}_{cam}_{index:04d}", "meta": meta, "item_error": error,
                      "file_size": info.get("size"), "file_mtime": str(info.get("mtime") or "")})
    return items


def read_hypersim(spec, items: list[dict]):
    """Photo bytes; a frame whose camera could not be read is a `read_error` with that reason."""
    fs, _ = fsspec.core.url_to_fs(spec.path)
    for item in items:
        if item.get("item_error"):
            yield item, ValueError(item["item_error"])
            continue
        try:
            with fs.open(item["path"], "rb") as handle:
                data = handle.read()
            fit_to_photo(item, data)
        except (OSError, ValueError) as error:
            yield item, error
            continue
        yield item, data


def fit_to_photo(item: dict, data: bytes) -> None:
    """Rescale the item's camera K (in place) from the CSV's output size to the photo's own, when they
    differ. Raises ValueError for another aspect ratio. A photo whose header does not read is left as is:
    the image checks reject it with their own reason."""
    cameras = (item.get("meta") or {}).get("cameras")
    if not cameras:
        return
    try:
        size = image_size(data)
    except OSError:  # not a picture (PIL's UnidentifiedImageError): its reject comes from the image checks
        return
    camera = cameras[0]
    calibrated = tuple(camera["calibrated_size"])
    if size != calibrated:
        camera["K"] = fit_intrinsics(np.asarray(camera["K"]), calibrated, size, item["uri"]).tolist()
