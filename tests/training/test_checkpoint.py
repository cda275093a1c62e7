"""DCP step folders on one process: completion marker, debris, export to safetensors, RNG states, the
Checkpointer's named Stateful parts and keeping the newest K folders."""

import json
import os

import pytest
import torch

from onegen.core.errors import PathError
from onegen.model.nextdit import CheckpointMismatch, load_model_checkpoint
from onegen.training.checkpoint import (
    Checkpointer,
    ModelState,
    OptimizerState,
    RngState,
    consolidated_weights,
    export_weights,
    latest_checkpoint,
    rng_states,
    set_rng_states,
    training_meta,
)
from onegen.training.train import Ema, TrainConfig, train
from onegen.training.train_config import config_from_values
from onegen.training.train_logs import param_digest


def _config(shards: str, out: str, **changes) -> TrainConfig:
    base = dict(shards=shards, out=out, preset="tiny", batch_size=2, steps=2, ckpt_every=1,
                lr=1e-3, ema_decay=0.5, num_workers=0, shuffle_buffer=2, progress=False,
                data_log=True, sample_rows=0, task_weights=(("text2image", 1.0),),
                buckets=((64, 64),))
    return config_from_values({**base, **changes})


@pytest.fixture(scope="module")
def run(latent_shards, tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(_config(latent_shards, str(out)))
    return out


def test_only_complete_folders_count_and_debris_is_replaced(run, latent_shards):
    root = run / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest.txt", "step_00000001", "step_00000002"]
    assert latest_checkpoint(str(run)) == str(root / "step_00000002")
    debris = root / "step_00000003"  # a save killed before its marker
    (debris / "state").mkdir(parents=True)
    (debris / "state" / "junk").write_text("x")
    assert latest_checkpoint(str(run)) == str(root / "step_00000002")
    with pytest.raises(PathError, match="COMPLETE"):  # a user error: one line, exit 2
        export_weights(str(debris), str(run / "x.safetensors"))
    train(_config(latent_shards, str(run), steps=3))  # resumes from step 2, saves step 3 again
    assert sorted(os.listdir(debris)) == ["COMPLETE", "meta.json", "rank_00000.pt", "state"]
    assert "junk" not in os.listdir(debris / "state")


def test_export_holds_the_model_or_the_ema_and_refuses_another_preset(run, tmp_path):
    folder = run / "checkpoints" / "step_00000002"
    records = [json.loads(line) for line in (run / "data_log" / "rank0.jsonl").read_text().splitlines()]
    step2 = next(r for r in records if r["step"] == 2)
    for ema, digest in ((False, step2["params"]), (True, step2["ema"])):
        path = export_weights(str(folder), str(tmp_path / f"w{ema}.safetensors"), ema=ema)
        model = load_model_checkpoint(path, "tiny")
        assert param_digest(model) == digest  # bit for bit what the trainer held at step 2
    assert step2["params"] != step2["ema"]
    with pytest.raises(CheckpointMismatch, match="holds preset 'tiny', not 'small'"):
        load_model_checkpoint(tmp_path / "wTrue.safetensors", "small")
    weights, meta = consolidated_weights(str(folder), ema=True)
    assert meta["step"] == 2 and meta["scheduler"]["max_shift"] == 1.15 and len(weights) > 10


def test_rng_states_round_trip_through_weights_only_load(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(5)
    torch.save(rng_states(generator), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True), generator)
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    assert again == expected


def test_a_run_of_the_older_single_file_format_is_refused_not_restarted(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000100.pt").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="older onegen"):
        latest_checkpoint(str(tmp_path))


class Tally:
    """A part the trainer does not save today: a running tensor total (sharded state, like the model's)."""

    def __init__(self, value: float = 0.0):
        self.total = torch.full((3,), value)

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.total.copy_(state["total"])


class SeenKeys:
    """A per-rank part of plain data: the keys this rank has seen."""

    def __init__(self, keys: list[str] | None = None):
        self.keys = list(keys or [])

    def state_dict(self) -> dict:
        return {"keys": self.keys}

    def load_state_dict(self, state: dict) -> None:
        self.keys = list(state["keys"])


def _trained_parts(seed: int, tally: float, keys: list[str]):
    """(parts, rank parts, model) of a tiny model after one AdamW step from seed `seed`, plus the two new
    parts: the mappings a trainer would hand over with one more entry in each."""
    from onegen.model.nextdit import build_model

    torch.manual_seed(seed)
    model = build_model("tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    ema = Ema(model, 0.5)
    parts = {"model": ModelState(model), "optimizer": OptimizerState(model, optimizer), "ema": ema,
             "tally": Tally(tally)}
    rank_parts = {"rng": RngState(torch.Generator().manual_seed(seed)), "seen": SeenKeys(keys)}
    return parts, rank_parts, model


def test_a_part_added_to_the_mappings_is_saved_and_restored_without_touching_the_checkpointer(tmp_path):
    meta = training_meta(TrainConfig(preset="tiny"))
    parts, rank_parts, model = _trained_parts(1, 7.0, ["a", "b"])
    folder = Checkpointer(str(tmp_path), parts, rank_parts, meta).save(5)
    assert sorted(os.listdir(folder)) == ["COMPLETE", "meta.json", "rank_00000.pt", "state"]
    assert set(torch.load(os.path.join(folder, "rank_00000.pt"), weights_only=True)) == {"rng", "seen"}

    fresh, fresh_rank, fresh_model = _trained_parts(2, 0.0, [])  # other weights, other values
    assert any(not torch.equal(fresh_model.state_dict()[k], t) for k, t in model.state_dict().items())
    assert Checkpointer(str(tmp_path), fresh, fresh_rank, meta).resume() == (5, folder)
    assert torch.equal(fresh["tally"].total, torch.full((3,), 7.0))
    assert fresh_rank["seen"].keys == ["a", "b"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], tensor), name
    saved_adam = parts["optimizer"].optimizer.state_dict()["state"]
    restored_adam = fresh["optimizer"].optimizer.state_dict()["state"]
    assert all(torch.equal(restored_adam[i]["exp_avg"], saved_adam[i]["exp_avg"]) for i in saved_adam)
    assert torch.equal(torch.rand(4, generator=fresh_rank["rng"].loss_generator),
                       torch.rand(4, generator=torch.Generator().manual_seed(1)))


def test_a_rank_part_missing_from_the_checkpoint_is_named(tmp_path):
    parts, rank_parts, _ = _trained_parts(1, 1.0, [])
    meta = training_meta(TrainConfig(preset="tiny"))
    folder = Checkpointer(str(tmp_path), parts, {"rng": rank_parts["rng"]}, meta).save(1)
    with pytest.raises(KeyError, match=r"no per-rank state for \['seen'\]"):
        Checkpointer(str(tmp_path), parts, rank_parts, meta).restore(folder)


def test_keep_holds_the_newest_complete_folders_and_none_keeps_all(tmp_path):
    tally = Tally(1.0)
    for keep, out in ((2, tmp_path / "two"), (None, tmp_path / "all")):
        checkpointer = Checkpointer(str(out), {"tally": tally}, {}, {"preset": "tiny"}, keep=keep)
        for step in range(1, 5):
            tally.total.fill_(step)
            checkpointer.save(step)
    names = ["step_00000001", "step_00000002", "step_00000003", "step_00000004"]
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["latest.txt"] + names[2:]
    assert sorted(os.listdir(tmp_path / "all" / "checkpoints")) == ["latest.txt"] + names
    restored = Tally()
    assert Checkpointer(str(tmp_path / "two"), {"tally": restored}, {}, {}).resume()[0] == 4
    assert torch.equal(restored.total, torch.full((3,), 4.0))
    with pytest.raises(ValueError, match="at least 1"):
        Checkpointer(str(tmp_path / "zero"), {"tally": tally}, {}, {}, keep=0)
