"""Train / sample from the command line as a user runs them: reruns summarise, EMA exports sample, conditions as given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from onegen.pipelines.cli.main import main

TRAIN = ["--preset", "tiny", "--steps", "2", "--batch-size", "2", "--num-workers", "0", "--no-progress",
         "--buckets", "[[64, 64]]", "--task-weights", '[["text2image", 1.0], ["image2image", 1.0]]',
         "--shuffle-buffer", "4", "--sample-rows", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, latent_shards, checkpoints):
    out = tmp_path_factory.mktemp("cli-run") / "run"
    argv = ["train", "--shards", latent_shards, "--out", str(out), "--text-encoder", checkpoints["t5"],
            "--vae", checkpoints["vae"], *TRAIN]
    assert main(argv) == 0
    return out, argv


def test_a_rerun_of_a_finished_train_says_so_and_exits_0(run, capsys):
    out, argv = run
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "already at step 2" in printed and "step_00000002" in printed


def test_sample_from_the_exported_ema_with_the_condition_written_as_given(run, tmp_path, checkpoints):
    from onegen.training.data import fit_to_bucket

    out, _ = run
    ema = tmp_path / "ema.safetensors"
    assert main(["export", str(out), "--out", str(ema), "--ema"]) == 0
    condition = tmp_path / "cond.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(condition)
    samples = tmp_path / "samples"
    # no --text-encoder / --vae: the export's training config names them
    assert main(["sample", "--checkpoint", str(ema), "--preset", "tiny", "--task", "canny2image", "--size", "32x32",
                 "--steps", "2", "--condition", str(condition), "--out", str(samples)]) == 0
    given = np.asarray(Image.open(samples / "view_1.png"))
    fitted = fit_to_bucket(Image.open(condition), (32, 32))
    expected = ((fitted.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    assert np.array_equal(given, expected)  # the condition as given, not a VAE round trip of it
    assert (samples / "view_0_generated.png").exists()


def test_sample_from_a_pt_without_encoders_is_one_line(tmp_path, capsys):
    from onegen.model.nextdit import build_model, save_checkpoint

    save_checkpoint(build_model("tiny"), tmp_path / "m.pt", "tiny")
    assert main(["sample", "--checkpoint", str(tmp_path / "m.pt"), "--preset", "tiny", "--task", "text2image",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--text-encoder ID" in err and "--vae ID" in err
    assert not (tmp_path / "o").exists()


def test_the_demo_training_leg_reruns_honestly(raw_shards, tmp_path):
    from pathlib import Path

    from onegen.pipelines.demo.command import demo_summary
    from onegen.pipelines.demo.train_step import run_training_demo

    torch.manual_seed(0)
    first = run_training_demo(raw_shards, str(tmp_path), steps=2)
    again = run_training_demo(raw_shards, str(tmp_path), steps=2)
    assert first["trained_steps"] == 2 and first["final_loss"] is not None
    assert again["trained_steps"] == 0 and again["final_loss"] is None and again["samples"]
    lines = demo_summary(tmp_path / "dataset", tmp_path / "shards", "report.html", again, tmp_path).splitlines()
    assert "already trained" in "\n".join(lines)
    assert str(Path(tmp_path) / "training" / "samples") in lines[-1] and "noise by design" in lines[-1]


def test_the_paper_defaults_on_a_cpu_get_a_word(latent_shards, tmp_path, capsys, monkeypatch):
    import onegen.training.train as train_module

    if torch.cuda.is_available():
        pytest.skip("the note is for machines without a GPU")
    ran = []  # the 2.8B model is not built here: only the note before training is under test
    monkeypatch.setattr(train_module, "train", lambda config, evaluators=(): ran.append(config) or
                        {"step": 0, "losses": [], "checkpoint": None})
    assert main(["train", "--shards", latent_shards, "--out", str(tmp_path / "run")]) == 0
    assert "--preset tiny" in capsys.readouterr().out and ran[0].preset == "onediffusion-2.8b"


def test_train_and_sample_keep_third_party_output_in_their_logs(run, tmp_path, capfd, monkeypatch):
    import os
    import sys

    from onegen.model.text_encoder import TextEncoder

    out, _ = run
    assert (out / "jobs" / "train.log").read_text().startswith("=== onegen train ")
    original = TextEncoder.load.__func__

    def chatty_load(cls, *args, **kwargs):  # what loading real weights prints: Python-level and native lines
        print("a third-party notice", file=sys.stderr)
        os.write(2, b"native chatter from a C++ library\n")
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "load", classmethod(chatty_load))
    step = sorted((out / "checkpoints").glob("step_*"))[-1]
    sample = ["sample", "--checkpoint", str(step), "--preset", "tiny", "--task", "text2image", "--size", "32x32",
              "--steps", "1"]
    capfd.readouterr()
    assert main([*sample, "--out", str(tmp_path / "quiet")]) == 0
    printed = capfd.readouterr()
    log = tmp_path / "quiet" / "jobs" / "sample.log"
    assert "notice" not in printed.err + printed.out and "chatter" not in printed.err + printed.out
    assert printed.out.strip().splitlines()[-1].startswith(f"log: {log}")
    assert "a third-party notice" in log.read_text() and "native chatter" in log.read_text()
    assert main([*sample, "--out", str(tmp_path / "loud"), "-v"]) == 0
    printed = capfd.readouterr()
    assert "a third-party notice" in printed.err and "native chatter" in printed.err
    assert not (tmp_path / "loud" / "jobs").exists()
