"""PhashAnnotator: the documented DCT pHash, robust to re-encoding, far apart for different photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from onegen.annotators.phash import PhashAnnotator, as_int64, hamming, phash64
from tests.conftest import encode, image_batch, photo


def _jpeg_resized(pixels: np.ndarray, size: tuple[int, int], quality: int = 80) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_hash_is_the_documented_dct_construction():
    """Recomputed with an independent DCT: OpenCV luma and box-filter resize, scipy's orthonormal DCT, [1:9, 1:9] > median."""
    import cv2
    from scipy.fft import dctn

    for name in ("astronaut", "coffee", "chelsea"):
        pixels = photo(name)
        grey = cv2.resize(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
        low = dctn(grey.astype(np.float64), norm="ortho")[1:9, 1:9]
        bits = "".join("1" if v else "0" for v in (low > np.median(low)).ravel())
        assert phash64(pixels) == int(bits, 2)


def test_near_copies_are_close_and_different_photos_far():
    photos = {name: photo(name) for name in ("astronaut", "coffee", "chelsea", "rocket")}
    hashes = {name: phash64(p) for name, p in photos.items()}
    for name, pixels in photos.items():
        h, w = pixels.shape[:2]
        copy = _jpeg_resized(pixels, (w // 2, h // 2), quality=70)
        assert hamming(hashes[name], phash64(copy)) <= 4, name
    names = list(hashes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert hamming(hashes[a], hashes[b]) > 12, (a, b)


def test_annotator_columns_and_kinds():
    pixels = [photo("astronaut")[:128, :128], photo("coffee")[:100, :150]]
    out = PhashAnnotator()(image_batch(pixels))
    assert out["status"] == ["ok", "ok"]
    assert out["phash"] == [as_int64(phash64(p)) for p in pixels]
    assert out["model_id"][0].startswith("dct-phash64")
    assert all(-(1 << 63) <= h < (1 << 63) for h in out["phash"])  # fits the int64 column
    scene = PhashAnnotator()(image_batch(pixels[:1], kind="scene"))
    assert scene["status"] == ["skipped"] and scene["phash"] == [None]
    bad = image_batch(pixels[:1])
    bad["image"] = [b"not an image" + encode(pixels[0])[:10]]
    assert PhashAnnotator()(bad)["status"] == ["error"]
