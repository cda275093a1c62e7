"""Perceptual-hash annotator: a 64-bit DCT pHash per image, for near-duplicate removal (issue 13).

Output columns (one row per catalog row of kind "image" or "subject_image"; scenes are "skipped", so
multiview views are never deduplicated):
- `phash` (int64): the 64 hash bits as a signed int64 (the same bit pattern as the uint64; view it with
  `np.asarray(column, np.int64).view(np.uint64)`). Bit 63 is coefficient (1, 1), bit 0 coefficient (8, 8).

The hash (`phash64`), the pHash.org construction ("ph_dct_imagehash") without its 7x7 mean pre-blur:
1. grey = ITU-R 601 luma of the RGB image (OpenCV's RGB2GRAY, uint8);
2. resize to 32 x 32 with area averaging (cv2.INTER_AREA, which is the anti-aliasing box filter);
3. orthonormal 2-D DCT-II of the 32 x 32 float32 block (cv2.dct);
4. take the 8 x 8 lowest frequencies *without* the DC row and column: coefficients [1:9, 1:9];
5. bit = coefficient > median of those 64 coefficients; bits row-major, first bit most significant.
Leaving out row / column 0 drops the DC term (the mean brightness, which would be a constant bit) and the
pure horizontal / vertical ramps, so brightness and contrast changes move few bits. Re-encoding, resizing
and mild blur move a handful of bits (Hamming distance <= 4 is the default near-duplicate radius); unrelated
photos sit near 32.

The catalog's `sha256` (of the original bytes) finds exact duplicates; the dedup job uses both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError

HASH_SIZE = 8  # 8 x 8 = 64 bits
DCT_SIZE = 32
ALGORITHM = "dct-phash64-32x32-ac8x8-median"  # recorded as the row's model_id


def phash64(image: np.ndarray) -> int:
    """The 64-bit DCT pHash of an (H, W, 3) uint8 RGB image, as an unsigned Python int (see module doc)."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)  # (H, W) uint8
    small = cv2.resize(grey, (DCT_SIZE, DCT_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)  # (32, 32)
    coefficients = cv2.dct(small)  # (32, 32) orthonormal DCT-II
    low = coefficients[1 : HASH_SIZE + 1, 1 : HASH_SIZE + 1]  # (8, 8) without the DC row / column
    bits = (low > np.median(low)).ravel()  # (64,) bool, row-major
    return int(np.packbits(bits).view(">u8")[0])


def as_int64(value: int) -> int:
    """The signed int64 with the same 64 bits as the unsigned `value` (how the column stores it)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two 64-bit hashes (signed or unsigned ints)."""
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


@dataclass
class PhashAnnotator(Annotator):
    """64-bit DCT perceptual hash; no model, CPU only. There is no configuration beyond resources."""

    name: ClassVar[str] = "phash"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("image", "subject_image")
    output_schema: ClassVar[pa.Schema] = pa.schema([pa.field("phash", pa.int64())])

    batch_size: int = 64

    def model_id(self) -> str:
        return ALGORITHM

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        image = row.get("image")
        if image is None:
            raise RowError("no image to hash")
        return {"phash": as_int64(phash64(image))}
