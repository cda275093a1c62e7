"""Hypersim as published: `ai_VVV_NNN/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg` beside
other previews, `depth_meters.hdf5` (distance to the optical centre), camera keyframes in HDF5 and the
repo's metadata_camera_parameters.csv, written here with h5py in that layout."""

from __future__ import annotations

import csv
import io
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from onegen.annotators.gt_depth import GtDepthAnnotator, planar_from_distance
from onegen.core.image_codec import decode_png16
from onegen.pipelines.jobs.ingest import ingest_rows
from onegen.pipelines.sources.hypersim import pinhole_from_hypersim
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import detect_kind, list_items
from onegen.pipelines.sources.settings import SourceSpec
from tests.pipelines.test_source_helpers import jpeg

W, H, METERS = 32, 24, 0.0254
STANDARD = np.diag([0.5773502886169104, 0.4330127164626828, -1.0])
TILTED = np.array([[0.579607251426182, 0.0, -0.06955286861651404], [0.0, 0.4346865334657201, 0.09273312506660672],
                   [0.0, 0.004054126980668954, -1.003909173803896]])  # ai_037_002's, from the repo's CSV


def rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    return np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])


ORIENTATIONS = np.stack([rotation(0.0, 0.0), rotation(0.4, -0.2)])
POSITIONS = np.array([[10.0, 20.0, 30.0], [-40.0, 5.0, 60.0]])  # asset units


