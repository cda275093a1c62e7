"""Camera-centre accuracy as RayDiffusion's evaluation computes it, on cameras recovered from rays.

Read from jasonyzhang/RayDiffusion (commit f53303a):
- ray_diffusion/eval/utils.py: `full_scene_scale` = the largest distance from the centroid of the
  *sequence's* ground-truth camera centres to one of them (eval_category.py passes all cameras of the
  sequence, not only the evaluated views); `compute_optimal_alignment` = Umeyama's least-squares
  similarity (scale, rotation, translation) taking the predicted centres onto the ground truth;
  `compute_camera_center_error` = |gt - aligned pred| / scene scale per camera.
- ray_diffusion/eval/eval_jobs.py `process_predictions`: accuracy = the fraction of cameras whose error is
  *strictly* below the threshold (0.1 there; the OneDiffusion paper reports 0.3), pooled over all cameras
  of a category's sequences, then averaged over categories.
- ray_diffusion/utils/rays.py `rays_to_cameras`: centre = least-squares intersection of the rays, rotation
  by aligning the known intrinsics' rays to the predicted directions. We reuse
  onegen.core.camera_geometry's `cameras_from_rays` (same least-squares centre; rotation by DLT + RQ when
  no intrinsics are given: the centre, all this metric reads, does not depend on it) and its
  `align_similarity` (Umeyama, the same closed form).

Where we differ, and why: no categories exist in our folders, so the summary pools all cameras of all
scored scenes (RayDiffusion's number within one category); a degenerate prediction whose centres all
coincide is aligned with scale 1 (RayDiffusion divides by a zero variance and gets NaN), which scores it
as the ground-truth centroid, i.e. as badly as it is.
"""

from __future__ import annotations

import numpy as np

from onegen.core.camera_geometry import align_similarity, cameras_from_rays, latent_to_rays
from onegen.evaluation.results import ItemError

THRESHOLDS = (0.1, 0.3)


def centres_from_rays(rays: np.ndarray) -> np.ndarray:
    """Camera centres (N, 3) from rays (N, h, w, 6) or a 16-channel ray latent (N, 16, h, w)."""
    rays = np.asarray(rays, dtype=np.float64)
    if rays.ndim == 4 and rays.shape[1] == 16 and rays.shape[-1] != 6:
        rays = latent_to_rays(rays)
    if rays.ndim != 4 or rays.shape[-1] != 6:
        raise ItemError(f"rays of shape {rays.shape}: expected (N, h, w, 6) rays or an (N, 16, h, w) ray latent")
    if not np.isfinite(rays).all():
        raise ItemError("rays hold NaN/inf values")
    return np.stack([camera.c2w[:3, 3] for camera in cameras_from_rays(rays)])


def scene_scale(gt_centres: np.ndarray) -> float:
    """RayDiffusion's `full_scene_scale`: distance from the centres' centroid to the farthest centre."""
    return float(np.linalg.norm(gt_centres - gt_centres.mean(0), axis=-1).max())


def centre_errors(pred_centres: np.ndarray, gt_centres: np.ndarray, scale: float) -> np.ndarray:
    """Per camera |gt - Umeyama-aligned pred| / `scale` (RayDiffusion's `compute_camera_center_error`)."""
    pred, gt = np.asarray(pred_centres, np.float64), np.asarray(gt_centres, np.float64)
    if pred.shape != gt.shape:
        raise ItemError(f"prediction has {len(pred)} cameras, ground truth {len(gt)} views")
    if not np.isfinite(pred).all():
        raise ItemError("predicted camera centres hold NaN/inf values")
    if not np.isfinite(gt).all():
        raise ItemError("ground-truth camera centres hold NaN/inf values")
    if not (np.isfinite(scale) and scale > 0):
        raise ItemError("ground-truth cameras all at one point (scene scale 0)")
    return np.linalg.norm(gt - align_similarity(pred, gt), axis=-1) / scale


def accuracy(errors: np.ndarray, threshold: float) -> float:
    """Fraction of cameras whose centre error is strictly below `threshold` (eval_jobs.py)."""
    return float(np.mean(np.asarray(errors) < threshold))
