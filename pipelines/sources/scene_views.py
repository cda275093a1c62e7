"""A scene's views as photos (`onegen ingest --views-as-photos`): one image row per view, with its camera and
the source's own depth of that view, so scene sources with depth (CO3D's depth maps, G-Objaverse's render
depth) make depth2image samples from their ground truth through the `depth_gt` annotator, as Hypersim's
photos do, and every other photo task too.

A scene reader (co3d.py, gobjaverse.py, scene_cameras.py, dl3dv.py) writes the scene row: `view_images`
(the views' bytes as stored), `view_uris`, `meta.cameras[i]` ({c2w (OpenCV), K in the view's pixels, width,
height}) and, where the source has depth, `meta.view_depths[i]` (a `meta.depth` entry of
annotators/gt_depth.py, or None). `view_photo_rows` turns one such row into photo rows:

    uri   = "<scene uri>#view<NNNN>"                  (distinct per view: keys stay unique and stable)
    meta  = {"scene_uri", "view", "camera": cameras[i], "depth": view_depths[i] (absent without one),
             "original_bytes", "reencoded"}
    caption_original = the scene's (a scene-level caption: Cap3D's, a caption.txt)

Each view goes through the same normalisation as any photo (`normalise_image`), so a view that fails it is
a reject of its own with its reason and the other views stay. To get multiview samples too, ingest the
same source again without the flag under another `--name`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from onegen.pipelines.sources.image_checks import ImageLimits, Rejected, normalise_image


def view_uri(scene_uri: str, view: int) -> str:
    return f"{scene_uri}#view{view:04d}"


def view_photo_rows(scene: dict[str, Any], limits: ImageLimits, make_key: Callable[[str, str, str], str]
                    ) -> list[dict[str, Any]]:
    """Photo rows (catalog columns, or a reject with reject_reason set) of an accepted scene row's views;
    `make_key(source, uri, content sha256)` is ingest's key rule."""
    meta = json.loads(scene["meta"])
    cameras = meta.get("cameras") or []
    depths = meta.get("view_depths") or [None] * len(scene["view_images"])
    rows = []
    for index, data in enumerate(scene["view_images"]):
        uri = view_uri(scene["uri"], index)
        sha = hashlib.sha256(data).hexdigest()
        base = {"source": scene["source"], "uri": uri, "key": make_key(scene["source"], uri, sha), "sha256": sha,
                "caption_original": scene.get("caption_original")}
        try:
            image = normalise_image(data, limits)
        except Rejected as rejected:
            rows.append({**base, "key": None, "reject_reason": rejected.reason, "reject_error": rejected.detail})
            continue
        own = {"scene_uri": scene["uri"], "view": index, "camera": cameras[index] if index < len(cameras) else None,
               "original_bytes": len(data), "reencoded": image.reencoded}
        if index < len(depths) and depths[index]:
            own["depth"] = depths[index]
        rows.append({**base, "kind": "image", "image": image.data, "image_format": image.image_format,
                     "width": image.width, "height": image.height, "meta": json.dumps(own), "subject": None,
                     "reject_reason": None, "reject_error": None})
    return rows
