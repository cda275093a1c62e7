"""TrainConfig nests DataConfig: every loader field is a `--data.X` flag and a `[train.data]` / `data.X` recipe
key; reverse_prob and pose_prob reach the loader from both; older flat train.json files still load."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest

from onegen.core.config_fields import SettingError
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.pipelines.cli.main import build_parser
from onegen.pipelines.recipe.parse import RecipeError, load_recipe
from onegen.training.data import make_loader
from onegen.training.train_config import DataConfig, TrainConfig, config_from_args, config_from_values
from tests.training.conftest import _image, _png


def _train(*flags: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *flags]))


def _via_recipe(tmp_path, train_table: str) -> TrainConfig:
    """[train] of a recipe -> the train.json `onegen run` writes -> `onegen train --config` it."""
    path = tmp_path / "recipe.toml"
    path.write_text(f'root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[train]\n{train_table}\n')
    written = tmp_path / "train.json"
    written.write_text(json.dumps(load_recipe(str(path)).train))
    return _train("--config", str(written))


def _multiview_shards(out: str) -> str:
    """Two-view multiview samples: [img0, ray0, img1, ray1], 64 px views, (16, 8, 8) float16 rays."""
    writer = ShardWriter(out, "onegen", "multiview", samples_per_shard=4, max_shard_bytes=1 << 30)
    for i in range(4):
        buffer = io.BytesIO()
        np.save(buffer, np.full((16, 8, 8), i, dtype=np.float16))
        ray = buffer.getvalue()
        meta = {"task": "multiview", "n_views": 2, "roles": ["image", "image"], "prompt": "[[multiview]] x",
                "source_keys": [f"k{i}"]}
        members = [("img0.png", _png(_image(i))), ("ray0.npy", ray), ("img1.png", _png(_image(i + 1))),
                   ("ray1.npy", ray), ("txt", b"[[multiview]] x"), ("json", json.dumps(meta).encode())]
        writer.add(Sample(key=f"m{i}-multiview", task="multiview", prompt="[[multiview]] x", source="test",
                          members=members, n_views=2, source_keys=[f"k{i}"], annotators=[], width=64, height=64,
                          ordinal=i))
    writer.finish()
    return out


def _generated(config: DataConfig, batches: int = 3) -> set[tuple[bool, ...]]:
    loader = make_loader(config)
    return {tuple(row) for _ in range(batches) for row in next(loader)["generate"].tolist()}


def test_reverse_prob_from_the_cli_and_a_recipe_reaches_the_loader(raw_shards, tmp_path):
    common = ["--shards", raw_shards, "--batch-size", "2", "--buckets", "[[64, 64]]", "--caption-dropout", "0",
              "--num-workers", "0", "--task-weights", '[["image2image", 1]]']
    reverse, forward = _train(*common, "--data.reverse-prob", "1"), _train(*common, "--data.reverse-prob", "0")
    assert reverse.data.reverse_prob == 1.0 and forward.data.reverse_prob == 0.0
    assert _generated(reverse.data) == {(False, True)}  # canny2image: the condition from the image, always
    assert _generated(forward.data) == {(True, False)}
    recipe = _via_recipe(tmp_path, "weights = { image2image = 1 }\nbatch_size = 2\n[train.data]\nreverse_prob = 1.0\n"
                                   "buckets = [[64, 64]]\ncaption_dropout = 0.0\nnum_workers = 0")
    assert recipe.data.reverse_prob == 1.0 and recipe.data.shards.endswith("s")
    assert _generated(replace(recipe.data, shards=raw_shards)) == {(False, True)}


def test_pose_prob_from_the_cli_and_a_recipe_reaches_the_loader(tmp_path):
    shards = _multiview_shards(str(tmp_path / "mv"))
    common = ["--shards", shards, "--batch-size", "2", "--buckets", "[[64, 64]]", "--num-workers", "0",
              "--task-weights", '[["multiview", 1]]']
    poses = _train(*common, "--data.pose-prob", "1")
    assert _generated(poses.data) == {(False, True, False, True)}  # every ray from the clean images
    views = _generated(_train(*common, "--data.pose-prob", "0").data)
    assert views <= {(True, False, False, False), (False, False, True, False)}  # one image from the other
    recipe = _via_recipe(tmp_path, "data.pose_prob = 1.0\ndata.buckets = [[64, 64]]\ndata.num_workers = 0\n"
                                   "weights = { multiview = 1 }\nbatch_size = 2")
    assert recipe.data.pose_prob == 1.0
    assert _generated(replace(recipe.data, shards=shards)) == {(False, True, False, True)}


def test_train_help_explains_every_loader_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--data.reverse-prob DATA.REVERSE_PROB two-view tasks: probability" in text
    assert "--data.pose-prob DATA.POSE_PROB multiview: probability" in text
    assert "--batch-size BATCH_SIZE, --data.batch-size BATCH_SIZE" in text  # the old flag still works
    assert "--num-workers NUM_WORKERS, --data.num-workers NUM_WORKERS data loader worker processes (default: 2)" in text


def test_older_flat_config_files_load_and_the_seed_is_the_runs(tmp_path):
    flat = config_from_values({"shards": "s", "batch_size": 3, "task_weights": [["id", 1.0]], "seed": 5, "steps": 2})
    nested = config_from_values({"data": {"shards": "s", "batch_size": 3, "task_weights": [["id", 1]]}, "seed": 5,
                                 "steps": 2})
    assert flat == nested and flat.data.batch_size == 3 and flat.data.task_weights == (("id", 1.0),)
    assert flat.data.seed == 5 and _train("--seed", "7").data.seed == 7  # the data order follows --seed
    assert TrainConfig().data.num_workers == 2 and DataConfig().num_workers == 0  # each keeps its own default
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"batch_size": 3, "data": {"pose_prob": 0.4}}))
    assert _train("--config", str(path), "--data.batch-size", "5").data == DataConfig(
        batch_size=5, pose_prob=0.4, num_workers=2)  # flags override the file


@pytest.mark.parametrize("values, message", [
    ({"batch_size": 2, "data": {"batch_size": 3}}, "data.batch_size and batch_size are the same setting"),
    ({"data": {"reverse_prob": 1.5}}, "reverse_prob must be in [0, 1], got 1.5"),
    ({"data": {"seed": 1}}, "unknown field(s) ['data.seed']"),
    ({"task_weights": [["video", 1.0]]}, "unknown task family ['video']"),
])
def test_bad_train_values_are_one_line_errors(values, message):
    with pytest.raises(SettingError) as error:
        config_from_values(values, "train")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_bad_train_table_is_a_recipe_error(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[train.data]\npose_prob = "often"\n')
    with pytest.raises(RecipeError, match=r"recipe: \[train\] data.pose_prob = 'often': expected float"):
        load_recipe(str(path))
