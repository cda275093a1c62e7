"""RayDiffusion's camera-centre accuracy (evaluation/camera_metrics.py, camera_eval.py) on cameras with
known answers: a similarity transform of the truth scores 1.0, the scale is the farthest camera from the
centroid, the threshold is strict, and cameras come back from rays."""

from __future__ import annotations

import numpy as np
import pytest

from onegen.core.camera_geometry import orbit_c2w, plucker_rays, rays_to_latent
from onegen.evaluation.camera_eval import gso_truth
from onegen.evaluation.camera_metrics import accuracy, centre_errors, centres_from_rays, scene_scale
from onegen.evaluation.results import ItemError


def ring(n: int = 6, radius: float = 2.0) -> np.ndarray:
    """n OpenCV c2w on a ring about the origin, each looking at it (the released orbit)."""
    from onegen.core.camera_geometry import opengl_to_opencv

    return np.stack([opengl_to_opencv(orbit_c2w(360.0 * i / n, 20.0 + 5 * i, radius)) for i in range(n)])


def similarity(points: np.ndarray, scale: float = 3.7, seed: int = 1) -> np.ndarray:
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    if np.linalg.det(rotation) < 0:
        rotation[:, 0] *= -1
    return scale * points @ rotation.T + np.array([5.0, -2.0, 0.5])


def test_the_scene_scale_is_the_farthest_camera_from_the_centroid():
    square = np.array([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [2, 2, 0], [1, 1, 3]])  # centroid (1, 1, 0.6)
    assert scene_scale(square) == pytest.approx(2.4)  # the top camera; the corners are sqrt(2.36) away


def test_cameras_that_are_a_similarity_transform_of_the_truth_score_one():
    gt = ring()[:, :3, 3]
    errors = centre_errors(similarity(gt), gt, scene_scale(gt))
    assert errors.max() < 1e-9
    assert accuracy(errors, 0.1) == accuracy(errors, 0.3) == 1.0


def test_one_camera_off_is_the_one_that_fails():
    gt = ring()[:, :3, 3]
    pred = similarity(gt)
    pred[2] += 3.7 * np.array([1.5, 0.0, 0.0])  # 1.5 scene units off, in the prediction's own scale
    errors = centre_errors(pred, gt, scene_scale(gt))
    assert int(np.argmax(errors)) == 2 and errors[2] > 0.3
    assert accuracy(errors, 0.3) < 1.0


def test_the_threshold_is_strict():
    assert accuracy(np.array([0.1, 0.05, 0.3]), 0.1) == pytest.approx(1 / 3)


def test_cameras_come_back_from_rays_and_from_a_ray_latent():
    c2w = ring(4)
    k = np.array([[1.3887 * 64, 0, 32], [0, 1.3887 * 64, 32], [0, 0, 1]])
    rays = plucker_rays(c2w, np.repeat(k[None], 4, axis=0), 64, 64)  # (4, 8, 8, 6)
    assert np.allclose(centres_from_rays(rays), c2w[:, :3, 3], atol=1e-6)
    assert np.allclose(centres_from_rays(rays_to_latent(rays)), c2w[:, :3, 3], atol=1e-6)
    with pytest.raises(ItemError, match="expected \\(N, h, w, 6\\)"):
        centres_from_rays(np.zeros((4, 8, 8)))
    rays[0, 0, 0, 0] = np.nan
    with pytest.raises(ItemError, match="NaN"):
        centres_from_rays(rays)


def test_bad_cameras_are_reasons():
    gt = ring()[:, :3, 3]
    with pytest.raises(ItemError, match="prediction has 5 cameras, ground truth 6 views"):
        centre_errors(gt[:5], gt, 1.0)
    nan = gt.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ItemError, match="predicted camera centres hold NaN"):
        centre_errors(nan, gt, 1.0)
    with pytest.raises(ItemError, match="scene scale 0"):
        centre_errors(gt, gt, 0.0)


def test_gso_ground_truth_is_world_to_camera_and_the_scale_uses_every_view(tmp_path):
    model = tmp_path / "render_mvs_25" / "model"
    model.mkdir(parents=True)
    c2w = ring(8)
    for i, camera in enumerate(c2w):
        w2c = np.linalg.inv(camera)[:3]  # EscherNet's 3 x 4 [R | t]
        np.save(model / f"{i:03d}.npy", w2c)
    chosen, everything = gso_truth(str(tmp_path), (3, 1, 5))
    assert np.allclose(chosen, c2w[[3, 1, 5], :3, 3])
    assert np.allclose(everything, c2w[:, :3, 3])
    with pytest.raises(ItemError, match="no view 009"):
        gso_truth(str(tmp_path), (0, 9))