def write_h5(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        file.create_dataset("dataset", data=array)


def hypersim_rays(m: np.ndarray) -> np.ndarray:
    """Camera-space rays of every pixel centre, (H, W, 3), as the ml-hypersim notebook builds them."""
    u, v = np.meshgrid(np.linspace(-1 + 1 / W, 1 - 1 / W, W), np.linspace(-1 + 1 / H, 1 - 1 / H, H)[::-1])
    return np.dstack([u, v, np.ones_like(u)]) @ m.T


def wall_distance() -> np.ndarray:
    """Distance (m) to a wall 3 m in front of an untilted camera, with a box 1.5 m away in one corner."""
    rays = hypersim_rays(STANDARD)
    planar = np.full((H, W), 3.0)
    planar[:6, :8] = 1.5
    return planar * np.linalg.norm(rays, axis=-1) / np.abs(rays[..., 2])


def write_csv(path, scenes: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as handle:
        names = ["scene_name", "settings_output_img_height", "settings_output_img_width",
                 "settings_units_info_meters_scale"] + [f"M_cam_from_uv_{i}{j}" for i in range(3) for j in range(3)]
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        for scene, m in scenes.items():
            writer.writerow({"scene_name": scene, "settings_output_img_height": float(H),
                             "settings_output_img_width": float(W), "settings_units_info_meters_scale": METERS,
                             **{f"M_cam_from_uv_{i}{j}": m[i, j] for i in range(3) for j in range(3)}})


def write_hypersim(root) -> None:
    """Two scenes of two frames each in ml-hypersim's published layout; frame 1's depth HDF5 truncated."""
    for scene in ("ai_001_001", "ai_037_002"):
        images = root / scene / "images"
        preview = images / "scene_cam_00_final_preview"
        preview.mkdir(parents=True)
        for frame in range(2):
            for kind in ("tonemap", "color", "gamma", "diffuse_illumination", "diffuse_reflectance", "residual"):
                (preview / f"frame.{frame:04d}.{kind}.jpg").write_bytes(jpeg(frame))
        geometry = images / "scene_cam_00_geometry_preview"
        geometry.mkdir()
        for kind in ("depth_meters", "normal_cam", "semantic"):
            Image.new("RGB", (W, H)).save(geometry / f"frame.0000.{kind}.png")
        write_h5(images / "scene_cam_00_geometry_hdf5" / "frame.0000.depth_meters.hdf5",
                 wall_distance().astype(np.float16))
        truncated = images / "scene_cam_00_geometry_hdf5" / "frame.0001.depth_meters.hdf5"
        write_h5(truncated, wall_distance().astype(np.float16))
        truncated.write_bytes(truncated.read_bytes()[:900])
        write_h5(root / scene / "_detail" / "cam_00" / "camera_keyframe_orientations.hdf5", ORIENTATIONS)
        write_h5(root / scene / "_detail" / "cam_00" / "camera_keyframe_positions.hdf5", POSITIONS)
    write_csv(root / "metadata_camera_parameters.csv", {"ai_001_001": STANDARD, "ai_037_002": TILTED})


@pytest.fixture
def hypersim(tmp_path):
    write_hypersim(tmp_path / "hypersim")
    return tmp_path / "hypersim"


def test_one_photo_per_frame_not_per_preview(hypersim):
    spec = SourceSpec(str(hypersim))
    assert detect_kind(spec) == "hypersim"
    items = list_items(spec)
    assert len(items) == 4  # 2 scenes x 2 frames, not 2 x 2 x 6 preview files
    assert all(i["uri"].endswith(".tonemap.jpg") for i in items)


@pytest.mark.parametrize("scene, m", [("ai_001_001", STANDARD), ("ai_037_002", TILTED)])
def test_cameras_project_as_hypersim_does(hypersim, scene, m):
    items = [i for i in list_items(SourceSpec(str(hypersim))) if f"/{scene}/" in i["uri"]]
    rng = np.random.default_rng(0)
    for frame, item in enumerate(items):
        camera = item["meta"]["cameras"][0]
        c2w, k = np.array(camera["c2w"]), np.array(camera["K"])
        # world points seen by Hypersim's own rays (asset units), then projected with our OpenCV camera
        pixels = rng.uniform([2, 2], [W - 2, H - 2], (20, 2))
        uv = np.stack([2 * pixels[:, 0] / W - 1, 1 - 2 * pixels[:, 1] / H, np.ones(20)], axis=1)
        points = POSITIONS[frame] + rng.uniform(50, 200, (20, 1)) * (uv @ m.T) @ ORIENTATIONS[frame].T
        cam = (points * METERS - c2w[:3, 3]) @ c2w[:3, :3]
        assert (cam[:, 2] > 0).all()
        projected = cam @ k.T
        np.testing.assert_allclose(projected[:, :2] / projected[:, 2:], pixels, atol=1e-6)


@pytest.mark.parametrize("scene, m", [("ai_001_001", STANDARD), ("ai_037_002", TILTED)])
def test_intrinsics_follow_the_photo_actually_read(hypersim, scene, m):
    """A downscaled copy (half the CSV's output size): K is in the copy's pixels, so Hypersim's own rays
    land on half the full-size pixel coordinates; the depth's K stays the depth map's; another aspect
    ratio is a read_error."""
    preview = hypersim / scene / "images" / "scene_cam_00_final_preview"
    (preview / "frame.0000.tonemap.jpg").write_bytes(jpeg(0, W // 2, H // 2))
    (preview / "frame.0001.tonemap.jpg").write_bytes(jpeg(1, W, H // 2))
    spec = SourceSpec(str(hypersim), kind="hypersim")
    items = [i for i in list_items(spec) if f"/{scene}/" in i["uri"]]
    small, stretched = ingest_rows(spec, ImageLimits(min_side=8), items)
    meta = json.loads(small["meta"])
    c2w, k = np.array(meta["cameras"][0]["c2w"]), np.array(meta["cameras"][0]["K"])
    full_k = np.array(meta["depth"]["K"])
    np.testing.assert_allclose(k, np.diag([0.5, 0.5, 1.0]) @ full_k, atol=1e-12)
    rng = np.random.default_rng(1)
    pixels = rng.uniform([2, 2], [W - 2, H - 2], (20, 2))  # full-size pixel coordinates of Hypersim's rays
    uv = np.stack([2 * pixels[:, 0] / W - 1, 1 - 2 * pixels[:, 1] / H, np.ones(20)], axis=1)
    points = POSITIONS[0] + rng.uniform(50, 200, (20, 1)) * (uv @ m.T) @ ORIENTATIONS[0].T
    cam = (points * METERS - c2w[:3, 3]) @ c2w[:3, :3]
    projected = cam @ k.T
    np.testing.assert_allclose(projected[:, :2] / projected[:, 2:], pixels / 2, atol=1e-6)
    assert (small["width"], small["height"]) == (W // 2, H // 2)
    assert stretched["reject_reason"] == "read_error" and "does not match calibration" in stretched["reject_error"]


def test_untilted_camera_is_the_plain_pinhole():
    k, tilt = pinhole_from_hypersim(STANDARD, 1024, 768)
    np.testing.assert_allclose(k, [[512 / 0.5773502886169104, 0, 512], [0, 384 / 0.4330127164626828, 384], [0, 0, 1]])
    np.testing.assert_allclose(tilt, np.eye(3), atol=1e-12)


def test_distance_becomes_planar_depth(hypersim):
    item = list_items(SourceSpec(str(hypersim)))[0]
    distance = wall_distance()
    planar = planar_from_distance(distance, np.array(item["meta"]["depth"]["K"]))
    np.testing.assert_allclose(planar[6:, :], 3.0, rtol=1e-12)  # the wall: one depth...
    assert np.ptp(distance[6:, :]) > 0.3  # ...while its distance varies across the picture


def test_ground_truth_depth_condition_in_the_depth_annotators_convention(hypersim):
    spec = SourceSpec(str(hypersim), kind="hypersim")
    items = [i for i in list_items(spec) if "/ai_001_001/" in i["uri"]]
    rows = ingest_rows(spec, ImageLimits(min_side=8), items)
    batch = {name: [row[name] for row in rows] for name in ("key", "kind", "meta", "width", "height")}
    out = GtDepthAnnotator()(batch)
    assert out["status"] == ["ok", "error"]  # frame 1's depth file is truncated: its row's error
    assert "depth_meters.hdf5" in out["error"][1]
    condition = np.asarray(Image.open(io.BytesIO(out["condition"][0])))
    assert condition.shape == (H, W, 3)
    assert (condition[6:, :] == 0).all() and (condition[:6, :8] == 255).all()  # wall constant, near white
    inverse = out["depth_min"][0] + decode_png16(out["png16"][0]) / 65535 * (out["depth_max"][0] - out["depth_min"][0])
    np.testing.assert_allclose(inverse[6:, :], 1 / 3.0, rtol=1e-3)  # float16 distances
    assert out["provenance"][0].startswith("hypersim_distance_hdf5:")
    assert json.loads(rows[0]["meta"])["depth"]["encoding"] == "hypersim_distance_hdf5"


def test_photos_without_depth_are_skipped():
    batch = {"key": ["k"], "kind": ["image"], "meta": [json.dumps({"reencoded": False})], "width": [W], "height": [H]}
    assert GtDepthAnnotator()(batch)["status"] == ["skipped"]


def test_build_refuses_two_stores_making_one_task_unless_a_policy_names_one(tmp_path):
    from onegen.manifests import files
    from onegen.manifests.layout import DatasetLayout
    from onegen.pipelines.jobs.build import BuildInputError, available_tasks, source_tasks
    from onegen.pipelines.samples.policy import parse_policies

    layout = DatasetLayout(str(tmp_path))
    condition = {"task": "depth2image", "column": "condition", "ext": "png", "tags_column": None}
    files.commit_json(layout.store_record("depth@1"), {"conditions": [condition]})
    [only] = available_tasks(str(tmp_path))["depth2image"]
    assert only.store == "depth@1"
    files.commit_json(layout.store_record("depth_gt@1"), {"conditions": [condition]})
    available = available_tasks(str(tmp_path))
    with pytest.raises(BuildInputError, match="two stores make depth2image: depth@1 and depth_gt@1; source 'laion'"):
        source_tasks(available, ("depth2image",), ["hypersim", "laion"], parse_policies(["hypersim.stores=depth_gt"]))
    picked = source_tasks(available, ("depth2image",), ["hypersim", "laion"],
                          parse_policies(["hypersim.stores=depth_gt", "*.stores=depth"]))
    assert [t.store for t in picked["hypersim"]] == ["depth_gt@1"]
    assert [t.store for t in picked["laion"]] == ["depth@1"]
