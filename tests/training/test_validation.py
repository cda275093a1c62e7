"""Validation while training (training/validation.py), the gradient norm log, and --keep-checkpoints.

All on the tiny preset and the precomputed 64 px shards of conftest.py (4 text2image + 4 canny2image samples).
"""

import json
import math

import pytest
import torch

from onegen.pipelines.cli.main import main
from onegen.training.data import held_out
from onegen.training.train import Trainer, train
from onegen.training.train_config import TrainConfig, config_from_values
from onegen.training.train_logs import param_digest
from onegen.training.validation import Validator, noise_seed, stratified_sigmas

BOTH = (("text2image", 1.0), ("image2image", 1.0))


def _config(shards: str, out: str, **changes) -> TrainConfig:
    base = dict(shards=shards, out=out, preset="tiny", batch_size=2, steps=4, lr=2e-3, ema_decay=0.5,
                caption_dropout=0.0, num_workers=0, shuffle_buffer=4, ckpt_every=1000, progress=False,
                task_weights=BOTH, buckets=((64, 64),), sample_rows=0, val_samples=4, val_timesteps=2)
    return config_from_values({**base, **changes})


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _val_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]


def test_stratified_sigmas_and_noise_seeds():
    assert stratified_sigmas(4) == [0.125, 0.375, 0.625, 0.875]
    assert noise_seed("a", 0) == noise_seed("a", 0) != noise_seed("a", 1) != noise_seed("b", 1)
    assert 0 <= noise_seed("a", 0) < 2**63


def test_two_evaluations_of_the_same_weights_give_identical_numbers(latent_shards):
    torch.set_num_threads(2)
    config = _config(latent_shards, "unused", val_shards=latent_shards)
    trainer = Trainer.create(config, rank=0, world=1, device=torch.device("cpu"))
    validator = Validator.create(config)
    with torch.no_grad():  # away from the zero-initialised output layer, whose v = 0 whatever the weights
        generator = torch.Generator().manual_seed(0)
        for parameter in trainer.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    before = param_digest(trainer.model)
    first = validator.evaluate(trainer.model, 0, torch.device("cpu"))
    second = validator.evaluate(trainer.model, 7, torch.device("cpu"))
    assert {**first, "step": 7} == second  # bit-identical numbers
    assert first["samples"] == {"text2image": 2, "image2image": 2} and first["weights"] == "model"
    assert len(first["per_timestep"]["text2image"]) == 2 and first["loss"] > 0
    # batch composition does not matter: one sample a batch gives the same numbers (to float rounding)
    single = Validator.create(_config(latent_shards, "unused", val_shards=latent_shards, batch_size=1))
    alone = single.evaluate(trainer.model, 0, torch.device("cpu"))
    for family, value in first["families"].items():
        assert alone["families"][family] == pytest.approx(value, rel=1e-5)
    # handed the EMA (still the initial weights), it evaluates those, and the model's own weights come back
    ema = validator.evaluate(trainer.model, 0, torch.device("cpu"), trainer.ema.shadow)
    initial = Trainer.create(config, rank=0, world=1, device=torch.device("cpu")).model
    assert ema["weights"] == "ema" and ema["loss"] != first["loss"]
    assert ema["families"] == validator.evaluate(initial, 0, torch.device("cpu"))["families"]
    assert param_digest(trainer.model) == before and trainer.model.training


def test_val_losses_reach_tensorboard_and_val_jsonl_and_leave_training_unchanged(latent_shards, tmp_path):
    torch.set_num_threads(2)
    plain = train(_config(latent_shards, str(tmp_path / "plain"), steps=3))["losses"]
    out = tmp_path / "run"
    validated = train(_config(latent_shards, str(out), steps=3, val_every=2, val_shards=latent_shards))["losses"]
    assert validated == plain  # validation draws from no training RNG and restores the weights exactly
    records = _val_log(out)
    assert [r["step"] for r in records] == [0, 2, 3]  # a fresh run's baseline, every 2 steps, the last
    assert all(set(r["families"]) == {"text2image", "image2image"} and r["weights"] == "ema" for r in records)
    scalars = _scalars(out / "tb")
    for family in ("text2image", "image2image"):
        logged = scalars[f"val/loss/{family}"]
        assert [step for step, _ in logged] == [0, 2, 3]
        assert [value for _, value in logged] == pytest.approx([r["families"][family] for r in records], rel=1e-6)
    assert [value for _, value in scalars["val/loss"]] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    norms = scalars["train/grad_norm"]
    assert [step for step, _ in norms] == [1, 2, 3]
    assert all(math.isfinite(value) and value > 0 for _, value in norms)
    assert "loss/all" in scalars  # beside the training loss


def test_val_loss_falls_when_the_model_overfits_the_validated_set(latent_shards, tmp_path):
    torch.set_num_threads(2)
    out = tmp_path / "run"
    train(_config(latent_shards, str(out), steps=15, batch_size=4, lr=5e-3, val_every=15, val_shards=latent_shards,
                  task_weights=(("text2image", 1.0),), val_ema=False))
    records = _val_log(out)
    assert [r["step"] for r in records] == [0, 15] and records[0]["weights"] == "model"
    assert records[1]["families"]["text2image"] < 0.5 * records[0]["families"]["text2image"]


