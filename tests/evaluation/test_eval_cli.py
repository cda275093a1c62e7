"""`onegen eval depth|camera|nvs` end to end on tiny folders written here: the JSON result, the skipped items
with their reasons (missing, extra, wrong size), the summary over scored items only, fast --help, and
one-line refusals of unusable folders."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from onegen.core.camera_geometry import opengl_to_opencv, orbit_c2w, plucker_rays
from onegen.pipelines.cli.main import main


def _nyuv2(root, scenes: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Marigold's extracted NYUv2 test layout; returns the depth in metres per item id."""
    rng = np.random.default_rng(0)
    truth = {}
    for scene, numbers in scenes.items():
        folder = root / "test" / scene
        folder.mkdir(parents=True)
        for number in numbers:
            depth = rng.uniform(0.5, 9.5, (480, 640))
            millimetres = np.round(depth * 1000).astype(np.uint16)
            Image.fromarray(millimetres).save(folder / f"depth_{number}.png")
            truth[f"test/{scene}/rgb_{number}"] = millimetres / 1000.0
    return truth


def test_eval_depth_on_nyuv2(tmp_path, capsys):
    truth = _nyuv2(tmp_path / "nyu", {"kitchen_0004": ["0001", "0002", "0003"], "office_0005": ["0009"]})
    preds = tmp_path / "preds" / "test"
    (preds / "kitchen_0004").mkdir(parents=True)
    (preds / "office_0005").mkdir()
    np.save(preds / "kitchen_0004" / "pred_0001.npy", 0.3 / truth["test/kitchen_0004/rgb_0001"] + 0.1)
    sample = preds / "kitchen_0004" / "pred_0002"  # an `onegen sample --task image2depth --out` folder
    sample.mkdir()
    inverse = 1.0 / truth["test/kitchen_0004/rgb_0002"]
    grey = np.round(255 * (inverse - inverse.min()) / (inverse.max() - inverse.min())).astype(np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(sample / "view_1_generated.png")
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(sample / "view_0.png")  # the given image
    np.save(preds / "office_0005" / "pred_0009.npy", np.ones((256, 256)))  # wrong size
    np.save(preds / "office_0005" / "pred_0099.npy", np.ones((480, 640)))  # no such item
    out = tmp_path / "depth.json"
    code = main(["eval", "depth", str(tmp_path / "preds"), "--gt", str(tmp_path / "nyu"), "--out", str(out),
                 "--checkpoint", "tiny.safetensors"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["metric"] == "depth" and result["checkpoint"] == "tiny.safetensors"
    assert result["protocol"]["alignment"] == "least_square_disparity" and result["protocol"]["eigen_crop"]
    assert result["dataset"] == {"name": "nyuv2", "path": str(tmp_path / "nyu")}
    scored = {i["item"]: i for i in result["items"]}
    assert sorted(scored) == ["test/kitchen_0004/rgb_0001", "test/kitchen_0004/rgb_0002"]
    assert scored["test/kitchen_0004/rgb_0001"]["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert scored["test/kitchen_0004/rgb_0002"]["delta1"] > 0.9  # 8-bit quantised inverse depth
    assert result["summary"]["abs_rel"] == pytest.approx(np.mean([i["abs_rel"] for i in scored.values()]))
    reasons = {s["item"]: s["reason"] for s in result["skipped"]}
    assert reasons == {
        "test/kitchen_0004/rgb_0003": "no prediction (looked for test/kitchen_0004/pred_0003.npy or "
                                      "test/kitchen_0004/pred_0003.png or test/kitchen_0004/pred_0003/view_1_generated.png)",
        "test/office_0005/rgb_0009": "prediction is 256x256, ground truth 480x640",
        "test/office_0005/pred_0099.npy": "extra prediction: no ground-truth item of this name"}
    assert result["counts"] == {"evaluated": 2, "skipped": 3}
    lines = capsys.readouterr().out.splitlines()
    assert "skipped test/office_0005/rgb_0009: prediction is 256x256, ground truth 480x640" in lines
    assert lines[-1].startswith("eval depth nyuv2: abs_rel ") and lines[-1].endswith(f"over 2 items (3 skipped) -> {out}")


def _camera_ring(n: int, radius: float = 2.0) -> np.ndarray:
    return np.stack([opengl_to_opencv(orbit_c2w(360.0 * i / n, 10.0 * i, radius)) for i in range(n)])


def test_eval_camera_on_a_folder_of_scenes(tmp_path, capsys):
    gt, preds = tmp_path / "gt", tmp_path / "preds"
    truth = _camera_ring(6)
    for scene in ("bottle", "shoe", "toy"):
        (gt / scene).mkdir(parents=True)
        (gt / scene / "cameras.json").write_text(json.dumps({"c2w": truth.tolist()}))
    # bottle: sample's cameras.json in its own frame: the truth scaled, turned and moved
    moved = truth.copy()
    turn = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    moved[:, :3, :3] = turn @ truth[:, :3, :3]
    moved[:, :3, 3] = 0.4 * truth[:, :3, 3] @ turn.T + 1.0
    (preds / "bottle").mkdir(parents=True)
    (preds / "bottle" / "cameras.json").write_text(json.dumps({"c2w": moved.tolist()}))
    # shoe: rays, turned into cameras here
    k = np.array([[90.0, 0, 32], [0, 90, 32], [0, 0, 1]])
    (preds / "shoe").mkdir()
    np.save(preds / "shoe" / "rays.npy", plucker_rays(truth, np.repeat(k[None], 6, axis=0), 64, 64))
    # toy: missing; extra: a scene the ground truth does not have
    (preds / "vase").mkdir()
    (preds / "vase" / "cameras.json").write_text(json.dumps({"c2w": truth.tolist()}))
    out = tmp_path / "camera.json"
    assert main(["eval", "camera", str(preds), "--gt", str(gt), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["summary"] == {"acc_0.1": 1.0, "acc_0.3": 1.0}
    assert [i["item"] for i in result["items"]] == ["bottle", "shoe"]
    assert max(max(i["centre_errors"]) for i in result["items"]) < 1e-6
    assert {s["item"]: s["reason"] for s in result["skipped"]} == {
        "toy": "no prediction (looked for toy/cameras.json or toy/rays.npy)",
        "vase/cameras.json": "extra prediction: no ground-truth scene of this name"}
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"eval camera folder: acc_0.1 1.0000, acc_0.3 1.0000 over 2 items (2 skipped) -> {out}"


def _object_views(folder, views, size=64):
    """RGBA renders: a coloured square on a transparent background."""
    folder.mkdir(parents=True)
    for view in views:
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[16:48, 16:48] = [20 * view % 256, 100, 200, 255]
        Image.fromarray(rgba).save(folder / f"{view:03d}.png")


def _on_white_at(path, size=32) -> np.ndarray:
    rgba = np.asarray(Image.open(path))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))


def test_eval_nvs_on_gso(tmp_path, capsys):
    gt, preds = tmp_path / "GSO30", tmp_path / "preds"
    for obj in ("alarm", "bell", "lion"):
        _object_views(gt / obj / "render_mvs_25" / "model", range(0, 5))
    (preds / "alarm").mkdir(parents=True)
    for view in (3, 4):  # exact predictions: white background, 32 x 32
        Image.fromarray(_on_white_at(gt / "alarm" / "render_mvs_25" / "model" / f"{view:03d}.png")).save(
            preds / "alarm" / f"{view:03d}.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(preds / "alarm" / "000.png")  # an input view: extra
    (preds / "bell").mkdir()  # an `onegen sample --task multiview` folder: generated views 3 and 4 in order
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(preds / "bell" / "view_0.png")
    for i, value in ((2, 250), (4, 240)):
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(preds / "bell" / f"view_{i}_generated.png")
    (preds / "lion").mkdir()
    for view in (3, 4):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(preds / "lion" / f"{view:03d}.png")  # wrong size
    out = tmp_path / "nvs.json"
    assert main(["eval", "nvs", str(preds), "--gt", str(gt), "--views", "3-4", "--size", "32",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    scored = {i["item"]: i for i in result["items"]}
    assert scored["alarm"]["psnr"] == pytest.approx(361.2, abs=0.01) and scored["alarm"]["ssim"] == pytest.approx(1.0)
    truth = [_on_white_at(gt / "bell" / "render_mvs_25" / "model" / f"{v:03d}.png") for v in (3, 4)]
    expected = [20 * np.log10(255 / np.sqrt(np.mean((t.astype(float) - value) ** 2)))
                for t, value in zip(truth, (250, 240), strict=True)]
    assert scored["bell"]["views_psnr"] == pytest.approx(expected)
    assert scored["bell"]["psnr"] == pytest.approx(np.mean(expected))
    assert result["summary"]["psnr"] == pytest.approx((scored["alarm"]["psnr"] + scored["bell"]["psnr"]) / 2)
    assert {s["item"]: s["reason"] for s in result["skipped"]} == {
        "alarm/000.png": "extra prediction: not a held-out view",
        "lion": "prediction 003 is 64x64, the protocol's size is 32x32"}
    assert result["protocol"]["views"] == [3, 4] and result["protocol"]["size"] == 32
    assert "over 2 items (2 skipped)" in capsys.readouterr().out


def test_unusable_folders_are_one_line_and_nothing_scored_is_rc_1(tmp_path, capsys):
    out = str(tmp_path / "r.json")
    assert main(["eval", "depth", str(tmp_path / "none"), "--gt", str(tmp_path), "--out", out]) == 2
    assert capsys.readouterr().err == f"onegen: error: {tmp_path / 'none'}: no such predictions folder\n"
    assert main(["eval", "depth", str(tmp_path), "--gt", str(tmp_path), "--out", out]) == 2
    assert "no ground truth of --dataset nyuv2 found" in capsys.readouterr().err
    assert main(["eval", "camera", str(tmp_path), "--gt", str(tmp_path), "--dataset", "gso", "--out", out]) == 2
    assert "--dataset gso needs --views" in capsys.readouterr().err
    _nyuv2(tmp_path / "nyu", {"bedroom_0001": ["0001"]})
    (tmp_path / "empty").mkdir()
    assert main(["eval", "depth", str(tmp_path / "empty"), "--gt", str(tmp_path / "nyu"), "--out", out]) == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["summary"] == {"abs_rel": None, "delta1": None} and result["counts"]["skipped"] == 1


@pytest.mark.parametrize("argv", [["eval", "--help"], ["eval", "depth", "--help"], ["eval", "camera", "--help"],
                                  ["eval", "nvs", "--help"]])
def test_eval_help_imports_nothing_heavy(argv):
    code = ("import sys\nfrom onegen.pipelines.cli.main import build_parser\n"
            f"try:\n    build_parser().parse_args({argv!r})\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('numpy', 'PIL', 'torch', 'ray', 'pyarrow', 'skimage') if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr
