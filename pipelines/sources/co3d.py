"""CO3D v2 as published (`--kind co3d`, or detected; also found by `--kind scenes`): one catalog scene per
sequence, with its cameras and, per view, where its depth map and masks are.

Read from facebookresearch/co3d (commit eb51d75): README.md ("Dataset format", "Set lists") and
co3d/dataset/data_types.py (`FrameAnnotation`, `ImageAnnotation`, `DepthAnnotation`, `MaskAnnotation`,
`ViewpointAnnotation`, `SequenceAnnotation`, `load_dataclass_jgzip`); the depth decoding from
facebookresearch/pytorch3d pytorch3d/implicitron/dataset/utils.py (`load_depth`, `load_16big_png_depth`,
`load_1bit_png_mask`, `load_depth_mask`) and json_index_dataset.py (`_load_mask_depth`,
`_get_pytorch3d_camera`).

    <dataset_root>/<category>/frame_annotations.jgz     gzipped JSON list of FrameAnnotation, every frame
                                                         of every sequence of the category (tens of MB)
    <dataset_root>/<category>/sequence_annotations.jgz  gzipped JSON list of SequenceAnnotation
                                                         {sequence_name, category, video, point_cloud,
                                                         viewpoint_quality_score ("the bigger the better")}
    <dataset_root>/<category>/set_lists/set_lists_<subset>.json  {"train"|"val"|"test": [[seq, frame, path]]}
    <dataset_root>/<category>/<sequence>/{images,depths,depth_masks,masks}/...

A frame: {sequence_name, frame_number, frame_timestamp, image {path, size [H, W]}, depth {path,
scale_adjustment, mask_path}, mask {path, mass}, viewpoint {R, T, focal_length, principal_point,
intrinsics_format}}; every path is relative to the dataset root (the category's parent).

Cameras (`co3d_camera`): PyTorch3D's row-vector world-to-view X_cam = X_world @ R + T, camera x left, y up,
z forward; NDC intrinsics ("ndc_norm_image_bounds": the image spans [-1, 1] on both axes; "ndc_isotropic":
the shorter side does). Converted to OpenCV c2w and K in pixels of the annotated H x W, then rescaled to
the picture actually read (`scene_cameras.fit_intrinsics`).

Depth: a 16-bit PNG whose uint16 values are the bits of float16 `depth / scale_adjustment`, so
depth = png.view(float16) * scale_adjustment, non-finite values 0; z-depth (PyTorch3D's
`get_rgbd_point_cloud` unprojects CO3D depth as z, euclidean=False). The depth mask is a 1-bit PNG,
valid where > 0 (`load_1bit_png_mask`). The scene row's meta records, per view, `view_depths[i]` =
{"uri", "mask_uri", "scale_adjustment", "encoding": "co3d_depth_png16"} (null when the frame has no
depth) and `foreground_masks[i]` (the `masks/` PNG's uri, or null); the decoder is
annotators/gt_depth.py `read_co3d_depth`. Files are not checked for existence at ingest (one request per
frame saved); an unreadable one is the depth reader's error. `--views-as-photos` makes each view a photo
with its depth, for depth2image from ground truth (pipelines/sources/scene_views.py).

Cluster-first reading. The driver lists sequences from the small sequence_annotations.jgz (a category
folder without it, hand-made, is listed from frame_annotations.jgz instead); items of one category are
consecutive in uri order (`<category>/frame_annotations.jgz#<sequence>` share that prefix), so a part holds
runs of one category. On the worker, `PartReader` parses a category's frame_annotations.jgz once for all
of the part's sequences of it and keeps only their frames.

Reasons a sequence is rejected (besides the image checks): `low_viewpoint_quality` (below
`--min-viewpoint-quality`, or no score when a minimum is set), `no_frames` (listed, but no frame in
frame_annotations.jgz), `bad_annotations` (a jgz that does not parse: every sequence of the category, or
one reject for the category when its sequence_annotations.jgz is bad), `bad_scene` (a frame's image
missing or unreadable, a frame without a viewpoint).
"""

from __future__ import annotations

import gzip
import json
import posixpath
from typing import Any

import fsspec
import numpy as np

