"""DL3DV-10K as published (`--kind dl3dv`, or detected): one catalog scene per `<batch>/<hash>/` folder.

Layout, as `scripts/download.py` of DL3DV-10K/Dataset unpacks it (`{batch}/{hash}.zip` from the HF
repos DL3DV/DL3DV-ALL-{480P,960P,2K,4K}, extracted into `<odir>/<batch>/`; the batches are `1K` ...
`11K`, the scene list `cache/DL3DV-valid.csv` with columns hash, batch): a scene folder `<hash>/`
holds nerfstudio's `transforms.json` (the README: "All the data convention follows the NeRFStudio
convention") and the pictures in `images_4/` or `images_8/` (nerfstudio's downscaled copies of
`images/`; nerfstudio's own dataparser reads `images/frame_00001.png` as `images_<d>/frame_00001.png`,
nerfstudio/data/dataparsers/nerfstudio_dataparser.py). The calibration fl_x, fl_y, cx, cy, k1, k2, p1,
p2 is in pixels of the full-resolution w x h (camera_model OPENCV), `applied_transform` records how the
poses' world was made from COLMAP's.

Read by `scene_cameras.read_transforms_json`: OpenGL c2w -> OpenCV, K rescaled to the picture read
(images_4 is 4x smaller than w x h), the OPENCV distortion removed (lens.py), `--max-views` frames
kept evenly spaced (a DL3DV scene has ~300). The scene's `caption_key` is its hash. `source_dir` picks
`images_4` / `images_8` / `images` (default: the first present in that order: the largest pictures
short of full resolution, which the 960P and 480P releases hold).
"""

from __future__ import annotations

import posixpath
import re

import fsspec

from onegen.pipelines.sources.scene_cameras import read_transforms_json

IMAGE_FOLDERS = ("images_4", "images_8", "images_2", "images")
BATCH = re.compile(r"^\d+K$")


def is_scene(fs: fsspec.AbstractFileSystem, folder: str) -> bool:
    """A DL3DV scene folder: transforms.json beside a downscaled picture folder (images_N)."""
    if not fs.exists(posixpath.join(folder, "transforms.json")):
        return False
    return any(fs.isdir(posixpath.join(folder, name)) for name in IMAGE_FOLDERS[:-1])


def _subfolders(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    return sorted(info["name"].rstrip("/") for info in fs.ls(folder, detail=True) if info["type"] == "directory")


def looks_like_dl3dv(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    """A DL3DV download (batch folders of scenes) or one batch folder (scenes), told from its first entries."""
    for child in _subfolders(fs, root)[:3]:
        if is_scene(fs, child):
            return True
        if BATCH.match(posixpath.basename(child)) and any(is_scene(fs, s) for s in _subfolders(fs, child)[:3]):
            return True
    return False


def list_dl3dv(spec) -> list[dict]:
    """One item per scene folder under the root (the root itself, its children, or batch/hash)."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    if is_scene(fs, root):
        scenes = [root]
    else:
        scenes = []
        for child in _subfolders(fs, root):
            scenes.extend([child] if is_scene(fs, child) else [s for s in _subfolders(fs, child) if is_scene(fs, s)])
    return [{"uri": fs.unstrip_protocol(folder), "path": fs.unstrip_protocol(folder), "reader": "dl3dv",
             "caption": None, "caption_key": posixpath.basename(folder), "size": _size(fs, folder)}
            for folder in scenes]


def _size(fs: fsspec.AbstractFileSystem, folder: str) -> int:
    info = fs.info(posixpath.join(folder, "transforms.json"))
    return int(info.get("size") or 0)


def read_dl3dv_scene(item: dict, source: str, max_views: int | None) -> dict:
    """The catalog row of one DL3DV scene (see the module docstring)."""
    fs, folder = fsspec.core.url_to_fs(item["path"])
    images_dir = next(name for name in IMAGE_FOLDERS if fs.isdir(posixpath.join(folder, name)))
    return read_transforms_json(item["path"], source=source, max_views=max_views, images_dir=images_dir,
                                reader="dl3dv")
