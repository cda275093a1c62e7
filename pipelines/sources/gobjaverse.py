"""G-Objaverse renders as published (`--kind gobjaverse`, or detected): one catalog scene per object.

Read from modelscope/richdreamer `dataset/gobjaverse/` (commit e467759): README.md ("Folder Structure",
"Download"), download_gobjaverse_280k.py, depth_warp_example.py and process_unity_dataset.py.

Layout. The README's tree is `ROOT/<dictionary_id>/<instance_id>/campos_512_v4/<NNNNN>/<NNNNN>.json`
(camera) beside `<NNNNN>.png` (RGBA render), `_albedo.png`, `_hdr.exr`, `_mr.png` and `_nd.exr` (normal
and depth); the index `gobjaverse_280k.json` lists objects as "<dictionary_id>/<instance_id>", and
download_gobjaverse_280k.py saves view `NNNNN` (40 of them, 00000..00039) of an object to
`<savedir>/<dictionary_id>/<instance_id>/<NNNNN>/` WITHOUT the `campos_512_v4` level: both are read.
SOURCE may be ROOT, one dictionary folder, or one object folder. One item per object folder; an object
with no view folder, a view without its PNG or with a malformed JSON is that object's `bad_scene`.

Cameras. depth_warp_example.py builds from the json the Blender c2w [x, -y, -z, origin] (columns) and,
for its pixel reprojection with K, multiplies by diag(1, -1, -1, 1): the OpenCV c2w (x right, y down,
z forward) is therefore columns [x, y, z, origin], taken as is. Intrinsics: from the json's own
`x_fov` / `y_fov` (radians; fx = W / 2 / tan(x_fov / 2), as every G-Objaverse loader we found reads them)
when present, else depth_warp_example.py's constant fx = fy = 1422.222 / 1024 * H (its get_intr uses the
height for both); principal point at the picture's centre (W / 2, H / 2, both sources). K is in pixels
of the PNG actually read; meta `intrinsics_from` says which. `max_views` keeps views evenly spaced.

Depth. `_nd.exr` holds the world normal in its first three channels and depth in the fourth:
depth_warp_example.py's read_dnormal takes `cv2.imread(..., IMREAD_UNCHANGED)[..., 3]` (cv2 returns
B, G, R, A: the file's A channel), zeroes it below `|origin| - 0.867` (0.867 = sqrt(3) / 2, the
normalised object's bounding sphere: nearer is background), and back-projects it as PLANAR depth
(K^-1 [x, y, 1] * depth). Per view, meta `view_depths[i]` = {"uri", "encoding": "gobjaverse_nd_exr",
"camera_distance": |origin|} (null where the view has no `_nd.exr`); annotators/gt_depth.py
`read_gobjaverse_depth` decodes it (and owns the 0.867); `--views-as-photos` makes each view a photo with
that depth, for depth2image from ground truth (pipelines/sources/scene_views.py).

Objects and captions. `gobjaverse_280k_index_to_objaverse.json` (or `gobjaverse_index_to_objaverse.json`),
found in SOURCE or a folder above it, maps "<dictionary_id>/<instance_id>" to Objaverse's
"<000-xxx>/<uid>.glb" (read so by the loaders that use it, e.g. `mapping[id][: -len(".glb")]`). With it
a scene's `caption_key` is its Objaverse uid, so Cap3D's header-less `uid,caption` CSV joins through
`--captions` (pipelines/sources/caption_tables.py); without it, the G-Objaverse id. `ids` (a file)
keeps only listed objects, by G-Objaverse id or Objaverse uid: LGM's 80K subset as ashawkey/
objaverse_filter publishes it (`kiuisobj_v1_merged_80K.csv`, header-less `<000-xxx>,<uid>` rows;
`gobj_merged.json`, a JSON list of G-Objaverse ids), or a text file of one id per line.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re

import fsspec
import numpy as np

from onegen.pipelines.sources.names import SourceError
from onegen.pipelines.sources.scene_cameras import image_size, intrinsics_matrix, pick_views, scene_row

RENDERS = "campos_512_v4"
VIEW = re.compile(r"^\d{5}$")
MAPPINGS = ("gobjaverse_280k_index_to_objaverse.json", "gobjaverse_index_to_objaverse.json")
FOCAL_PER_HEIGHT = 1422.222 / 1024  # depth_warp_example.py get_intr: fx = fy = 1422.222 * h / 1024


def _folders(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    return sorted(info["name"].rstrip("/") for info in fs.ls(folder, detail=True) if info["type"] == "directory")


def _name(folder: str) -> str:
    return posixpath.basename(folder.rstrip("/"))


def is_object(fs: fsspec.AbstractFileSystem, folder: str) -> bool:
    """An object folder: its `campos_512_v4/` render folder, or (as the download script saves it) view folders
    `NNNNN/` holding `NNNNN.json`."""
    if fs.isdir(posixpath.join(folder, RENDERS)):
        return True
    views = [f for f in _folders(fs, folder)[:2] if VIEW.match(_name(f))]
    return any(fs.exists(posixpath.join(f, f"{_name(f)}.json")) for f in views)


def _object_depth(fs: fsspec.AbstractFileSystem, root: str) -> int | None:
    """0 when `root` is an object, 1 when its folders are objects, 2 when theirs are; None otherwise
    (told from the first few folders at each level)."""
    if is_object(fs, root):
        return 0
    children = _folders(fs, root)
    if any(is_object(fs, c) for c in children[:3]):
        return 1
    for child in children[:3]:
        if any(is_object(fs, g) for g in _folders(fs, child)[:3]):
            return 2
    return None


def looks_like_gobjaverse(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    return _object_depth(fs, root) is not None


def find_mapping(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, str]:
    """G-Objaverse id -> Objaverse uid, from the first mapping file in `root` or a folder above it ({} if none)."""
    folder = root.rstrip("/")
    for _ in range(3):
        for name in MAPPINGS:
            path = posixpath.join(folder, name)
            if fs.exists(path):
                with fs.open(path, "rb") as handle:
                    mapping = json.loads(handle.read())
                if not isinstance(mapping, dict):
                    raise SourceError(f"{path}: expected a JSON object of id -> '<000-xxx>/<uid>.glb'")
                return {key: posixpath.basename(value).split(".", 1)[0] for key, value in mapping.items()}
        folder = posixpath.dirname(folder)
    return {}


def load_ids(path: str) -> set[str]:
    """The ids an `ids` file lists (see the module docstring): CSV rows' last field, a JSON list (or object's
    keys), else one id per line."""
    try:
        with fsspec.open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"ids file {path}: {error}") from None
    if path.endswith(".json"):
        try:
            listed = json.loads(text)
        except json.JSONDecodeError as error:
            raise SourceError(f"ids file {path}: {error}") from None
        return {str(value) for value in listed}
    if path.endswith(".csv"):
        return {row[-1].strip() for row in csv.reader(io.StringIO(text)) if row and row[-1].strip()}
    return {line.strip() for line in text.splitlines() if line.strip()}


def list_gobjaverse(spec) -> list[dict]:
    """One item per object folder (see the module docstring); `spec.ids` keeps the listed ones."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    depth = _object_depth(fs, root)
    if depth is None:
        raise SourceError(f"{spec.path}: no G-Objaverse object folders (<id>/{RENDERS}/NNNNN/NNNNN.json)")
    objects = [root]
    for _ in range(depth):
        objects = [child for folder in objects for child in _folders(fs, folder)]
    mapping = find_mapping(fs, root)
    wanted = load_ids(spec.ids) if spec.ids else None
    items = []
    for folder in objects:
        gobjaverse_id = f"{_name(posixpath.dirname(folder))}/{_name(folder)}"
        uid = mapping.get(gobjaverse_id)
        if wanted is not None and gobjaverse_id not in wanted and uid not in wanted:
            continue
        items.append({"uri": fs.unstrip_protocol(folder), "path": fs.unstrip_protocol(folder), "reader": "gobjaverse",
                      "caption": None, "caption_key": uid or gobjaverse_id, "gobjaverse_id": gobjaverse_id,
                      "objaverse_uid": uid})
    return items


