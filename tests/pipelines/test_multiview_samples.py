"""Multiview samples: view choice, member layout, prompts, rays that give back the right cameras, skips."""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from onegen.annotators.cameras_annotator import CamerasAnnotator  # noqa: E402
from onegen.core.camera_geometry import (  # noqa: E402
    camera_from_rays,
    latent_to_rays,
    normalize_cameras,
    rotation_angle_deg,
)
from onegen.core.image_codec import decode_rgb  # noqa: E402
from onegen.manifests.shard_writer import Sample  # noqa: E402
from onegen.pipelines.demo.synthetic_scene import Scene, SceneConfig, render, write_scene  # noqa: E402
from onegen.pipelines.samples.multiview import MultiviewConfig, multiview_samples  # noqa: E402
from onegen.pipelines.sources.scene_cameras import read_transforms_json  # noqa: E402

# Non-square views, so the centre crop matters: 128 x 96 -> crop 96 x 96 from column 16 -> 48 x 48.
SCENE = SceneConfig(n_views=7, width=128, height=96, seed=3)
RES = 48


def as_batch(rows: list[dict]) -> dict[str, list]:
    return {column: [row.get(column) for row in rows] for column in rows[0]}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """(ground-truth Scene, catalog row, cameras annotation row) of one rendered scene."""
    folder = tmp_path_factory.mktemp("mv_scene")
    truth = write_scene(folder, SCENE)
    row = read_transforms_json(folder, source="synthetic")
    out = CamerasAnnotator()(as_batch([row]))
    cameras_row = {column: values[0] for column, values in out.items()}
    assert cameras_row["status"] == "ok"
    return truth, row, cameras_row


def samples_of(scene, config: MultiviewConfig, caption: str | None = "a small toy scene", row=None):
    _, default_row, cameras_row = scene
    out = multiview_samples(row or default_row, cameras_row, caption, config, ordinal=512)
    assert all(isinstance(item, Sample) for item in out), out
    return out


def meta_of(sample: Sample) -> dict:
    return json.loads(dict(sample.members)["json"])


