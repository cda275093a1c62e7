"""Validation and normalisation of one raw image on ingest (pure; no Ray).

`normalise_image(data, limits)` either returns a `NormalisedImage` (RGB, upright, encoded in the
catalog's one format) or raises `Rejected(reason, detail)`. Reasons are short stable codes that land
in the rejects table:

- not_an_image      the bytes are no image format Pillow knows
- too_many_pixels   width * height above `max_pixels`, refused from the header, before decoding
- decode_error      the header parsed but the pixels did not decode (truncated, corrupt)
- too_small         the shorter side (after EXIF orientation) is below `min_side`
- unsupported_mode  a pixel mode we cannot bring to RGB
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from onegen.core.image_codec import encode_jpeg, encode_png
from onegen.pipelines.sources.settings import ImageLimits

_FORMAT_OF_PIL = {"JPEG": "jpg", "PNG": "png"}
_EXIF_ORIENTATION = 0x0112


class Rejected(Exception):
    """An input item that cannot enter the catalog; `reason` is a short code, `detail` free text."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NormalisedImage:
    data: bytes
    image_format: str
    width: int
    height: int
    reencoded: bool  # False when the original bytes were kept as they were


def normalise_image(data: bytes, limits: ImageLimits) -> NormalisedImage:
    """Decode fully, apply EXIF orientation, bring to RGB, enforce limits, encode (see module doc).

    A JPEG that will be kept byte for byte (upright RGB, catalog format JPEG) is decoded at 1/8 scale
    (libjpeg's DCT scaling, `Image.draft`): every marker and every entropy-coded coefficient is still
    parsed, which is where truncated and corrupt files fail, and only the inverse DCT, upsampling and
    colour conversion, which cannot fail, are skipped (about 3x cheaper; the pixels are not kept
    anyway). tests/pipelines/test_image_checks.py checks that every truncation and byte flip of real
    JPEGs is refused exactly when a full decode refuses it. Everything re-encoded is decoded fully,
    once."""
    image = _open_checked(data, limits)
    width, height = image.size  # from the header: a draft load shrinks `image.size`
    kept_jpeg = (_FORMAT_OF_PIL.get(image.format or "") == "jpg" == limits.image_format and image.mode == "RGB"
                 and image.getexif().get(_EXIF_ORIENTATION, 1) in (None, 1))  # JPEG EXIF precedes the pixels
    try:
        if kept_jpeg:
            image.draft("RGB", (1, 1))
        image.seek(0)  # GIF / multi-page TIFF: the first frame
        image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure is this item's problem
        raise Rejected("decode_error", f"{type(error).__name__}: {error}") from error
    if kept_jpeg:
        if min(width, height) < limits.min_side:
            raise Rejected("too_small", f"{width}x{height} has a side below {limits.min_side}")
        return NormalisedImage(data, "jpg", width, height, reencoded=False)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    upright = ImageOps.exif_transpose(image) if orientation not in (None, 1) else image
    width, height = upright.size
    if min(width, height) < limits.min_side:
        raise Rejected("too_small", f"{width}x{height} has a side below {limits.min_side}")
    source_format = _FORMAT_OF_PIL.get(image.format or "")
    if source_format == limits.image_format and image.mode == "RGB" and orientation in (None, 1):
        return NormalisedImage(data, source_format, width, height, reencoded=False)
    rgb = to_rgb_array(upright)
    encoded = encode_jpeg(rgb, limits.jpeg_quality) if limits.image_format == "jpg" else encode_png(rgb)
    return NormalisedImage(encoded, limits.image_format, width, height, reencoded=True)


def _open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before any pixel is decoded."""
    # Pillow raises DecompressionBombError past 2 x Image.MAX_IMAGE_PIXELS and only warns between 1x and 2x;
    # the `max_pixels` check below refuses those (its default is below Pillow's limit). No
    # warnings.catch_warnings here: this runs in URL-fetching threads, and the warning filters it would
    # swap are the whole process's.
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise Rejected("too_many_pixels", str(error)) from error
    except UnidentifiedImageError as error:
        raise Rejected("not_an_image", "no known image format") from error
    except Exception as error:  # noqa: BLE001 - a broken header is this item's problem
        raise Rejected("decode_error", f"{type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > limits.max_pixels:
        raise Rejected("too_many_pixels", f"{width}x{height} exceeds {limits.max_pixels} pixels")
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8: alpha composited on white, CMYK/palette/16-bit/float brought to 8-bit RGB."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0
        composited = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)  # on white
        return np.round(composited).astype(np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB"))
    raise Rejected("unsupported_mode", f"pixel mode {mode}")
