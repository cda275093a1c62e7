"""DL3DV-10K as published: `<batch>/<hash>/transforms.json` (nerfstudio, calibration in full-resolution
pixels, OPENCV distortion) with the pictures in images_4/, written here in that layout."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onegen.core.camera_geometry import opengl_to_opencv
from onegen.pipelines.jobs.ingest import ingest_rows
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import detect_kind, list_items, read_scene
from onegen.pipelines.sources.lens import undistort_array
from onegen.pipelines.sources.settings import SourceSpec

FULL_W, FULL_H, DOWN = 256, 192, 4
K_FULL = np.array([[210.0, 0, 131.0], [0, 205.0, 93.0], [0, 0, 1]])
DISTORTION = {"k1": -0.12, "k2": 0.03, "p1": 0.001, "p2": -0.002}


def c2w_gl(i: int) -> np.ndarray:
    angle = 0.3 * i
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    pose[:3, 3] = [2 * np.sin(angle), 0.1 * i, 2 * np.cos(angle)]
    return pose


def write_dl3dv_scene(folder, frames: int = 6, missing: int | None = None) -> None:
    (folder / "images_4").mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    records = []
    for i in range(frames):
        name = f"frame_{i + 1:05d}.png"
        if i != missing:
            pixels = rng.integers(0, 255, (FULL_H // DOWN, FULL_W // DOWN, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "images_4" / name)
        records.append({"file_path": f"images/{name}", "transform_matrix": c2w_gl(i).tolist(), "colmap_im_id": i + 1})
    (folder / "transforms.json").write_text(json.dumps({
        "w": FULL_W, "h": FULL_H, "fl_x": K_FULL[0, 0], "fl_y": K_FULL[1, 1], "cx": K_FULL[0, 2], "cy": K_FULL[1, 2],
        **DISTORTION, "camera_model": "OPENCV", "frames": records,
        "applied_transform": [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]]}))


@pytest.fixture
def dl3dv(tmp_path):
    root = tmp_path / "DL3DV-10K"
    write_dl3dv_scene(root / "1K" / "0a1b2c")
    write_dl3dv_scene(root / "1K" / "3d4e5f")
    return root


def test_detected_and_one_scene_per_hash(dl3dv):
    spec = SourceSpec(str(dl3dv))
    assert detect_kind(spec) == "dl3dv"
    items = list_items(spec)
    assert [item["caption_key"] for item in items] == ["0a1b2c", "3d4e5f"]
    assert {item["kind"] for item in items} == {"dl3dv"}


def test_cameras_intrinsics_distortion_and_max_views(dl3dv):
    spec = SourceSpec(str(dl3dv), max_views=3)
    item = list_items(spec)[0]
    row = read_scene(spec, item)
    meta = json.loads(row["meta"])
    assert len(row["view_images"]) == 3
    assert [u.rsplit("/", 1)[1] for u in row["view_uris"]] == ["frame_00001.png", "frame_00003.png", "frame_00006.png"]
    assert all("/images_4/" in u for u in row["view_uris"])
    for camera, index in zip(meta["cameras"], [0, 2, 5], strict=True):
        np.testing.assert_allclose(camera["K"], np.diag([1 / DOWN, 1 / DOWN, 1]) @ K_FULL)  # the picture read
        np.testing.assert_allclose(camera["c2w"], opengl_to_opencv(c2w_gl(index)))
        assert (camera["width"], camera["height"]) == (FULL_W // DOWN, FULL_H // DOWN)
    assert meta["undistorted"]["first"] == [DISTORTION[k] for k in ("k1", "k2", "p1", "p2")] + [0.0]
    original = np.asarray(Image.open(dl3dv / "1K" / "0a1b2c" / "images_4" / "frame_00001.png"))
    stored = np.asarray(Image.open(__import__("io").BytesIO(row["view_images"][0])))
    k_small = np.diag([1 / DOWN, 1 / DOWN, 1]) @ K_FULL
    coefficients = [DISTORTION[k] for k in ("k1", "k2", "p1", "p2")]
    np.testing.assert_array_equal(stored, undistort_array(original, k_small, coefficients))  # lossless PNG
    assert not np.array_equal(stored, original)


def test_missing_frame_rejects_that_scene_only(dl3dv):
    write_dl3dv_scene(dl3dv / "1K" / "9z9z9z", missing=2)
    spec = SourceSpec(str(dl3dv), kind="dl3dv")
    rows = ingest_rows(spec, ImageLimits(min_side=8), list_items(spec))
    assert [r["reject_reason"] for r in rows] == [None, None, "bad_scene"]
    assert "frame_00003.png" in rows[2]["reject_error"]


@pytest.mark.timeout(600)
def test_onegen_ingest_dl3dv(dl3dv, tmp_path, ray_local):
    from onegen.pipelines.cli.main import main
    from tests.pipelines.test_kill_resume import RAY

    out = tmp_path / "data"
    args = ["ingest", str(dl3dv), "--out", str(out), "--max-views", "4", "--min-side", "8", *RAY]
    assert main(args) == 0
    table = pq.read_table(out / "catalog" / "dl3dv_10k")
    assert table.column("kind").to_pylist() == ["scene", "scene"]
    assert [len(v) for v in table.column("view_images").to_pylist()] == [4, 4]
    assert main(args) == 0  # a rerun skips the committed part: nothing duplicated
    assert pq.read_table(out / "catalog" / "dl3dv_10k").num_rows == 2
