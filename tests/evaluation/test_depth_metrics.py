"""Marigold's depth protocol (evaluation/depth_metrics.py) on hand-made cases with known answers, and the
readers of the NYUv2 / DIODE layouts on tiny folders written here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onegen.evaluation.depth_datasets import (
    diode_items,
    load_ground_truth,
    nyuv2_items,
    read_depth_prediction,
)
from onegen.evaluation.depth_eval import DepthEvalConfig, evaluate_depth
from onegen.evaluation.depth_metrics import (
    DIODE,
    NYUV2,
    DepthProtocol,
    abs_rel,
    delta1,
    score_depth,
    valid_mask,
)
from onegen.evaluation.results import ItemError


def room(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth metric depth map in (0.5, 9.5) m."""
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    noise = np.random.default_rng(seed).uniform(0, 0.5, (height, width))
    return 0.5 + 8.0 * (0.3 * rows + 0.6 * cols) + noise


def test_abs_rel_and_delta1_by_hand():
    gt = np.array([[1.0, 2.0, 4.0]])
    pred = np.array([[1.0, 2.4, 3.0]])
    everything = np.ones_like(gt, dtype=bool)
    assert abs_rel(pred, gt, everything) == pytest.approx((0 + 0.2 + 0.25) / 3)
    assert delta1(pred, gt, everything) == pytest.approx(2 / 3)  # ratios 1, 1.2, 1.333
    # the threshold is strict: a ratio of exactly 1.25 does not count
    assert delta1(np.array([[1.25, 1.0]]), np.array([[1.0, 1.0]]), np.ones((1, 2), bool)) == 0.5


