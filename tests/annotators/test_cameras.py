"""Cameras, normalisation, Plücker rays, cameras-from-rays, the centre metric and the cameras annotator."""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from onegen.annotators.cameras_annotator import CamerasAnnotator  # noqa: E402
from onegen.core.camera_geometry import (  # noqa: E402
    RAY_SCALE,
    camera0_c2w,
    camera_from_rays,
    first_camera_frame,
    latent_to_rays,
    normalize_cameras,
    opencv_to_opengl,
    opengl_to_opencv,
    plucker_rays,
    rays_to_latent,
    rotation_angle_deg,
)
from onegen.pipelines.demo.synthetic_scene import SceneConfig, look_at, write_scene  # noqa: E402
from onegen.pipelines.sources.scene_cameras import read_transforms_json  # noqa: E402


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def cameras_looking_at(rng: np.random.Generator, n: int, target: np.ndarray) -> np.ndarray:
    """n OpenCV c2w at random distances 2-5 around `target`, optical axes through it."""
    dirs = rng.normal(size=(n, 3))
    eyes = target + dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * rng.uniform(2, 5, size=(n, 1))
    return np.stack([look_at(eye, target) for eye in eyes])


def random_intrinsics(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    f = rng.uniform(0.8, 1.5, size=n) * width
    return np.stack(
        [
            [
                [fi, 0, width / 2 + rng.uniform(-5, 5)],
                [0, fi * rng.uniform(0.95, 1.05), height / 2 + rng.uniform(-5, 5)],
                [0, 0, 1],
            ]
            for fi in f
        ]
    )


def test_opengl_opencv_is_an_involution_flipping_y_and_z():
    rng = np.random.default_rng(0)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = random_rotation(rng), rng.normal(size=3)
    converted = opengl_to_opencv(c2w)
    np.testing.assert_allclose(opencv_to_opengl(converted), c2w, atol=1e-12)
    # OpenGL looks down -z with y up; OpenCV looks down +z with y down; x and the centre are kept.
    np.testing.assert_allclose(converted[:3, 2], -c2w[:3, 2])
    np.testing.assert_allclose(converted[:3, 1], -c2w[:3, 1])
    np.testing.assert_allclose(converted[:3, [0, 3]], c2w[:3, [0, 3]])


CAMERA0_RELEASED = np.diag([-1.0, -1.0, 1.0, 1.0])  # camera 0's OpenCV c2w in its own pytorch3d view frame


def test_normalisation_puts_camera0_at_the_origin_and_the_axes_intersection_1_7_ahead():
    rng = np.random.default_rng(1)
    target = np.array([3.0, -2.0, 5.0])
    c2w = cameras_looking_at(rng, 5, target)
    normalised, transform = normalize_cameras(c2w)
    assert transform.degenerate == ""
    np.testing.assert_allclose(normalised[0], CAMERA0_RELEASED, atol=1e-9)
    centre = np.array([0.0, 0.0, 1.7])  # the axes meet exactly at the target: on camera 0's axis
    for camera in normalised:  # every optical axis passes through the target, now at (0, 0, 1.7)
        to_centre, axis = centre - camera[:3, 3], camera[:3, 2]
        assert np.linalg.norm(np.cross(to_centre, axis)) < 1e-9
        assert np.dot(to_centre, axis) > 0
    # the transform is a similarity that maps the target to (0, 0, 1.7), and it can be undone
    np.testing.assert_allclose(transform.matrix() @ np.append(target, 1.0), [0, 0, 1.7, 1], atol=1e-9)
    np.testing.assert_allclose(transform.invert(normalised), c2w, atol=1e-9)
    # any similarity of the input world gives the same normalised cameras
    moved = c2w.copy()
    rotation = random_rotation(rng)
    moved[:, :3, :3] = rotation @ c2w[:, :3, :3]
    moved[:, :3, 3] = 3.0 * c2w[:, :3, 3] @ rotation.T + np.array([1.0, 2.0, -4.0])
    np.testing.assert_allclose(normalize_cameras(moved)[0], normalised, atol=1e-9)


def test_first_camera_frame_keeps_the_scale_and_camera0_to_world_maps_back():
    rng = np.random.default_rng(6)
    c2w = cameras_looking_at(rng, 4, np.zeros(3))
    moved, _ = first_camera_frame(c2w)
    np.testing.assert_allclose(moved[0], CAMERA0_RELEASED, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(moved[2, :3, 3]), np.linalg.norm(c2w[2, :3, 3] - c2w[0, :3, 3]))
    np.testing.assert_allclose(camera0_c2w(moved, "opencv"), np.linalg.inv(c2w[0]) @ c2w, atol=1e-12)
    with pytest.raises(ValueError):
        camera0_c2w(moved, "colmap")


def test_degenerate_inputs_fall_back_without_nans():
    single, t1 = normalize_cameras(np.eye(4)[None])
    parallel = np.stack([np.eye(4)] * 3)
    parallel[:, 0, 3] = [0.0, 1.0, 2.0]
    same_dir, t2 = normalize_cameras(parallel)
    assert (t1.degenerate, t2.degenerate) == ("single_view", "parallel_axes")
    for result in (single, same_dir):
        assert np.isfinite(result).all()
        np.testing.assert_allclose(result[0], CAMERA0_RELEASED, atol=1e-12)
    # parallel axes: the scale puts the farthest camera 1.7 from camera 0
    assert np.linalg.norm(same_dir[2, :3, 3]) == pytest.approx(1.7)


def test_cameras_rays_cameras_round_trip():
    rng = np.random.default_rng(2)
    width, height = 96, 80
    c2w, _ = normalize_cameras(cameras_looking_at(rng, 6, rng.normal(size=3)))
    intrinsics = random_intrinsics(rng, 6, width, height)
    latent = rays_to_latent(plucker_rays(c2w, intrinsics, width, height)).astype(
        np.float32
    )  # (6, 16, 10, 12)
    assert latent.shape == (6, 16, 10, 12)
    rays = latent_to_rays(latent)
    for i in range(6):
        got = camera_from_rays(rays[i], intrinsics[i], width, height)
        assert np.abs(got.c2w[:3, 3] - c2w[i, :3, 3]).max() < 1e-4
        assert rotation_angle_deg(got.c2w[:3, :3], c2w[i, :3, :3]) < 0.01
        estimated = camera_from_rays(rays[i], None, width, height)  # focal + principal point from rays
        assert rotation_angle_deg(estimated.c2w[:3, :3], c2w[i, :3, :3]) < 0.01
        np.testing.assert_allclose(estimated.intrinsics, intrinsics[i], atol=0.05)


def test_ray_layout_and_scale_match_direct_construction():
    rng = np.random.default_rng(3)
    width, height = 64, 48
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = random_rotation(rng), rng.normal(size=3)
    k = np.array([[70.0, 0, 30.0], [0, 72.0, 25.0], [0, 0, 1]])
    rays = plucker_rays(c2w[None], k[None], width, height)[0]  # (6, 8, 6)
    latent = rays_to_latent(rays)  # (16, 6, 8)
    assert rays.shape == (6, 8, 6) and latent.shape == (16, 6, 8)
    for i, j in [(0, 0), (5, 7), (2, 3)]:
        u, v = (j + 0.5) * 8, (i + 0.5) * 8  # half-pixel cell centres in full-image pixels
        cam = np.array([(u - 30.0) / 70.0, (v - 25.0) / 72.0, 1.0])
        d = c2w[:3, :3] @ cam
        d /= np.linalg.norm(d)
        m = np.cross(c2w[:3, 3], d)
        np.testing.assert_allclose(rays[i, j], np.concatenate([d, m]), atol=1e-12)
        expected = RAY_SCALE * np.array([*d, *m, *d, *m, *d, m[0]])
        assert RAY_SCALE == 1.658
        np.testing.assert_allclose(latent[:, i, j], expected, atol=1e-12)


# --- the annotator ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_row(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    scene = write_scene(folder, SceneConfig(n_views=3, width=64, height=48, seed=5))
    return scene, read_transforms_json(folder)


def as_batch(rows: list[dict]) -> dict[str, list]:
    return {column: [row.get(column) for row in rows] for column in rows[0]}


def test_annotator_outputs_rays_and_normalised_cameras(scene_row):
    scene, row = scene_row
    broken = dict(row, key="broken", meta=json.dumps({"cameras": [{"c2w": [[2, 0, 0, 0]] * 4}] * 3}))
    missing = dict(row, key="missing", meta="{}")
    image_row = dict(row, key="image", kind="image")
    annotator = CamerasAnnotator()
    out = annotator(as_batch([row, broken, missing, image_row]))
    pa.Table.from_pydict(out, schema=annotator.schema())  # the columns fit the declared schema
    assert out["status"] == ["ok", "error", "error", "skipped"]
    assert "bad_camera" in out["error"][1] and "missing_cameras" in out["error"][2]
    assert (out["ray_height"][0], out["ray_width"][0]) == (6, 8)
    assert len(out["rays"][0]) == 3
    document = json.loads(out["cameras_json"][0])
    normalised = np.array([camera["c2w"] for camera in document["cameras"]])
    expected, _ = normalize_cameras(scene.c2w)
    np.testing.assert_allclose(normalised, expected, atol=1e-9)
    for i, blob in enumerate(out["rays"][0]):
        latent = np.load(io.BytesIO(blob))
        assert latent.dtype == np.float16 and latent.shape == (16, 6, 8)
        got = camera_from_rays(latent_to_rays(latent), scene.intrinsics, 64, 48)  # float16 precision
        assert np.abs(got.c2w[:3, 3] - normalised[i, :3, 3]).max() < 2e-2
        assert rotation_angle_deg(got.c2w[:3, :3], normalised[i, :3, :3]) < 0.5
