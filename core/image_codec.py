"""Image encode/decode helpers shared by annotators and pipelines (no Ray, no torch).

Contract: the catalog guarantees every stored image decodes to RGB; `decode_rgb` returns an
(H, W, 3) uint8 array. Encoders are deterministic (same array -> same bytes), which the
"rerun gives identical bytes" rule of the annotators relies on.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 6
JPEG_QUALITY = 95


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode catalog image bytes into an (H, W, 3) uint8 RGB array."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def encode_png(array: np.ndarray) -> bytes:
    """Encode (H, W), (H, W, 3) or (H, W, 4) uint8, or (H, W) uint16, as PNG bytes."""
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError(f"16-bit PNG needs a 2-D array, got shape {array.shape}")
        image = Image.fromarray(array)  # mode "I;16"
    elif array.dtype == np.uint8:
        image = Image.fromarray(array)
    else:
        raise ValueError(f"encode_png takes uint8 or uint16 arrays, got {array.dtype}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as baseline JPEG bytes."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"encode_jpeg takes (H, W, 3) uint8, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_png16(data: bytes) -> np.ndarray:
    """Decode a 16-bit single-channel PNG into an (H, W) uint16 array."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im, dtype=np.uint16)