def test_val_fraction_holds_out_samples_that_training_never_sees(latent_shards, tmp_path):
    from onegen.manifests.query import read_manifests

    torch.set_num_threads(2)
    table = read_manifests(latent_shards, ["key", "task"]).to_pydict()
    keys = [key for key, task in zip(table["key"], table["task"], strict=True) if task == "text2image"]
    held = {key for key in keys if held_out(key, 0.5)}
    assert held and set(keys) - held  # the fixture's text2image keys fall on both sides of 0.5
    out = tmp_path / "run"
    config = _config(latent_shards, str(out), steps=4, val_every=2, val_fraction=0.5, data_log=True, val_samples=8,
                     val_timesteps=1, task_weights=(("text2image", 1.0),))
    assert config.data.holdout == 0.5
    train(config)
    seen = {key for line in (out / "data_log" / "rank0.jsonl").read_text().splitlines()
            for key in json.loads(line)["keys"]}
    assert seen and not seen & held
    records = _val_log(out)
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[0]["samples"] == {"text2image": len(held)}


def test_a_family_whose_samples_are_all_held_out_fails_loudly(latent_shards):
    from onegen.training.data import make_loader

    # every canny2image key of the fixture hashes below 0.5: that family has nothing left to train on
    config = _config(latent_shards, "unused", val_fraction=0.5, task_weights=(("image2image", 1.0),))
    with pytest.raises(ValueError, match="held out for validation"):
        next(make_loader(config.data))


def test_grad_norm_is_the_norm_before_clipping(latent_shards):
    from onegen.training.data import make_loader

    torch.set_num_threads(2)
    config = _config(latent_shards, "unused", grad_clip=1e9)
    batch = next(make_loader(config.data))
    loose = Trainer.create(config, 0, 1, torch.device("cpu"))
    result = loose.step(batch)
    manual = torch.sqrt(sum(p.grad.pow(2).sum() for p in loose.model.parameters())).item()  # unclipped grads
    assert result.grad_norm == pytest.approx(manual, rel=1e-5) and result.grad_norm > 1e-3
    tight = Trainer.create(_config(latent_shards, "unused", grad_clip=1e-3), 0, 1, torch.device("cpu"))
    assert tight.step(batch).grad_norm == pytest.approx(result.grad_norm, rel=1e-6)  # reported before clipping


def test_keep_checkpoints_leaves_the_newest_k_and_resumes_from_the_newest(latent_shards, tmp_path):
    torch.set_num_threads(2)
    straight = train(_config(latent_shards, str(tmp_path / "straight"), steps=4, ckpt_every=1, keep_checkpoints=0))
    assert len([p for p in (tmp_path / "straight" / "checkpoints").iterdir() if p.name.startswith("step_")]) == 4
    out = tmp_path / "run"
    train(_config(latent_shards, str(out), steps=3, ckpt_every=1, keep_checkpoints=2))
    folders = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert folders == ["step_00000002", "step_00000003"]
    assert all((out / "checkpoints" / name / "COMPLETE").exists() for name in folders)
    resumed = train(_config(latent_shards, str(out), steps=4, ckpt_every=1, keep_checkpoints=2))
    assert resumed["losses"] == straight["losses"][3:]  # one step, from step 3, as the straight run took it
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_")) == [
        "step_00000003", "step_00000004"]


@pytest.mark.parametrize("empty", ["missing", "empty-folder"])
def test_val_shards_matching_nothing_is_one_user_error_line(latent_shards, tmp_path, capsys, empty):
    val = tmp_path / "val"
    if empty == "empty-folder":
        val.mkdir()
    argv = ["train", "--shards", latent_shards, "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
            "--batch-size", "2", "--num-workers", "0", "--no-progress", "--buckets", "[[64, 64]]",
            "--val-shards", str(val), "--val-every", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("onegen: error: --val-shards") and str(val) in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_val_settings_are_checked():
    from onegen.core.config_fields import SettingError

    with pytest.raises(SettingError, match="not both"):
        config_from_values({"val_shards": "x", "val_fraction": 0.1})
    with pytest.raises(SettingError, match="val_fraction"):
        config_from_values({"val_fraction": 1.0})
    assert not config_from_values({"val_every": 0, "val_shards": "x"}).validates
    assert config_from_values({"val_shards": "x"}).validates  # default val_every 500


def test_validation_and_checkpoint_keys_of_a_recipe_reach_the_trainer(tmp_path):
    import json as json_module

    from onegen.pipelines.cli.main import build_parser
    from onegen.pipelines.recipe.parse import load_recipe
    from onegen.training.train import config_from_args

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[train]\nval_shards = "val"\n'
                      "val_every = 50\nval_samples = 16\nval_timesteps = 4\nval_ema = false\nkeep_checkpoints = 5\n")
    written = tmp_path / "train.json"
    written.write_text(json_module.dumps(load_recipe(str(recipe)).train))
    config = config_from_args(build_parser().parse_args(["train", "--config", str(written), "--val-every", "25"]))
    assert config.val_shards == str(tmp_path / "val")  # relative to the recipe, like out and shards
    assert (config.val_every, config.val_samples, config.val_timesteps, config.val_ema, config.keep_checkpoints) == (
        25, 16, 4, False, 5)
    fraction = config_from_args(build_parser().parse_args(["train", "--val-fraction", "0.02"]))
    assert fraction.val_fraction == 0.02 and fraction.data.holdout == 0.02 and fraction.keep_checkpoints == 3