from onegen.pipelines.sources.image_checks import Rejected
from onegen.pipelines.sources.scene_cameras import (
    fit_intrinsics,
    image_size,
    intrinsics_matrix,
    pick_views,
    scene_row,
)

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
LEGACY_FRAME_ANNOTATIONS = "frame_annotations.json"  # hand-made folders of earlier onegen fixtures
DEPTH_ENCODING = "co3d_depth_png16"  # the name annotators/gt_depth.py decodes
LOW_QUALITY = "low_viewpoint_quality"
READER = "co3d"


# --- cameras ---------------------------------------------------------------------------------------
def co3d_camera(viewpoint: dict, image_size_hw: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """CO3D viewpoint -> (OpenCV c2w (4, 4), K (3, 3) in pixels of the annotated H x W).

    CO3D stores PyTorch3D cameras: row-vector world-to-view X_cam = X_world @ R + T with camera
    axes x left, y up, z forward, so the OpenCV world-to-camera is R_cv = F R^T, t_cv = F T with
    F = diag(-1, -1, 1). Intrinsics are NDC: with half = (W/2, H/2) for "ndc_norm_image_bounds"
    (CO3Dv2) or min(W, H)/2 on both axes for "ndc_isotropic" (CO3Dv1), focal_px = focal * half and
    principal_px = (W/2, H/2) - principal_point * half (PyTorch3D NDC x, y point left and up).
    """
    flip = np.diag([-1.0, -1.0, 1.0])
    rotation = flip @ np.asarray(viewpoint["R"], dtype=np.float64).T
    translation = flip @ np.asarray(viewpoint["T"], dtype=np.float64)
    height, width = image_size_hw
    half_wh = np.array([width, height], dtype=np.float64) / 2
    fmt = viewpoint.get("intrinsics_format", "ndc_norm_image_bounds").lower()
    if fmt == "ndc_norm_image_bounds":
        rescale = half_wh
    elif fmt == "ndc_isotropic":
        rescale = np.full(2, half_wh.min())
    else:
        raise ValueError(f"unknown CO3D intrinsics_format {fmt!r}")
    focal = np.asarray(viewpoint["focal_length"], dtype=np.float64) * rescale
    principal = half_wh - np.asarray(viewpoint["principal_point"], dtype=np.float64) * rescale
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T
    c2w[:3, 3] = -rotation.T @ translation
    return c2w, intrinsics_matrix(focal[0], focal[1], principal[0], principal[1])


# --- annotation files ------------------------------------------------------------------------------
def read_annotations(fs: fsspec.AbstractFileSystem, path: str) -> list[dict]:
    """A category's annotation list (gzipped JSON, or plain JSON for a `.json` file).
    Raises Rejected("bad_annotations") when it does not parse, OSError when it cannot be read."""
    with fs.open(path, "rb") as handle:
        raw = handle.read()
    try:
        listed = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, EOFError, ValueError) as error:  # gzip.BadGzipFile is an OSError; JSONDecodeError a ValueError
        raise Rejected("bad_annotations", f"{path}: {type(error).__name__}: {error}") from None
    if not isinstance(listed, list) or not all(isinstance(entry, dict) for entry in listed):
        raise Rejected("bad_annotations", f"{path}: not a list of annotation objects")
    return listed


def frame_annotations_path(fs: fsspec.AbstractFileSystem, folder: str) -> str | None:
    for name in (FRAME_ANNOTATIONS, LEGACY_FRAME_ANNOTATIONS):
        if fs.exists(posixpath.join(folder, name)):
            return posixpath.join(folder, name)
    return None


def is_category(fs: fsspec.AbstractFileSystem, folder: str) -> bool:
    """A CO3D category folder: it has the category's frame annotations."""
    return frame_annotations_path(fs, folder) is not None