def test_a_prediction_off_by_an_affine_map_in_depth_scores_perfectly():
    gt = room()
    scores = score_depth(3.0 * gt - 0.7, gt, NYUV2, "depth")
    assert scores["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert scores["delta1"] == 1.0


def test_an_inverse_depth_prediction_off_by_an_affine_map_scores_perfectly():
    """`onegen sample` writes grey inverse depth: an affine map of 1/g is Marigold's least_square_disparity."""
    gt = room()
    inverse = 0.5 / gt + 0.02  # what a min-max-normalised disparity picture is, up to its affine map
    scores = score_depth(inverse, gt, NYUV2, "inverse")
    assert scores["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert scores["delta1"] == 1.0
    # the same picture read as depth is wrong: the protocol setting matters
    assert score_depth(inverse, gt, NYUV2, "depth")["abs_rel"] > 0.05


def test_nyuv2_counts_only_the_eigen_crop_and_the_range():
    gt = room()
    pred = gt.copy()
    pred[:45] = 1000.0  # garbage above the Eigen crop (rows 0-44) is neither fitted nor scored...
    pred[:, 601:] = -5.0  # ...nor right of it
    gt[100:110, 100:110] = 0.0  # no depth: not valid
    gt[200:210, 200:210] = 12.0  # beyond NYUv2's 10 m: not valid
    pred[100:110, 100:110] = pred[200:210, 200:210] = 77.0
    valid = valid_mask(gt, NYUV2)
    assert valid.sum() == (471 - 45) * (601 - 41) - 200
    assert score_depth(pred, gt, NYUV2, "depth") == {"abs_rel": pytest.approx(0.0, abs=1e-9), "delta1": 1.0}
    # the same garbage inside the crop counts
    pred[300, 300] = 1000.0
    assert score_depth(pred, gt, NYUV2, "depth")["delta1"] < 1.0


def test_the_aligned_depth_is_clipped_to_the_dataset_range():
    gt = np.array([[1.0, 4.0, 4.5, 4.9]])
    pred = np.array([[1.0, 2.0, 3.0, 4.0]])
    protocol = DepthProtocol("folder", 0.0, 5.0)
    everything = np.ones_like(gt, dtype=bool)
    a = np.stack([pred.ravel(), np.ones(4)], axis=-1)
    scale, shift = np.linalg.lstsq(a, gt.ravel(), rcond=None)[0]
    aligned = pred * scale + shift
    assert aligned.max() > 5.0  # the fit overshoots on the far pixel...
    clipped = np.clip(aligned, 0.0, 5.0)
    scores = score_depth(pred, gt, protocol, "depth")  # ...and the protocol clips it to the range
    assert scores["abs_rel"] == pytest.approx(abs_rel(clipped, gt, everything))
    assert scores["abs_rel"] != pytest.approx(abs_rel(aligned, gt, everything))


def test_bad_input_is_a_reason_not_a_number():
    gt = room(48, 64)
    wide = DepthProtocol("folder", 0.0, 100.0)
    with pytest.raises(ItemError, match="prediction is 24x32, ground truth 48x64"):
        score_depth(np.ones((24, 32)), gt, wide, "depth")
    nan = gt.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ItemError, match="prediction has 1 NaN/inf pixels"):
        score_depth(nan, gt, wide, "depth")
    with pytest.raises(ItemError, match=r"no valid pixel \(0.001 < depth < 10, Eigen crop\)"):
        score_depth(room(), np.full((480, 640), 20.0), NYUV2, "depth")
    mask = np.ones(gt.shape, bool)
    with pytest.raises(ItemError, match="1 NaN/inf pixels under its mask"):
        score_depth(gt, nan, DIODE, "depth", mask)
    with pytest.raises(ItemError, match="prediction is positive"):
        score_depth(np.zeros_like(gt), gt, wide, "inverse")


def test_diode_uses_its_mask_and_clips_to_its_range(tmp_path):
    scan = tmp_path / "val" / "outdoor" / "scene_00022" / "scan_00193"
    scan.mkdir(parents=True)
    gt = room(48, 64) * 30  # 15-285 m outdoors
    mask = np.ones(gt.shape, bool)
    mask[:, :8] = False
    np.save(scan / "00022_00193_outdoor_000_000_depth.npy", gt[..., None].astype(np.float32))  # (H, W, 1)
    np.save(scan / "00022_00193_outdoor_000_000_depth_mask.npy", mask.astype(np.float32))
    [item] = diode_items(str(tmp_path / "val"))
    assert item.item == "outdoor/scene_00022/scan_00193/00022_00193_outdoor_000_000"
    assert item.prediction_stem == "outdoor/scene_00022/scan_00193/pred_00022_00193_outdoor_000_000"
    depth, file_mask = load_ground_truth(item)
    assert depth.shape == (48, 64) and file_mask.shape == (48, 64)
    pred = depth.copy()
    pred[:, :8] = -1e6  # outside the mask: neither fitted nor scored
    assert score_depth(pred, depth, DIODE, "depth", file_mask)["delta1"] == 1.0


def test_nyuv2_reader_reads_marigolds_extracted_layout(tmp_path):
    scene = tmp_path / "test" / "bathroom_0001"
    scene.mkdir(parents=True)
    millimetres = np.full((480, 640), 2500, dtype=np.uint16)
    Image.fromarray(millimetres).save(scene / "depth_0045.png")
    Image.fromarray(millimetres).save(scene / "filled_0045.png")  # the inpainted map, not evaluated
    [item] = nyuv2_items(str(tmp_path))
    assert (item.item, item.prediction_stem) == ("test/bathroom_0001/rgb_0045", "test/bathroom_0001/pred_0045")
    depth, mask = load_ground_truth(item)
    assert mask is None and depth.dtype == np.float64 and np.all(depth == 2.5)


def test_prediction_files_read_as_one_grey_map(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "rgb.png")
    Image.fromarray(grey.astype(np.uint16) * 250).save(tmp_path / "sixteen.png")
    np.save(tmp_path / "map.npy", grey[None].astype(np.float32))
    assert np.array_equal(read_depth_prediction(str(tmp_path / "rgb.png")), grey)
    assert np.array_equal(read_depth_prediction(str(tmp_path / "sixteen.png")), grey * 250.0)
    assert np.array_equal(read_depth_prediction(str(tmp_path / "map.npy")), grey)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ItemError, match="unreadable prediction broken.png"):
        read_depth_prediction(str(tmp_path / "broken.png"))


def test_a_plain_folder_keeps_its_optional_mask_and_range(tmp_path):
    gt = room(16, 16)
    mask = np.ones(gt.shape, bool)
    mask[0] = False
    np.save(tmp_path / "a.npy", gt)
    np.save(tmp_path / "a_mask.npy", mask)
    preds = tmp_path / "preds"
    preds.mkdir()
    pred = gt * 2.0
    pred[0] = 1e9  # masked out: does not count
    np.save(preds / "a.npy", pred)
    result = evaluate_depth(DepthEvalConfig(str(tmp_path), str(preds), "folder", "depth"))
    assert [i["item"] for i in result.items] == ["a"] and result.items[0]["delta1"] == 1.0
    assert result.protocol["min_depth"] == 0.0 and result.protocol["alignment"] == "least_square"
