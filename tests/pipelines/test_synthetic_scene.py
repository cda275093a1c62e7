"""The synthetic renderer: saved depth agrees with the geometry, determinism, speed, the centre metric."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from onegen.core.camera_geometry import camera_from_rays, plucker_rays
from onegen.evaluation.camera_metrics import accuracy, centre_errors, scene_scale
from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene
from onegen.pipelines.sources.scene_cameras import read_transforms_json


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    write_scene(folder, SceneConfig(n_views=4, width=96, height=64, seed=11))
    return folder


def ray_sphere(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> float:
    """Nearest positive distance along unit d from o to the sphere."""
    b = np.dot(d, o - centre)
    c = np.dot(o - centre, o - centre) - radius**2
    return float(-b - np.sqrt(b * b - c))


def test_pixel_rays_from_the_readers_cameras_land_on_the_saved_depth(scene):
    geometry = json.loads((scene / "scene.json").read_text())
    meta = json.loads(read_transforms_json(scene)["meta"])
    checked = {"sphere": 0, "ground": 0, "box": 0}
    for view, camera in enumerate(meta["cameras"]):
        c2w, k = np.array(camera["c2w"]), np.array(camera["K"])
        rays = plucker_rays(c2w[None], k[None], camera["width"], camera["height"], stride=1)[
            0
        ]  # pixel centres
        depth = np.load(scene / "depth" / f"frame_{view:05d}.npy")
        ids = np.asarray(Image.open(scene / "masks" / f"frame_{view:05d}.png"))
        assert depth.dtype == np.float32 and depth.shape == ids.shape == (64, 96)
        assert (depth[ids == 0] == 0).all() and (depth[ids > 0] > 0).all()
        rng = np.random.default_rng(view)
        for instance in np.unique(ids[ids > 0]):
            rows, cols = np.nonzero(ids == instance)
            for p in rng.choice(len(rows), size=min(5, len(rows)), replace=False):
                v, u = rows[p], cols[p]
                d, m = rays[v, u, :3], rays[v, u, 3:]
                origin = np.cross(d, m) + np.dot(c2w[:3, 3], d) * d  # the camera centre, from the ray
                point = origin + depth[v, u] / np.dot(d, c2w[:3, 2]) * d  # z-depth -> distance
                k_obj = int(instance) - 2
                if instance == 1:
                    assert abs(point[2] - geometry["ground_z"]) < 1e-4
                    checked["ground"] += 1
                elif k_obj < len(geometry["spheres"]):
                    sphere = geometry["spheres"][k_obj]
                    t = ray_sphere(origin, d, np.array(sphere["centre"]), sphere["radius"])
                    assert t * np.dot(d, c2w[:3, 2]) == pytest.approx(depth[v, u], abs=1e-4)
                    checked["sphere"] += 1
                else:
                    box = geometry["boxes"][k_obj - len(geometry["spheres"])]
                    lo, hi = np.array(box["min"]), np.array(box["max"])
                    assert (point > lo - 1e-4).all() and (point < hi + 1e-4).all()
                    assert min(np.abs(point - lo).min(), np.abs(point - hi).min()) < 1e-4  # on a face
                    checked["box"] += 1
    assert min(checked.values()) > 0, checked


def test_rendering_is_deterministic(tmp_path):
    config = SceneConfig(n_views=8, width=128, height=128, seed=7)
    write_scene(tmp_path / "a", config)
    write_scene(tmp_path / "b", config)
    write_scene(tmp_path / "c", SceneConfig(n_views=8, width=128, height=128, seed=8))
    for name in (
        "images/frame_00003.png",
        "depth/frame_00003.npy",
        "masks/frame_00003.png",
        "transforms.json",
    ):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/images/frame_00003.png").read_bytes() != (
        tmp_path / "c/images/frame_00003.png"
    ).read_bytes()


def test_centre_accuracy_on_cameras_recovered_from_rays(scene):
    meta = json.loads(read_transforms_json(scene)["meta"])
    c2w = np.array([c["c2w"] for c in meta["cameras"]])
    k = np.array([c["K"] for c in meta["cameras"]])
    rays = plucker_rays(c2w, k, 96, 64)  # (4, 8, 12, 6)
    recovered = np.array([camera_from_rays(r, None, 96, 64).c2w[:3, 3] for r in rays])
    truth = c2w[:, :3, 3]
    assert accuracy(centre_errors(recovered, truth, scene_scale(truth)), 0.3) == 1.0
    perturbed = recovered + np.random.default_rng(0).normal(scale=1.5, size=recovered.shape)
    assert accuracy(centre_errors(perturbed, truth, scene_scale(truth)), 0.3) < 1.0