def looks_like_co3d(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    """A published CO3D category (both jgz files) at `root` or among its first subfolders."""
    def published(folder: str) -> bool:
        return all(fs.exists(posixpath.join(folder, n)) for n in (FRAME_ANNOTATIONS, SEQUENCE_ANNOTATIONS))

    if published(root):
        return True
    folders = sorted(i["name"] for i in fs.ls(root, detail=True) if i["type"] == "directory")
    return any(published(folder) for folder in folders[:5])


# --- listing (driver) ------------------------------------------------------------------------------
def list_co3d(spec) -> list[dict]:
    """One item per sequence of every category folder at the source path (the root or its children)."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    if is_category(fs, root):
        return category_items(fs, root)
    items = []
    for info in sorted(fs.ls(root, detail=True), key=lambda i: i["name"]):
        if info["type"] == "directory" and is_category(fs, info["name"]):
            items.extend(category_items(fs, info["name"]))
    return items


def category_items(fs: fsspec.AbstractFileSystem, folder: str) -> list[dict]:
    """The category's sequences, named by sequence_annotations.jgz (small) without reading the frames.
    A bad sequence_annotations.jgz is one item carrying the problem (`item_error`): its reject."""
    frames_path = frame_annotations_path(fs, folder)
    frames_url = fs.unstrip_protocol(frames_path)
    root = fs.unstrip_protocol(posixpath.dirname(folder.rstrip("/")))
    size = int(fs.info(frames_path).get("size") or 0)  # a changed annotation file changes the fingerprint
    base = {"path": frames_url, "root": root, "reader": READER, "category": posixpath.basename(folder.rstrip("/")),
            "size": size, "caption": None}
    sequences_path = posixpath.join(folder, SEQUENCE_ANNOTATIONS)
    try:
        if fs.exists(sequences_path):
            scores = {s["sequence_name"]: s.get("viewpoint_quality_score") for s in read_annotations(fs, sequences_path)}
        else:  # hand-made: the sequences are those of the frames (the whole file, read on the driver)
            scores = {f["sequence_name"]: None for f in read_annotations(fs, frames_path)}
    except (Rejected, KeyError, TypeError) as error:
        detail = error.detail if isinstance(error, Rejected) else f"{sequences_path}: {type(error).__name__}: {error}"
        return [{**base, "uri": fs.unstrip_protocol(sequences_path), "sequence": None, "caption_key": None,
                 "item_error": detail}]
    return [{**base, "uri": f"{frames_url}#{name}", "sequence": name, "viewpoint_quality_score": score,
             "caption_key": name} for name, score in sorted(scores.items())]


# --- reading (worker) ------------------------------------------------------------------------------
class PartReader:
    """Reads the CO3D items of one ingest part in order. Each category's frame_annotations.jgz is parsed
    once (on its first sequence in the part) and only the frames of the part's sequences of it are kept;
    one category is held at a time (items of a category are consecutive)."""

    def __init__(self, items: list[dict], source: str, max_views: int | None, min_quality: float):
        self.source, self.max_views, self.min_quality = source, max_views, min_quality
        self._wanted: dict[str, set[str]] = {}
        for item in items:
            if item.get("reader") == READER and item.get("sequence") and not self._filtered(item):
                self._wanted.setdefault(item["path"], set()).add(item["sequence"])
        self._path: str | None = None
        self._frames: dict[str, list[dict]] | Rejected = {}

    def _filtered(self, item: dict) -> str | None:
        """Why the quality filter drops `item` (None: kept)."""
        if self.min_quality <= 0:
            return None
        score = item.get("viewpoint_quality_score")
        if score is None:
            return f"sequence {item['sequence']}: no viewpoint_quality_score (minimum {self.min_quality})"
        if score < self.min_quality:
            return f"sequence {item['sequence']}: viewpoint_quality_score {score} < {self.min_quality}"
        return None

    def read(self, item: dict) -> dict:
        """The catalog row of one sequence item. Raises Rejected (a reason of the module docstring),
        OSError / ValueError / KeyError for a bad scene."""
        if item.get("item_error"):
            raise Rejected("bad_annotations", item["item_error"])
        low = self._filtered(item)
        if low:
            raise Rejected(LOW_QUALITY, low)
        frames = self._category(item["path"])
        if isinstance(frames, Rejected):
            raise Rejected(frames.reason, frames.detail)
        sequence = frames.get(item["sequence"]) or []
        if not sequence:
            raise Rejected("no_frames", f"{item['path']}: no frames of sequence {item['sequence']!r}")
        try:
            return sequence_row(sequence, item, self.source, self.max_views)
        except (TypeError, IndexError) as error:  # a frame whose fields have the wrong shape (user JSON)
            raise ValueError(f"sequence {item['sequence']}: malformed frame: {type(error).__name__}: {error}") from None

    def _category(self, path: str) -> dict[str, list[dict]] | Rejected:
        if path != self._path:
            self._path, self._frames = path, {}  # the previous category's frames are dropped first
            wanted = self._wanted.get(path, set())
            fs, local = fsspec.core.url_to_fs(path)
            try:
                frames = read_annotations(fs, local)
            except Rejected as rejected:
                self._frames = rejected  # every sequence of the category gets this reason, parsed once
                return rejected
            kept: dict[str, list[dict]] = {name: [] for name in wanted}
            for frame in frames:
                if frame.get("sequence_name") in kept:
                    kept[frame["sequence_name"]].append(frame)
            self._frames = kept
        return self._frames


def sequence_row(frames: list[dict], item: dict, source: str, max_views: int | None) -> dict[str, Any]:
    """One sequence's frames -> catalog row (scene_cameras.scene_row): frames ordered by frame_number,
    `max_views` kept evenly spaced, every picture read once; K fit to the picture read."""
    frames = sorted(frames, key=lambda frame: frame["frame_number"])
    frames = [frames[i] for i in pick_views(len(frames), max_views)]
    fs, root = fsspec.core.url_to_fs(item["root"])
    urls, views, poses, ks, depths, masks = [], [], [], [], [], []
    for frame in frames:
        path = posixpath.join(root, frame["image"]["path"])
        with fs.open(path, "rb") as handle:
            data = handle.read()
        height, width = frame["image"]["size"]
        c2w, k = co3d_camera(frame["viewpoint"], [height, width])
        ks.append(fit_intrinsics(k, (width, height), image_size(data), path))
        poses.append(c2w)
        views.append(data)
        urls.append(fs.unstrip_protocol(path))
        depths.append(_depth_entry(fs, root, frame.get("depth")))
        mask = frame.get("mask") or {}
        masks.append(fs.unstrip_protocol(posixpath.join(root, mask["path"])) if mask.get("path") else None)
    extra = {"sequence_name": item["sequence"], "category": item.get("category"),
             "viewpoint_quality_score": item.get("viewpoint_quality_score"),
             "frame_numbers": [frame["frame_number"] for frame in frames], "view_depths": depths,
             "foreground_masks": masks}
    return scene_row(source, item["uri"], READER, urls, poses, ks, extra, view_bytes=views)


def _depth_entry(fs: fsspec.AbstractFileSystem, root: str, depth: dict | None) -> dict | None:
    if not depth or not depth.get("path"):
        return None
    mask = depth.get("mask_path")
    return {"uri": fs.unstrip_protocol(posixpath.join(root, depth["path"])),
            "mask_uri": fs.unstrip_protocol(posixpath.join(root, mask)) if mask else None,
            "scale_adjustment": float(depth["scale_adjustment"]), "encoding": DEPTH_ENCODING}


def read_co3d(
    frame_annotations: str,
    dataset_root: str,
    sequence_name: str | None = None,
    source: str = "co3d",
    max_views: int | None = None,
) -> dict[str, Any]:
    """One sequence of a frame annotations file (.jgz or .json) -> catalog row, without a listing (a
    single-sequence file needs no `sequence_name`); image paths are relative to `dataset_root`."""
    fs, path = fsspec.core.url_to_fs(str(frame_annotations))
    frames = read_annotations(fs, path)
    names = sorted({frame["sequence_name"] for frame in frames})
    if sequence_name is None:
        if len(names) != 1:
            raise ValueError(f"{frame_annotations}: {len(names)} sequences; pass sequence_name")
        sequence_name = names[0]
    item = {"uri": f"{frame_annotations}#{sequence_name}", "root": str(dataset_root), "sequence": sequence_name}
    sequence = [frame for frame in frames if frame["sequence_name"] == sequence_name]
    if not sequence:
        raise ValueError(f"{frame_annotations}: no frames of sequence {sequence_name!r}")
    return sequence_row(sequence, item, source, max_views)
