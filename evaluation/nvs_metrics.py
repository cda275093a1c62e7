"""Novel-view metrics as EscherNet's GSO evaluation computes them: PSNR on uint8, SSIM, white background.

Read from kxhit/EscherNet (commit 569240f), metrics/eval_2D_NVS.py:
- ground truth `<object>/render_mvs_25/model/NNN.png` read with `plt.imread` (RGBA floats), pixels whose
  alpha is exactly 0 set to white, `np.uint8(rgb * 255.)`, resized to 256 x 256 with PIL's default filter
  (bicubic); test views 10-24 of 25; predictions 256 x 256 uint8 RGB;
- `cv2.PSNR(gt, pred)` = 20 log10(255 / (sqrt(MSE over all pixels and channels) + DBL_EPSILON));
- `skimage.metrics.structural_similarity(pred, gt, channel_axis=2)` on the uint8 images (data range 255,
  7 x 7 uniform window);
- per object the mean over its test views, then the mean over objects.

Where we differ, and why: EscherNet applies its alpha rule to the last channel of whatever it read, so an
RGB picture without alpha would have its pixels with blue exactly 0 turned white; we apply the rule only
to images that have an alpha channel. The PSNR is computed in numpy with OpenCV's formula (checked against
cv2.PSNR in the tests), so identical images score OpenCV's 361.2 dB, not infinity. SSIM is reported where
scikit-image is installed (it is a dependency of onegen; without it the result says so).
"""

from __future__ import annotations

import numpy as np

DBL_EPSILON = float(np.finfo(np.float64).eps)  # what cv2.PSNR adds to the RMSE


def white_background(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) or (H, W, 3) uint8 -> (H, W, 3) uint8 with fully transparent pixels white (EscherNet)."""
    if rgba.shape[-1] != 4:
        return rgba[..., :3]
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """cv2.PSNR of two uint8 images of one shape: 20 log10(255 / (RMSE + DBL_EPSILON))."""
    if pred.shape != gt.shape:
        raise ValueError(f"psnr of images of shapes {pred.shape} and {gt.shape}")
    rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2)))
    return 20.0 * float(np.log10(255.0 / (rmse + DBL_EPSILON)))


def ssim(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """skimage's structural_similarity of two uint8 RGB images (EscherNet's call); None without skimage."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return None
    return float(structural_similarity(pred, gt, channel_axis=2))


def ssim_available() -> bool:
    try:
        import skimage.metrics  # noqa: F401
    except ImportError:
        return False
    return True
