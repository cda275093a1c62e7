"""`onegen train --eval-every` (evaluation/in_training.py): `eval depth` and `eval camera` on small held-out
sets while training, through the real CLI, logged to TensorBoard and val.jsonl; the numbers are those of the
weights validation uses (the EMA), recomputed here from the step's checkpoint; bad items are counted, not
averaged."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from onegen.evaluation.in_training import camera_now, depth_now
from onegen.pipelines.cli.main import main
from onegen.pipelines.demo.synthetic_scene import SceneConfig, make_scene, render
from onegen.training.train_config import config_from_values
from tests.training.test_validation import BOTH, _scalars

SIDE = 64


def _eval_sets(root) -> tuple[str, str]:
    """depth/: two photos with their metric depth, and one depth map without a photo (skipped); camera/: one
    scene of three views with its OpenCV cameras."""
    scene = make_scene(SceneConfig(seed=5, n_views=3, width=SIDE, height=SIDE))
    images, depth, _ = render(scene, SIDE, SIDE)
    depth_dir, camera_dir = root / "depth", root / "camera" / "orbit"
    depth_dir.mkdir(parents=True)
    camera_dir.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(images[i]).save(depth_dir / f"view{i}.png")
        np.save(depth_dir / f"view{i}.npy", np.where(depth[i] > 0, depth[i], 0).astype(np.float32))
    np.save(depth_dir / "no_photo.npy", depth[2].astype(np.float32))
    for i in range(3):
        Image.fromarray(images[i]).save(camera_dir / f"view_{i}.png")
    (camera_dir / "cameras.json").write_text(json.dumps({"c2w": scene.c2w.tolist()}))
    return str(depth_dir), str(root / "camera")


def test_eval_every_runs_the_protocols_on_the_ema_and_logs_them(latent_shards, checkpoints, tmp_path):
    torch.set_num_threads(2)
    depth_set, camera_set = _eval_sets(tmp_path)
    values = dict(shards=latent_shards, preset="tiny", batch_size=2, steps=2, lr=2e-3, ema_decay=0.5,
                  caption_dropout=0.0, num_workers=0, shuffle_buffer=4, ckpt_every=2, progress=False,
                  task_weights=BOTH, buckets=((64, 64),), sample_rows=0, vae=checkpoints["vae"],
                  text_encoder=checkpoints["t5"])
    (tmp_path / "train.json").write_text(json.dumps(values))
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "train.json"), "--out", str(out), "--eval-every", "2",
                 "--eval-depth", depth_set, "--eval-camera", camera_set, "--eval-sample-steps", "2"]) == 0
    [logged] = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert logged["step"] == 2
    found = logged["eval"]
    assert found["depth/not_scored"] == 1.0 and found["camera/not_scored"] == 0.0  # the depth map without its photo
    assert np.isfinite(found["depth/abs_rel"]) and 0.0 <= found["depth/delta1"] <= 1.0
    assert found["camera/acc_0.1"] in (0.0, 1 / 3, 2 / 3, 1.0) and found["camera/acc_0.3"] >= found["camera/acc_0.1"]
    scalars = _scalars(out / "tb")
    assert scalars["eval/depth/abs_rel"] == [(2, pytest.approx(found["depth/abs_rel"], rel=1e-6))]
    # the same numbers from the step's checkpoint (its EMA), evaluated here: what was logged is that model's
    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae
    from onegen.training.sample import load_denoiser

    model, _ = load_denoiser(str(out), torch.device("cpu"), "tiny")
    config = config_from_values({**values, "out": str(out), "eval_every": 2, "eval_depth": depth_set,
                                 "eval_camera": camera_set, "eval_sample_steps": 2})
    vae, text = Vae.load(checkpoints["vae"], torch.device("cpu")), TextEncoder.load(checkpoints["t5"], torch.device("cpu"))
    again = {**depth_now(model, vae, text, config), **camera_now(model, vae, text, config)}
    assert again == pytest.approx(found)


def test_eval_every_without_a_set_or_encoders_is_refused_with_a_line(latent_shards, tmp_path, capsys):
    base = ["train", "--shards", latent_shards, "--out", str(tmp_path / "r"), "--preset", "tiny", "--steps", "1"]
    assert main([*base, "--eval-every", "1"]) == 2
    assert "--eval-every needs --eval-depth" in capsys.readouterr().err
    assert main([*base, "--eval-every", "1", "--eval-depth", str(tmp_path)]) == 2
    assert "needs --vae and --text-encoder" in capsys.readouterr().err