def test_view_counts_in_range_deterministic_and_keyed(scene):
    config = MultiviewConfig(min_views=2, max_views=5, samples_per_scene=12, resolution=16)
    first, again = samples_of(scene, config), samples_of(scene, config)
    counts = [s.n_views // 2 for s in first]
    assert all(2 <= c <= 5 for c in counts) and len(set(counts)) > 1  # drawn, not fixed
    assert [s.members for s in first] == [s.members for s in again]  # reruns give identical bytes
    indices = [meta_of(s)["view_indices"] for s in first]
    assert all(len(set(i)) == len(i) and all(0 <= j < SCENE.n_views for j in i) for i in indices)
    other = samples_of(scene, config, row=dict(scene[1], key="another-key"))
    assert [meta_of(s)["view_indices"] for s in other] != indices  # the draw depends on the key
    assert [s.key for s in first] == [f"{scene[1]['key']}-multiview-{i}" for i in range(12)]
    assert [s.ordinal for s in first] == list(range(512, 524))
    assert all("." not in s.key for s in first)
    # max_views above the scene's view count is capped by the scene
    capped = samples_of(scene, MultiviewConfig(min_views=6, max_views=12, samples_per_scene=6, resolution=16))
    assert all(6 <= s.n_views // 2 <= SCENE.n_views for s in capped)


def test_sliding_window_takes_consecutive_frames(scene):
    config = MultiviewConfig(
        min_views=3, max_views=4, samples_per_scene=8, sliding_window=True, resolution=16
    )
    for sample in samples_of(scene, config):
        chosen = meta_of(sample)["view_indices"]
        assert chosen == list(range(chosen[0], chosen[0] + len(chosen)))
        assert chosen[-1] < SCENE.n_views


def test_members_are_interleaved_and_prompt_follows_caption(scene):
    (sample,) = samples_of(scene, MultiviewConfig(min_views=3, max_views=3, resolution=RES), caption="toys")
    names = [name for name, _ in sample.members]
    assert names == ["img0.jpg", "ray0.npy", "img1.jpg", "ray1.npy", "img2.jpg", "ray2.npy", "txt", "json"]
    assert sample.prompt == "[[multiview]] toys" and dict(sample.members)["txt"] == b"[[multiview]] toys"
    meta = meta_of(sample)
    assert meta["roles"] == ["image", "rays"] * 3 and meta["n_views"] == 6 == sample.n_views
    assert meta["task"] == sample.task == "multiview" and meta["source_keys"] == [scene[1]["key"]]
    assert sample.annotators == [f"cameras@{CamerasAnnotator.version}"] and (sample.width, sample.height) == (RES, RES)
    assert decode_rgb(dict(sample.members)["img1.jpg"]).shape == (RES, RES, 3)
    (bare,) = samples_of(scene, MultiviewConfig(resolution=16), caption=None)
    assert bare.prompt == "[[multiview]]" and dict(bare.members)["txt"] == b"[[multiview]]"


def expected_intrinsics() -> np.ndarray:
    """The synthetic K after the centre crop and resize, worked out by hand from the scene config."""
    side = min(SCENE.width, SCENE.height)
    focal = 0.5 * SCENE.width / np.tan(np.radians(SCENE.fov_x_deg) / 2) * RES / side
    return np.array([[focal, 0, RES / 2], [0, focal, RES / 2], [0, 0, 1.0]])  # principal point stays central


def test_rays_give_back_the_renormalised_cameras_of_the_chosen_views(scene):
    truth = scene[0]
    config = MultiviewConfig(min_views=3, max_views=6, samples_per_scene=3, resolution=RES)
    k_expected = expected_intrinsics()
    for sample in samples_of(scene, config):
        chosen = meta_of(sample)["view_indices"]
        expected, _ = normalize_cameras(truth.c2w[chosen])  # from ground truth: first chosen = camera 0
        np.testing.assert_allclose(expected[0], np.diag([-1.0, -1.0, 1.0, 1.0]), atol=1e-9)  # released frame
        members = dict(sample.members)
        for j in range(len(chosen)):
            latent = np.load(io.BytesIO(members[f"ray{j}.npy"]))
            assert latent.dtype == np.float16 and latent.shape == (16, RES // 8, RES // 8)
            rays = latent_to_rays(latent)  # (6, 6, 6)
            fixed_k = camera_from_rays(rays, intrinsics=k_expected)
            np.testing.assert_allclose(fixed_k.c2w[:3, 3], expected[j, :3, 3], atol=5e-3)
            assert rotation_angle_deg(fixed_k.c2w[:3, :3], expected[j, :3, :3]) < 0.2
            estimated = camera_from_rays(rays)  # K estimated from the rays alone (DLT): the crop/resize K
            np.testing.assert_allclose(estimated.intrinsics, k_expected, atol=0.05 * k_expected[0, 0])
            assert rotation_angle_deg(estimated.c2w[:3, :3], expected[j, :3, :3]) < 1.0


def test_images_match_a_render_through_the_adjusted_cameras(scene):
    """The pixels and the K agree: re-rendering the chosen views through the cropped + resized K
    reproduces the images (up to JPEG), while half a pixel of principal-point error, or a K that
    ignores the crop offset, does not."""
    truth = scene[0]
    (sample,) = samples_of(scene, MultiviewConfig(min_views=2, max_views=2, resolution=RES))
    chosen = meta_of(sample)["view_indices"]
    images = np.stack([decode_rgb(dict(sample.members)[f"img{j}.jpg"]) for j in range(2)]).astype(float)

    def error(k: np.ndarray) -> float:
        # Render at 2x and average 2x2 blocks: the same box filter as the 96 -> 48 area resize.
        k2 = np.diag([2.0, 2.0, 1.0]) @ k
        rendered, _, _ = render(Scene(truth.spheres, truth.boxes, truth.c2w[chosen], k2), 2 * RES, 2 * RES)
        binned = rendered.astype(float).reshape(2, RES, 2, RES, 2, 3).mean(axis=(2, 4))  # (2, RES, RES, 3)
        return float(np.abs(binned - images).mean())

    half_pixel, uncropped = expected_intrinsics(), expected_intrinsics()
    half_pixel[0, 2] += 0.5
    uncropped[0, 2] = SCENE.width / 2 * RES / SCENE.height  # the full-frame principal point
    good = error(expected_intrinsics())
    assert good < 3.5, good  # JPEG q95 noise only
    assert error(half_pixel) > 1.5 * good and error(uncropped) > 4 * good


def test_rgba_views_are_composited_on_white(scene):
    _, row, cameras_row = scene
    rgba_views = []
    for data in row["view_images"]:
        rgb = decode_rgb(data)
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[:, : SCENE.width // 2] = 0  # left half transparent
        buffer = io.BytesIO()
        Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(buffer, format="PNG")
        rgba_views.append(buffer.getvalue())
    config = MultiviewConfig(min_views=2, max_views=2, resolution=RES)
    (sample,) = multiview_samples(dict(row, view_images=rgba_views), cameras_row, None, config, 0)
    image = decode_rgb(dict(sample.members)["img0.jpg"]).astype(int)
    # crop starts at column 16, so the transparent half ends at output column (64 - 16) / 2 = 24
    assert image[:, :22].min() >= 245
    assert image[:, 26:].mean() < 200  # the opaque half keeps the scene (the ground is grey)


def test_data_problems_become_skip_reasons(scene):
    _, row, cameras_row = scene
    config = MultiviewConfig(min_views=SCENE.n_views, max_views=SCENE.n_views, resolution=16)
    assert multiview_samples(row, None, None, config, 0) == ["missing_annotation:cameras"]
    failed = dict(cameras_row, status="error", cameras_json=None, rays=None)
    assert multiview_samples(row, failed, None, config, 0) == ["cameras:error"]
    views = list(row["view_images"])
    views[4] = b"not an image at all"
    (decode,) = multiview_samples(dict(row, view_images=views), cameras_row, None, config, 0)
    assert decode.startswith("decode_error:view4: ") and "Error" in decode  # the exception text is kept
    too_many = dataclasses.replace(config, min_views=SCENE.n_views + 1, max_views=SCENE.n_views + 1)
    assert multiview_samples(row, cameras_row, None, too_many, 0) == ["too_few_views"]
    fewer = dict(row, view_images=views[:3])  # cameras for 7 views, 3 images
    (reason,) = multiview_samples(fewer, cameras_row, None, dataclasses.replace(config, min_views=2), 0)
    assert reason.startswith("cameras:count_mismatch")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        MultiviewConfig(resolution=40)
    with pytest.raises(ValueError):
        MultiviewConfig(min_views=5, max_views=3)


def test_a_version_1_cameras_store_gives_the_same_rays(scene):
    """cameras@1 kept camera 0's OpenCV frame with camera 0 at the distance from the origin and no
    "distance" field; samples built from it are the same as from cameras@2 (the released frame)."""
    _, row, cameras_row = scene
    document = json.loads(cameras_row["cameras_json"])
    old = np.eye(4)
    old[:3, :3] = np.diag([-1.0, -1.0, 1.0])  # back to OpenCV axes, camera 0 moved to (0, 0, -1.7)
    old[2, 3] = -document.pop("distance")
    for camera in document["cameras"]:
        camera["c2w"] = (old @ np.array(camera["c2w"])).tolist()
    v1_row = dict(cameras_row, cameras_json=json.dumps(document), annotator_version="1")
    config = MultiviewConfig(min_views=3, max_views=4, samples_per_scene=2, resolution=16)
    new = multiview_samples(row, cameras_row, None, config, 0)
    v1 = multiview_samples(row, v1_row, None, config, 0)
    for a, b in zip(new, v1, strict=True):
        rays_a = [np.load(io.BytesIO(data)) for name, data in a.members if name.endswith(".npy")]
        rays_b = [np.load(io.BytesIO(data)) for name, data in b.members if name.endswith(".npy")]
        np.testing.assert_allclose(np.stack(rays_a).astype(float), np.stack(rays_b).astype(float), atol=2e-3)
    assert v1[0].annotators == ["cameras@1"]
