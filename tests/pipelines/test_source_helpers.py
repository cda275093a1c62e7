"""Small pictures for the published-source tests (written by the tests, no downloads)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg(seed: int, width: int = 32, height: int = 24) -> bytes:
    """An upright RGB JPEG of noise (ingest keeps such bytes as they are)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
