"""EscherNet's novel-view metrics (evaluation/nvs_metrics.py): PSNR exactly as cv2.PSNR, known values, the
white-background rule, SSIM as scikit-image computes it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onegen.evaluation.nvs_metrics import psnr, ssim, white_background


def test_psnr_by_hand():
    black = np.zeros((8, 8, 3), np.uint8)
    assert psnr(np.full_like(black, 255), black) == pytest.approx(0.0, abs=1e-12)  # RMSE 255
    assert psnr(np.full_like(black, 5), black) == pytest.approx(20 * np.log10(255 / 5))  # 34.15 dB


def test_psnr_is_cv2_psnr_including_identical_images():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    assert psnr(pred, gt) == pytest.approx(cv2.PSNR(gt, pred), rel=1e-12)
    assert psnr(gt, gt) == pytest.approx(cv2.PSNR(gt, gt)) == pytest.approx(361.2, abs=0.01)


def test_only_fully_transparent_pixels_turn_white():
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, :3] = 40
    rgba[0, :, 3] = [0, 1, 255]
    assert white_background(rgba)[0].tolist() == [[255, 255, 255], [40, 40, 40], [40, 40, 40]]
    rgb = np.zeros((1, 2, 3), np.uint8)  # no alpha channel: kept as it is (blue 0 is not transparency)
    assert np.array_equal(white_background(rgb), rgb)


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(gt, gt) == pytest.approx(1.0)
    noisy = np.clip(gt.astype(int) + rng.integers(-60, 61, gt.shape), 0, 255).astype(np.uint8)
    assert ssim(noisy, gt) < 0.95
