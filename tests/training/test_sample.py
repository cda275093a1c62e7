"""Sample CLI: every task family writes PNGs (and cameras for camera_pose) from a tiny checkpoint."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from onegen.model.nextdit import build_model, save_checkpoint
from onegen.pipelines.cli.train_commands import add_commands


@pytest.fixture(scope="module")
def setup(tmp_path_factory, checkpoints):
    root = tmp_path_factory.mktemp("sample")
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():  # non-zero output layer so samples depend on the model
        model.final_layer.linear.weight.normal_(0, 0.02)
    save_checkpoint(model, root / "ema.pt", "tiny")
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 48, 3)) * 255).astype(np.uint8)).save(root / f"c{i}.png")
    c2w = [np.eye(4).tolist(), np.eye(4).tolist()]
    c2w[1][0][3] = 0.5
    K = [[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]] * 2
    (root / "cams.json").write_text(json.dumps({"c2w": c2w, "intrinsics": K}))
    return root


def _run(argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.run(args)


@pytest.mark.parametrize("task,conditions,generated", [
    ("text2image", 0, [0]), ("canny2image", 1, [0]), ("image2depth", 1, [1]), ("faceid", 2, [0]),
    ("multiview", 1, [2]), ("camera_pose", 2, []),
])
def test_sample_cli_writes_pngs(setup, checkpoints, tmp_path, task, conditions, generated):
    argv = ["sample", "--checkpoint", str(setup / "ema.pt"), "--preset", "tiny", "--task", task, "--prompt", "a red cat",
            "--text-encoder", checkpoints["t5"], "--vae", checkpoints["vae"], "--size", "32x32", "--steps", "2",
            "--cfg-scale", "2", "--out", str(tmp_path / "out"), "--cameras", str(setup / "cams.json")]
    for i in range(conditions):
        argv += ["--condition", str(setup / f"c{i}.png")]
    assert _run(argv) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("view_*_generated.png"))
    assert written == [f"view_{i}_generated.png" for i in generated]
    grid = Image.open(tmp_path / "out" / "grid.png")
    n_images = {"multiview": 2, "camera_pose": 2, "faceid": 3, "text2image": 1}.get(task, 2)
    assert grid.size == (32 * n_images, 32)
    if task == "camera_pose":
        cams = json.loads((tmp_path / "out" / "cameras.json").read_text())
        assert np.asarray(cams["c2w"]).shape == (2, 4, 4)


def test_sample_refuses_a_checkpoint_of_another_preset_in_one_line(setup, checkpoints, tmp_path, capsys):
    argv = ["sample", "--checkpoint", str(setup / "ema.pt"), "--preset", "small", "--task", "text2image",
            "--text-encoder", checkpoints["t5"], "--vae", checkpoints["vae"], "--out", str(tmp_path / "out")]
    from onegen.pipelines.cli.main import main

    assert main(argv) == 2  # through the command line's entry, which prints user errors as one line
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds preset 'tiny', not 'small'" in err
    assert not (tmp_path / "out").exists()


def test_sample_reads_without_pickle(setup, tmp_path):
    import pickle

    from onegen.training.sample import load_denoiser

    payload = torch.load(setup / "ema.pt", weights_only=True)
    payload["extra"] = argparse.Namespace(x=1)  # an arbitrary object: only a full unpickler could load it
    torch.save(payload, tmp_path / "unsafe.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_denoiser(str(tmp_path / "unsafe.pt"), torch.device("cpu"), "tiny")


def test_release_schedule_reads_the_checkpoints_scheduler_config(setup, checkpoints):
    from onegen.model.flow import ScheduleConfig
    from onegen.model.vae import Vae
    from onegen.training.sample import SampleRequest, generate, load_denoiser

    model, info = load_denoiser(str(setup / "ema.pt"), torch.device("cpu"), "tiny")
    assert info["scheduler"] is None  # a bare save_checkpoint file: the documented defaults apply
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    from onegen.model.text_encoder import TextEncoder

    encoder, vae = TextEncoder.load(checkpoints["t5"]), Vae.load(checkpoints["vae"])
    request = SampleRequest("text2image", "a cat", size=(32, 32), steps=2, cfg_scale=1.0)
    generate(model, request, vae, encoder, ScheduleConfig(base_shift=2.0, max_shift=2.0))
    generate(model, request, vae, encoder, None)
    # 1 view of 4 tokens (32 px: 4 x 4 latents, 2 x 2 patches), step 1 at grid 1/2: exp(mu) * 0.5 / (1 + (exp(mu) - 1) * 0.5)
    for t, mu in ((seen[1], 2.0), (seen[3], 0.5 + 0.65 / 3840 * (4 - 256))):
        k = torch.tensor(mu, dtype=torch.float64).exp()
        torch.testing.assert_close(t, (1000 * k * 0.5 / (1 + (k - 1) * 0.5)).float().reshape(1, 1))

