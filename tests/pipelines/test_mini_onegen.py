"""The mini One-Gen end to end, shortened (bench/mini_onegen.py runs it at full size): synthetic scenes with
exact depth and cameras through ingest (Hypersim layout + nerfstudio scenes) -> annotate (depth_gt, blur,
cameras) -> build -> precompute -> train -> sample -> eval, on the real commands and a local Ray."""

import math

import numpy as np
import pytest

from onegen.pipelines.cli.main import main
from onegen.pipelines.demo.mini_onegen import MiniConfig, metric_rows, run_mini, summary_table
from tests.conftest import TEST_RAY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
RAY = ["--num-cpus", str(TEST_RAY.num_cpus), "--object-store-mb", str(TEST_RAY.object_store_memory >> 20),
       "--no-progress"]
SHORT = MiniConfig(train_scenes=2, heldout_scenes=1, views=4, eval_frames=2, views_per_scene=3, samples_per_scene=2,
                   codec_steps=5, train_steps=4, batch_size=2, sample_steps=2)


def test_mini_onegen_end_to_end(tmp_path, ray_local):
    results = run_mini(SHORT, tmp_path / "mini", RAY, main)
    out = tmp_path / "mini"
    check = results["depth_check"]  # every Hypersim frame's depth_gt condition vs the renderer's exact depth
    assert check["rows"] == SHORT.train_scenes * SHORT.views and check["within"], check
    assert check["max_error"] <= check["max_bound"] < 5e-3
    rows = metric_rows(results)
    assert len(rows) == 9
    for metric, baseline, value, _, base_value, _ in rows:
        assert math.isfinite(value) and math.isfinite(base_value), (metric, baseline, value, base_value)
    assert results["depth"]["model"]["abs_rel"] >= 0 and 0 <= results["camera"]["model"]["acc_0.3"] <= 1
    assert math.isfinite(results["codec"]["psnr_heldout"]) and results["final_loss"] is not None
    for stage in ("render", "codec", "ingest", "annotate", "build", "precompute", "train", "sample", "eval"):
        assert results["times"][stage] > 0, stage
    assert (out / "latents" / "index.json").exists() and list((out / "run" / "checkpoints").glob("step_*"))
    frames = SHORT.heldout_scenes * SHORT.eval_frames
    assert len(list((out / "depth-pred").rglob("view_1_generated.png"))) == frames
    assert len(list((out / "deblur-pred").rglob("*.png"))) == frames
    cameras = (out / "camera-pred" / "heldout-0" / "cameras.json").read_text()
    assert np.asarray(__import__("json").loads(cameras)["c2w"]).shape == (SHORT.views_per_scene, 4, 4)
    assert "depth abs_rel" in summary_table(results)
