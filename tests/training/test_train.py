"""Trainer: overfitting through the real loader, bit-exact resume, per-task logging, CLI config."""

import dataclasses
import json

import numpy as np
import torch

from onegen.training.train import TrainConfig, add_train_command, config_from_args, train


def _config(shards: str, out: str, **changes) -> TrainConfig:
    base = TrainConfig(shards=shards, out=out, preset="tiny", batch_size=8, steps=80, lr=2e-3, ema_decay=0.9,
                       caption_dropout=0.0, num_workers=0, shuffle_buffer=8, ckpt_every=1000, progress=False,
                       task_weights=(("text2image", 1.0),), buckets=((64, 64),))
    return dataclasses.replace(base, **changes)


def test_tiny_model_overfits_eight_samples(latent_shards, tmp_path):
    torch.set_num_threads(2)
    result = train(_config(latent_shards, str(tmp_path / "run")))
    losses = np.array(result["losses"])
    assert len(losses) == 80
    assert losses[:5].mean() > 10 * losses[-10:].mean()
    ema = torch.load(tmp_path / "run" / "ema_00000080.pt", weights_only=True)
    assert ema["preset"] == "tiny" and (tmp_path / "run" / "tb").is_dir()


def test_resume_reproduces_next_losses_bit_for_bit(latent_shards, tmp_path):
    # two tasks with caption dropout: the loader's mixing, roles and dropout RNG must resume too
    changes = dict(steps=6, ckpt_every=3, batch_size=2, caption_dropout=0.5,
                   task_weights=(("text2image", 1.0), ("image2image", 1.0)))
    straight = train(_config(latent_shards, str(tmp_path / "a"), **changes))["losses"]
    first = train(_config(latent_shards, str(tmp_path / "b"), **{**changes, "steps": 3}))["losses"]
    resumed = train(_config(latent_shards, str(tmp_path / "b"), **changes))["losses"]
    assert first == straight[:3]
    assert resumed == straight[3:]  # exact float equality


def test_cli_flags_override_config_file(tmp_path):
    import argparse

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "tiny", "steps": 7, "buckets": [[64, 96]], "lr": 0.1}))
    parser = argparse.ArgumentParser()
    add_train_command(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(path), "--lr", "0.001", "--compile", "true",
                              "--task-weights", '[["text2image", 2.0]]'])
    config = config_from_args(args)
    assert (config.preset, config.steps, config.lr, config.compile) == ("tiny", 7, 0.001, True)
    assert config.buckets == ((64, 96),) and config.task_weights == (("text2image", 2.0),)


def test_fsdp_path_imports():
    from torch.distributed.checkpoint.state_dict import get_state_dict  # noqa: F401
    from torch.distributed.fsdp import fully_shard  # noqa: F401
