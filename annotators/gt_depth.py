"""Ground-truth depth from the source itself, written exactly as the depth annotator writes its own.

`depth_gt@1` is a store of its own beside `depth@N` (Depth Anything): the same output columns and the
same `[[depth2image]]` condition, so the trainer cannot tell a ground-truth condition from a predicted
one but by the store's name and the `provenance` column. The convention is the depth annotator's
(annotators/depth.py, `encode_inverse_depth`): grey inverse depth, min-max normalised per image (near
white), `png16` = round(d * 65535), `condition` = round(d * 255) on three channels, `depth_min` /
`depth_max` = the inverse depth's range, here in 1/meters (metric, where Depth Anything's is
relative). Pixels without depth (Hypersim's NaN where no surface was hit) are 0 (black, as far as
the farthest), and counted in `invalid_pixels`.

What a row's depth is: the catalog row's `meta.depth`, written at ingest by the source's reader:
- `{"uri", "encoding": "hypersim_distance_hdf5", "K"}` (pipelines/sources/hypersim.py): HDF5 key
  "dataset", Euclidean distance in meters to the optical centre; planar depth
  z = distance / |K^-1 [x, y, 1]| at pixel centres (x + 0.5, y + 0.5) (`planar_from_distance`).
- `{"uri", "mask_uri", "scale_adjustment", "encoding": "co3d_depth_png16"}` (pipelines/sources/co3d.py, per
  view of a CO3D scene, `meta.view_depths[i]`): a 16-bit PNG holding float16 bits, z-depth =
  png.view(float16) * scale_adjustment in the sequence's reconstruction units (not meters), valid where
  finite, > 0 and inside the 1-bit depth mask (`read_co3d_depth`, as pytorch3d/implicitron/dataset/utils.py
  `load_16big_png_depth`, `load_depth`, `load_1bit_png_mask` decode it). A scene row itself has no
  `meta.depth`: `--views-as-photos` (pipelines/sources/scene_views.py) makes each view a photo carrying its
  entry as `meta.depth`.
- `{"uri", "encoding": "gobjaverse_nd_exr", "camera_distance"}` (pipelines/sources/gobjaverse.py, per view of
  a scene in `meta.view_depths`): G-Objaverse's `_nd.exr`, normal in B, G, R and PLANAR depth in A (what
  richdreamer's depth_warp_example.py reads as `cv2.imread(...)[..., 3]`), background where depth <
  camera_distance - 0.867 (`read_gobjaverse_depth`). EXR is decoded by core/exr.py.
Rows without `meta.depth` get status `skipped` (photos of other sources: their depth comes from the
depth annotator). An unreadable or truncated depth file, or a depth map of another size than the
photo, is the row's `error`; a constant map is `degenerate_depth`, as for the depth annotator.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, ConditionSpec, RowError
from onegen.annotators.depth import DepthAnnotator, encode_inverse_depth
from onegen.core.image_codec import decode_png16


def pixel_rays_norm(k: np.ndarray, width: int, height: int) -> np.ndarray:
    """|K^-1 [x, y, 1]| at every pixel centre (x + 0.5, y + 0.5): (H, W), 1 on the principal point."""
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pixels = np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # (H, W, 3)
    rays = pixels @ np.linalg.inv(np.asarray(k, dtype=np.float64)).T  # (H, W, 3), z = 1
    return np.linalg.norm(rays, axis=-1)


def planar_from_distance(distance: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Planar depth (along the optical axis) from distance to the optical centre, (H, W) float64."""
    height, width = distance.shape
    return np.asarray(distance, dtype=np.float64) / pixel_rays_norm(k, width, height)


def read_hypersim_distance(uri: str) -> np.ndarray:
    """A Hypersim `depth_meters.hdf5` map (key "dataset"), float64 (H, W); raises OSError/KeyError if bad."""
    import h5py

    with fsspec.open(uri, "rb") as handle:
        data = handle.read()
    with h5py.File(io.BytesIO(data), "r") as file:
        return np.asarray(file["dataset"][:], dtype=np.float64)


