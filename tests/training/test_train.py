"""Trainer: overfitting through the real loader, bit-exact resume, per-task logging, CLI config."""

import dataclasses
import json

import numpy as np
import torch

from onegen.pipelines.cli.train_commands import add_train_command
from onegen.training.train import TrainConfig, config_from_args, train
from onegen.training.train_config import config_from_values


def _config(shards: str, out: str, **changes) -> TrainConfig:
    """Loader fields by their bare names, as a train.json may give them (config_from_values nests them)."""
    base = dict(shards=shards, out=out, preset="tiny", batch_size=8, steps=80, lr=2e-3,
                ema_decay=0.9, caption_dropout=0.0, num_workers=0, shuffle_buffer=8,
                ckpt_every=1000, progress=False, task_weights=(("text2image", 1.0),),
                buckets=((64, 64),))
    return config_from_values({**base, **changes})


def test_tiny_model_overfits_eight_samples(latent_shards, tmp_path):
    torch.set_num_threads(2)
    result = train(_config(latent_shards, str(tmp_path / "run")))
    losses = np.array(result["losses"])
    assert len(losses) == 80
    assert losses[:5].mean() > 10 * losses[-10:].mean()
    folder = tmp_path / "run" / "checkpoints" / "step_00000080"
    assert (folder / "COMPLETE").exists() and (tmp_path / "run" / "tb").is_dir()


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
    args = parser.parse_args(["train", "--config", str(path), "--lr", "0.001", "--compile",
                              "--task-weights", '[["text2image", 2.0]]'])
    config = config_from_args(args)
    assert (config.preset, config.steps, config.lr, config.compile) == ("tiny", 7, 0.001, True)
    assert config.data.buckets == ((64, 96),) and config.data.task_weights == (("text2image", 2.0),)


def test_fsdp_path_imports():
    from torch.distributed.checkpoint.state_dict import get_state_dict  # noqa: F401
    from torch.distributed.fsdp import fully_shard  # noqa: F401


def _tensorboard_images(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={IMAGES: 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}


def test_checkpoints_log_a_sample_grid_per_family(latent_shards, checkpoints, tmp_path):
    import io

    from PIL import Image

    torch.set_num_threads(2)
    config = _config(latent_shards, str(tmp_path / "run"), steps=4, ckpt_every=2, batch_size=2,
                     vae=checkpoints["vae"], task_weights=(("text2image", 1.0), ("image2image", 1.0)))
    train(config)
    images = _tensorboard_images(tmp_path / "run" / "tb")
    assert set(images) == {"samples/text2image", "samples/image2image"}
    views = {"samples/text2image": 1, "samples/image2image": 2}  # canny2image: image + condition
    for tag, logged in images.items():
        assert {image.step for image in logged} <= {2, 4}
        for image in logged:
            assert image.width == 64 * views[tag]  # views side by side, latents decoded to 64 px
            assert image.height % 64 == 0 and 64 <= image.height <= 2 * 64  # one row per sample (batch of 2)
            pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
            assert pixels.shape[:2] == (image.height, image.width) and pixels.std() > 0


def test_sample_grid_shows_views_side_by_side_with_ray_false_colour():
    from onegen.core.camera_geometry import RAY_SCALE
    from onegen.training.train_logs import sample_grid

    pixels = torch.zeros(2, 3, 64, 64)  # (n, 3, H, W) in [-1, 1]: mid grey
    pixels[1, 0] = 1.0  # second sample: red channel full
    ray = torch.zeros(2, 16, 8, 8)  # (n, 16, h, w)
    ray[:, 0] = RAY_SCALE  # direction +x -> RGB (255, 128, 128) after [-1, 1] -> [0, 255]
    grid = sample_grid({"views": [pixels, ray], "kinds": ("pixels", "ray")})
    assert grid.shape == (2 * 64, 2 * 64, 3) and grid.dtype == np.uint8
    assert (grid[:64, :64] == 128).all() and (grid[64:, :64, 0] == 255).all()
    ray_rgb = grid[:, 64:].astype(int)  # preview_render truncates: allow one level of rounding
    assert (ray_rgb[..., 0] >= 254).all() and (np.abs(ray_rgb[..., 1:] - 127.5) <= 1).all()


def test_sample_grid_decodes_latent_views_with_the_vae(checkpoints):
    from onegen.model.vae import Vae
    from onegen.training.train_logs import sample_grid

    vae = Vae.load(checkpoints["vae"])
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))  # (n, 16, h, w)
    grid = sample_grid({"views": [latents, latents], "kinds": ("latent", "latent")}, vae)
    decoded = ((vae.decode(latents)[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()  # (64, 64, 3)
    assert grid.shape == (64, 128, 3)
    np.testing.assert_allclose(grid[:, :64], decoded, atol=1)
    np.testing.assert_array_equal(grid[:, :64], grid[:, 64:])


def test_train_step_noises_every_view_unless_conditions_are_held_clean(latent_shards):
    from onegen.model.nextdit import build_model
    from onegen.training.data import make_loader
    from onegen.training.train import Ema, Trainer

    config = _config(latent_shards, "unused", batch_size=2, task_weights=(("image2image", 1.0),))
    batch = next(make_loader(config.data))  # canny2image: [image, condition], one generated per row
    for prob, expect_clean in ((0.0, False), (1.0, True)):
        model, seen = build_model("tiny"), []
        model.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[1].clone()))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        changed = dataclasses.replace(config, clean_condition_prob=prob)
        trainer = Trainer(model, optimizer, Ema(model, changed.ema_decay), changed, torch.device("cpu"),
                          torch.Generator().manual_seed(0))
        result = trainer.step(batch)
        loss, per_family = result.loss, result.per_family
        t, generate = seen[0], batch["generate"]  # (B, V) timesteps the model saw
        assert (t[generate] > 0).all()
        assert torch.equal(t[~generate], torch.zeros(2)) if expect_clean else (t[~generate] > 0).all()
        assert set(per_family) == {"image2image"} and per_family["image2image"] > 0 and loss > 0


def test_trainer_step_moves_the_ema_toward_the_parameters_by_its_decay(latent_shards):
    from onegen.training.data import make_loader
    from onegen.training.train import Trainer

    config = _config(latent_shards, "unused", batch_size=2, ema_decay=0.75)
    trainer = Trainer.create(config, rank=0, world=1, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.ema.shadow.items()}
    trainer.step(next(make_loader(config.data)))
    params = dict(trainer.model.named_parameters())
    for name, old in before.items():  # ema' = ema + (1 - decay) * (param - ema)
        torch.testing.assert_close(trainer.ema.shadow[name], old + 0.25 * (params[name].detach() - old))
    assert any(not torch.equal(trainer.ema.shadow[k], before[k]) for k in before)
