"""Lens distortion removed once, at ingest: a distorted view is resampled onto its own pinhole K.

Model: OpenCV's (k1, k2, p1, p2[, k3]) radial-tangential distortion of normalised camera coordinates,
which is nerfstudio's OPENCV camera (its `transforms.json` keys k1, k2, p1, p2) and COLMAP's OPENCV.
The coefficients act on normalised coordinates, so they hold for a picture of any size once K is
rescaled to it. `cv2.undistort` with `newCameraMatrix = K` keeps K: after this call the view is an
ideal pinhole picture with exactly the K the catalog stores.

Pixel centres: the catalog's K puts pixel (i, j)'s centre at (j + 0.5, i + 0.5) (nerfstudio's cx = w / 2
for a centred camera); OpenCV puts it at (j, i). K is shifted by half a pixel for OpenCV, so the
distortion is applied about the true principal point.
"""

from __future__ import annotations

import cv2
import numpy as np

from onegen.core.image_codec import decode_rgb, encode_jpeg, encode_png


def opencv_k(k: np.ndarray) -> np.ndarray:
    """The catalog's K (pixel centres at +0.5) as OpenCV's (pixel centres at integers)."""
    shifted = np.asarray(k, dtype=np.float64).copy()
    shifted[0, 2] -= 0.5
    shifted[1, 2] -= 0.5
    return shifted


def undistort_array(image: np.ndarray, k: np.ndarray, coefficients: list[float]) -> np.ndarray:
    """(H, W, C) picture with OpenCV distortion `coefficients` (k1, k2, p1, p2[, k3]) -> the ideal
    pinhole picture of the same K (bilinear resampling; pixels from outside the frame are black)."""
    cv_k = opencv_k(k)
    return cv2.undistort(image, cv_k, np.asarray(coefficients, dtype=np.float64), None, cv_k)


def undistort_view(data: bytes, k: np.ndarray, coefficients: list[float], extension: str) -> bytes:
    """An encoded view, undistorted and encoded again in its own format (PNG stays lossless)."""
    undistorted = undistort_array(decode_rgb(data), k, coefficients)
    return encode_png(undistorted) if extension.lower() in (".png", "") else encode_jpeg(undistorted)
