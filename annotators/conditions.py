"""Weight-free condition annotators: canny, blur, lowres, inpaint (docs/design.md §3, edges / degrade).

Each produces view 1 of a two-view sample at the source resolution (view 0 is the image itself).
Every random parameter is drawn from `key_rng(key, "<name>@<version>")`, so a rerun writes
identical bytes. Task tokens follow the released OneDiffusion code; `lowres` has no released token
and uses `[[super_resolution]]` (our choice: docs/decisions.md, the task table in core/tasks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, ConditionSpec, RowError, key_rng
from onegen.core.image_codec import encode_jpeg, encode_png
from onegen.core.tasks import CANNY2IMAGE, DEBLURRING, IMAGE_INPAINTING, SUPER_RESOLUTION

BLACK = 0  # fill value of masked pixels: black, as the released demo's inpainting input


@dataclass
class CannyAnnotator(Annotator):
    """OpenCV Canny edges (white on black, 3 channels). Columns: condition (PNG), low, high (int32)."""

    name: ClassVar[str] = "canny"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [("condition", pa.binary()), ("low", pa.int32()), ("high", pa.int32())]
    )
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(CANNY2IMAGE, "condition", "png"),)

    low: int = 100
    high: int = 200

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        gray = cv2.cvtColor(row["image"], cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(gray, self.low, self.high)  # (H, W) uint8 in {0, 255}
        if not edges.any():
            raise RowError("canny found no edges (flat image)", status="no_edges")
        return {"condition": encode_png(np.repeat(edges[..., None], 3, axis=2)), "low": self.low, "high": self.high}


@dataclass
class BlurAnnotator(Annotator):
    """Gaussian blur with sigma ~ U(sigma_min, sigma_max) per key. Columns: condition (JPEG), sigma."""

    name: ClassVar[str] = "blur"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema([("condition", pa.binary()), ("sigma", pa.float32())])
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(DEBLURRING, "condition", "jpg"),)

    sigma_min: float = 1.0
    sigma_max: float = 5.0

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        sigma = float(key_rng(row["key"], self.store_name).uniform(self.sigma_min, self.sigma_max))
        blurred = cv2.GaussianBlur(row["image"], (0, 0), sigmaX=sigma, sigmaY=sigma)
        return {"condition": encode_jpeg(blurred), "sigma": sigma}


@dataclass
class LowresAnnotator(Annotator):
    """Downscale by a factor drawn per key (area), upscale back (bicubic). Columns: condition (JPEG), factor."""

    name: ClassVar[str] = "lowres"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema([("condition", pa.binary()), ("factor", pa.int32())])
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(SUPER_RESOLUTION, "condition", "jpg"),)

    factors: tuple[int, ...] = (2, 4, 8)

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        image = row["image"]
        height, width = image.shape[:2]
        factor = int(key_rng(row["key"], self.store_name).choice(self.factors))
        small_size = (max(1, width // factor), max(1, height // factor))
        small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
        restored = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        return {"condition": encode_jpeg(restored), "factor": factor}


@dataclass
class InpaintAnnotator(Annotator):
    """Random box and brush-stroke masks per key; masked pixels set to `fill` on all channels.

    `fill` 0 (black, the default) is what the released model's inpainting input shows
    (shared/reference-styles/inpainting-input-black-box.webp); version 1 filled grey 127.
    Columns: condition (PNG, the masked image), mask (PNG, 255 = to inpaint), coverage (fraction masked).
    """

    name: ClassVar[str] = "inpaint"
    version: ClassVar[str] = "2"  # 2: black fill by default; 1: grey 127
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [("condition", pa.binary()), ("mask", pa.binary()), ("coverage", pa.float32())]
    )
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(IMAGE_INPAINTING, "condition", "png"),)

    max_boxes: int = 3
    max_strokes: int = 4
    fill: int = BLACK  # 0..255, the value of every channel of a masked pixel

    def __post_init__(self) -> None:
        if not 0 <= self.fill <= 255:  # a configuration error: fail at construction, not per row
            raise ValueError(f"inpaint fill must be in 0..255, got {self.fill}")

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        image = row["image"]
        mask = random_mask(image.shape[0], image.shape[1], key_rng(row["key"], self.store_name),
                           self.max_boxes, self.max_strokes)
        masked = image.copy()
        masked[mask > 0] = self.fill
        return {"condition": encode_png(masked), "mask": encode_png(mask), "coverage": float((mask > 0).mean())}


def random_mask(height: int, width: int, rng: np.random.Generator, max_boxes: int, max_strokes: int) -> np.ndarray:
    """(H, W) uint8 mask, 255 where masked: 1..max_boxes boxes and 0..max_strokes brush strokes."""
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, max_boxes + 1))):
        box_w, box_h = int(rng.uniform(0.1, 0.4) * width), int(rng.uniform(0.1, 0.4) * height)
        x0, y0 = int(rng.integers(0, width - box_w + 1)), int(rng.integers(0, height - box_h + 1))
        mask[y0 : y0 + box_h, x0 : x0 + box_w] = 255
    brush = max(2, min(height, width) // 20)
    for _ in range(int(rng.integers(0, max_strokes + 1))):
        points = np.stack([rng.integers(0, width, 5), rng.integers(0, height, 5)], axis=1).astype(np.int32)
        cv2.polylines(mask, [points], isClosed=False, color=255, thickness=brush)
    return mask