def read_co3d_depth(uri: str, scale_adjustment: float, mask_uri: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A CO3D depth PNG -> (z-depth (H, W) float64, valid (H, W) bool); see the module docstring.
    Raises OSError / ValueError for an unreadable file or a mask of another size."""
    with fsspec.open(uri, "rb") as handle:
        bits = decode_png16(handle.read())  # (H, W) uint16: the float16's bit pattern
    if bits.ndim != 2:
        raise ValueError(f"{uri}: not a single-channel 16-bit PNG (shape {bits.shape})")
    depth = np.ascontiguousarray(bits, dtype=np.uint16).view(np.float16).astype(np.float64) * scale_adjustment
    depth[~np.isfinite(depth)] = 0.0
    valid = depth > 0
    if mask_uri:
        from PIL import Image

        with fsspec.open(mask_uri, "rb") as handle, Image.open(handle) as image:
            mask = np.asarray(image.convert("L")) > 0  # (H, W): a 1-bit PNG, valid where set
        if mask.shape != depth.shape:
            raise ValueError(f"{mask_uri}: mask {mask.shape} != depth {depth.shape}")
        valid &= mask
    return np.where(valid, depth, 0.0), valid


GOBJAVERSE_BOUNDING_RADIUS = 0.867  # depth_warp_example.py: "near = 0.867 #sqrt(3) * 0.5"


def read_gobjaverse_depth(uri: str, camera_distance: float) -> np.ndarray:
    """Planar depth (H, W) float64 of a G-Objaverse `_nd.exr` (its A channel), 0 where there is no surface:
    as depth_warp_example.py's read_dnormal, values nearer than the camera's distance to the object centre
    less the bounding sphere's radius (0.867) are background. Raises OSError / ValueError if unreadable."""
    from onegen.core.exr import read_exr

    with fsspec.open(uri, "rb") as handle:
        channels = read_exr(handle.read())
    if "A" not in channels:
        raise ValueError(f"{uri}: no A (depth) channel; channels are {sorted(channels)}")
    depth = np.nan_to_num(channels["A"].astype(np.float64), nan=0.0)
    depth[depth < camera_distance - GOBJAVERSE_BOUNDING_RADIUS] = 0.0
    return depth


def planar_depth(depth: dict) -> tuple[np.ndarray, np.ndarray]:
    """(planar depth (H, W) float64, valid (H, W) bool) of a `meta.depth` entry, by its encoding (module
    docstring). An unknown encoding is a RowError; an unreadable file raises OSError / ValueError."""
    encoding = depth.get("encoding")
    if encoding == "hypersim_distance_hdf5":
        planar = planar_from_distance(read_hypersim_distance(depth["uri"]), np.asarray(depth["K"]))
        return planar, np.isfinite(planar) & (planar > 0)
    if encoding == "co3d_depth_png16":
        return read_co3d_depth(depth["uri"], float(depth["scale_adjustment"]), depth.get("mask_uri"))
    if encoding == "gobjaverse_nd_exr":
        planar = read_gobjaverse_depth(depth["uri"], float(depth["camera_distance"]))
        return planar, np.isfinite(planar) & (planar > 0)
    raise RowError(f"unknown depth encoding {encoding!r}")


@dataclass
class GtDepthAnnotator(Annotator):
    """A source's own depth as a depth2image condition (see the module docstring). No model."""

    name: ClassVar[str] = "depth_gt"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema(
        list(DepthAnnotator.output_schema)
        + [pa.field("provenance", pa.string()), pa.field("invalid_pixels", pa.int64())]
    )
    conditions: ClassVar[tuple[ConditionSpec, ...]] = DepthAnnotator.conditions
    decode_images: ClassVar[bool] = False  # only the depth file is read

    num_cpus: float = 1.0
    min_relative_range: float = DepthAnnotator.min_relative_range

    def model_id(self) -> str:
        return "ground-truth"

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        depth = row["meta"].get("depth")
        if not depth:
            raise RowError("the source has no depth for this row", status="skipped")
        try:
            planar, valid = planar_depth(depth)
        except (OSError, KeyError, ValueError) as error:
            raise RowError(f"{depth['uri']}: {type(error).__name__}: {error}") from None
        if row.get("width") and planar.shape != (row["height"], row["width"]):
            raise RowError(f"depth {planar.shape[1]}x{planar.shape[0]} != photo {row['width']}x{row['height']}")
        valid &= np.isfinite(planar) & (planar > 0)
        inverse = np.zeros_like(planar)
        inverse[valid] = 1.0 / planar[valid]
        encoded = encode_inverse_depth(inverse, valid, self.min_relative_range)
        return {**encoded, "provenance": f"{depth['encoding']}:{depth['uri']}", "invalid_pixels": int((~valid).sum())}
