"""Ground-truth depth layouts (NYUv2 test, DIODE val, a plain folder) and depth prediction files.

Read from prs-eth/Marigold (commit b1dffaa): src/dataset/nyu_dataset.py, diode_dataset.py,
base_depth_dataset.py, data_split/nyu_depth/labeled/filename_list_test.txt and
data_split/diode_depth/diode_val_all_filename_list.txt.

- NYUv2 (`nyuv2_items`): the labeled test split as Marigold reads it, its extracted layout
  `test/<scene>/rgb_NNNN.png`, `depth_NNNN.png` (uint16 millimetres, the *raw* depth; Marigold evaluates
  against it, not `filled_NNNN.png`), 654 images of 480 x 640. Item id `test/<scene>/rgb_NNNN`;
  prediction `test/<scene>/pred_NNNN` (Marigold's `DepthFileNameMode.rgb_id`). Not read: the original
  `nyu_depth_v2_labeled.mat` (HDF5, would need h5py) and Marigold's packed .tar (unpack it first).
- DIODE (`diode_items`): the val layout as published, `val/{indoors,outdoor}/scene_*/scan_*/<id>.png`,
  `<id>_depth.npy` (metres, (H, W, 1)), `<id>_depth_mask.npy`; the mask is the valid set. Item id
  `indoors/scene_00019/scan_00183/<id>`; prediction `.../pred_<id>` (`DepthFileNameMode.id`).
- Plain folder (`folder_items`): `<name>.npy` metric depth, optional `<name>_mask.npy`, any nesting;
  item id `<name>`, prediction `<name>`.
A prediction stem may be `<stem>.npy` (float map), `<stem>.png` (8-bit grey/RGB: mean of R, G, B; or
16-bit) or `<stem>/view_1_generated.png` (an `onegen sample --task image2depth --out <stem>` folder).
The values' scale does not matter (the protocol fits scale and shift). Local folders only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from onegen.evaluation.pairing import is_sample_companion
from onegen.evaluation.results import ItemError

SAMPLE_DEPTH_VIEW = "view_1_generated.png"  # image2depth: view 0 is the given image, view 1 the depth


@dataclass(frozen=True)
class DepthItem:
    """One ground-truth image: its id, depth file and (DIODE, folder) mask file, and the stem its
    prediction is named by (relative to the prediction folder, without suffix)."""

    item: str
    depth: str
    mask: str | None
    prediction_stem: str


def nyuv2_items(root: str) -> list[DepthItem]:
    """The test images of Marigold's extracted NYUv2 layout under `root` (which holds `test/`)."""
    items = []
    for folder, _, names in os.walk(os.path.join(root, "test")):
        scene = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in names:
            if name.startswith("depth_") and name.endswith(".png"):
                number = name[len("depth_"):-len(".png")]
                items.append(DepthItem(f"{scene}/rgb_{number}", os.path.join(folder, name), None,
                                       f"{scene}/pred_{number}"))
    return sorted(items, key=lambda i: i.item)


def diode_items(root: str) -> list[DepthItem]:
    """The images of DIODE's val layout under `root` (which holds `indoors/` and/or `outdoor/`)."""
    items = []
    for kind in ("indoors", "outdoor"):
        for folder, _, names in os.walk(os.path.join(root, kind)):
            rel = os.path.relpath(folder, root).replace(os.sep, "/")
            for name in names:
                if name.endswith("_depth.npy"):
                    stem = name[: -len("_depth.npy")]
                    items.append(DepthItem(f"{rel}/{stem}", os.path.join(folder, name),
                                           os.path.join(folder, f"{stem}_depth_mask.npy"), f"{rel}/pred_{stem}"))
    return sorted(items, key=lambda i: i.item)


def folder_items(root: str) -> list[DepthItem]:
    """`<name>.npy` depth maps (metres) under `root`, each with an optional `<name>_mask.npy`."""
    items = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".npy") and not name.endswith("_mask.npy"):
                path = os.path.join(folder, name)
                item = os.path.relpath(path, root).replace(os.sep, "/")[: -len(".npy")]
                mask = path[: -len(".npy")] + "_mask.npy"
                items.append(DepthItem(item, path, mask if os.path.exists(mask) else None, item))
    return sorted(items, key=lambda i: i.item)


LAYOUTS = {"nyuv2": (nyuv2_items, "test/<scene>/depth_NNNN.png (Marigold's extracted NYUv2 test split)"),
           "diode": (diode_items, "indoors|outdoor/scene_*/scan_*/*_depth.npy (DIODE val)"),
           "folder": (folder_items, "<name>.npy depth maps in metres")}


def load_ground_truth(item: DepthItem) -> tuple[np.ndarray, np.ndarray | None]:
    """(depth in metres (H, W), mask (H, W) or None); an unreadable file is an `ItemError`."""
    try:
        if item.depth.endswith(".png"):  # NYUv2: uint16 millimetres
            depth = _read_png(item.depth) / 1000.0
        else:
            depth = np.load(item.depth).squeeze()
        mask = None
        if item.mask is not None:
            if not os.path.exists(item.mask):
                raise ItemError(f"ground truth has no mask file {os.path.basename(item.mask)}")
            mask = np.load(item.mask).squeeze()
    except (OSError, ValueError) as error:
        raise ItemError(f"unreadable ground truth: {error}") from None
    if depth.ndim != 2 or (mask is not None and mask.shape != depth.shape):
        raise ItemError(f"ground truth depth {depth.shape} / mask {None if mask is None else mask.shape} "
                        "is not one (H, W) map")
    return depth.astype(np.float64), mask


def prediction_candidates(stem: str) -> list[str]:
    return [f"{stem}.npy", f"{stem}.png", f"{stem}/{SAMPLE_DEPTH_VIEW}"]


def looks_like_depth_prediction(path: str) -> bool:
    return path.endswith((".npy", ".png")) and not is_sample_companion(path)


def read_depth_prediction(path: str) -> np.ndarray:
    """A prediction file -> (H, W) float64; an unreadable or non-2-D file is an `ItemError`."""
    try:
        values = np.load(path).squeeze() if path.endswith(".npy") else _read_png(path)
    except (OSError, ValueError) as error:
        raise ItemError(f"unreadable prediction {os.path.basename(path)}: {error}") from None
    if values.ndim == 3:  # an RGB(A) picture of a grey map: the mean of its colour channels
        values = values[..., :3].mean(axis=-1)
    if values.ndim != 2:
        raise ItemError(f"prediction {os.path.basename(path)} has shape {values.shape}, not one (H, W) map")
    return values.astype(np.float64)


def _read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("L", "I;16", "I", "F", "RGB", "RGBA"):  # palette, grey + alpha, ...
            image = image.convert("RGB")
        return np.asarray(image).astype(np.float64)
