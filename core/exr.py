"""OpenEXR images as numpy planes, through the OpenEXR library (the Academy Software Foundation's bindings,
`OpenEXR` on PyPI): for rendered depth (G-Objaverse's `_nd.exr`) and for writing test fixtures in that format.

OpenCV would read EXR only when built with it, and the opencv-python wheels are not (`cv2.getBuildInformation()`:
"OpenEXR: NO"); OpenEXR reads every compression the format has (NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, DWA, ...),
tiled and multi-part files, from bytes without a temporary file.

`read_exr(data) -> {channel name: (H, W) array}` (half -> float16, float -> float32, uint -> uint32), the first
part of a multi-part file; `write_exr(channels, compression) -> bytes`, one scanline part. OpenCV's
`imread(..., IMREAD_UNCHANGED)` of a 4-channel file returns the channels in B, G, R, A order; `read_exr`
returns them by name. A file OpenEXR cannot read raises ValueError naming why.
"""

from __future__ import annotations

import io

import numpy as np


def read_exr(data: bytes) -> dict[str, np.ndarray]:
    """{channel name: (H, W) array} of the EXR file `data` (see the module docstring)."""
    import OpenEXR

    try:
        # separate_channels: the library would otherwise join R, G, B, A into one "RGBA" (H, W, 4) channel
        with OpenEXR.File(io.BytesIO(data), separate_channels=True) as image:
            return {name: np.asarray(channel.pixels) for name, channel in image.channels().items()}
    except RuntimeError as error:  # the library's one type for unreadable input
        raise ValueError(f"not a readable OpenEXR file: {error}") from None


def write_exr(channels: dict[str, np.ndarray], compression: str = "ZIP") -> bytes:
    """A one-part scanline EXR of `channels` ({name: (H, W) float16 / float32 / uint32 array}), compressed
    with `compression` (an OpenEXR compression name without the suffix: NONE, RLE, ZIPS, ZIP, PIZ, ...)."""
    import OpenEXR

    name = "NO" if compression == "NONE" else compression  # the library spells it NO_COMPRESSION
    header = {"compression": getattr(OpenEXR, f"{name}_COMPRESSION"), "type": OpenEXR.scanlineimage}
    out = io.BytesIO()
    with OpenEXR.File(header, {name: np.ascontiguousarray(plane) for name, plane in channels.items()}) as image:
        image.write(out)
    return out.getvalue()
