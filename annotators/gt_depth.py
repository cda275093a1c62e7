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
        if depth.get("encoding") != "hypersim_distance_hdf5":
            raise RowError(f"unknown depth encoding {depth.get('encoding')!r}")
        try:
            distance = read_hypersim_distance(depth["uri"])
        except (OSError, KeyError, ValueError) as error:
            raise RowError(f"{depth['uri']}: {type(error).__name__}: {error}") from None
        if row.get("width") and distance.shape != (row["height"], row["width"]):
            raise RowError(f"depth {distance.shape[1]}x{distance.shape[0]} != photo {row['width']}x{row['height']}")
        planar = planar_from_distance(distance, np.asarray(depth["K"]))
        valid = np.isfinite(planar) & (planar > 0)
        inverse = np.zeros_like(planar)
        inverse[valid] = 1.0 / planar[valid]
        encoded = encode_inverse_depth(inverse, valid, self.min_relative_range)
        return {**encoded, "provenance": f"{depth['encoding']}:{depth['uri']}", "invalid_pixels": int((~valid).sum())}