def view_camera(record: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, str]:
    """(OpenCV c2w (4, 4), K (3, 3) in pixels of a `size` = (W, H) picture, where K came from) of one view json."""
    c2w = np.eye(4)
    for column, name in enumerate(("x", "y", "z", "origin")):
        c2w[:3, column] = np.asarray(record[name], dtype=np.float64).reshape(3)
    width, height = size
    if "x_fov" in record and "y_fov" in record:
        fx = 0.5 * width / np.tan(0.5 * float(record["x_fov"]))
        fy = 0.5 * height / np.tan(0.5 * float(record["y_fov"]))
        source = "json x_fov/y_fov"
    else:
        fx = fy = FOCAL_PER_HEIGHT * height
        source = "depth_warp_example 1422.222/1024"
    return c2w, intrinsics_matrix(fx, fy, width / 2, height / 2), source  # K of the picture read: no rescale


def read_gobjaverse_scene(item: dict, source: str, max_views: int | None) -> dict:
    """The catalog row of one object (see the module docstring). Raises OSError / ValueError / KeyError /
    JSONDecodeError for a bad object (the caller's `bad_scene`)."""
    fs, folder = fsspec.core.url_to_fs(item["path"])
    renders = posixpath.join(folder, RENDERS) if fs.isdir(posixpath.join(folder, RENDERS)) else folder
    views = [f for f in _folders(fs, renders) if VIEW.match(_name(f))]
    if not views:
        raise ValueError(f"{item['path']}: no view folders (NNNNN/)")
    paths, poses, ks, images, depth, origins = [], [], [], [], [], set()
    for view in (views[i] for i in pick_views(len(views), max_views)):
        stem = posixpath.join(view, _name(view))
        with fs.open(stem + ".json", "rb") as handle:
            record = json.loads(handle.read())
        if not isinstance(record, dict):
            raise ValueError(f"{stem}.json: not a JSON object")
        with fs.open(stem + ".png", "rb") as handle:
            data = handle.read()
        c2w, k, intrinsics_from = view_camera(record, image_size(data))
        origins.add(intrinsics_from)
        exr = stem + "_nd.exr"
        depth.append({"uri": fs.unstrip_protocol(exr), "encoding": "gobjaverse_nd_exr",
                      "camera_distance": float(np.linalg.norm(c2w[:3, 3]))} if fs.exists(exr) else None)
        paths.append(fs.unstrip_protocol(stem + ".png"))
        poses.append(c2w)
        ks.append(k)
        images.append(data)
    extra = {"gobjaverse_id": item["gobjaverse_id"], "objaverse_uid": item.get("objaverse_uid"),
             "intrinsics_from": "; ".join(sorted(origins)), "view_depths": depth}
    return scene_row(source, item["uri"], "gobjaverse", paths, poses, ks, extra, view_bytes=images)
