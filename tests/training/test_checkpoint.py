"""DCP step folders on one process: completion marker, debris, export to safetensors, RNG states."""

import dataclasses
import json
import os

import pytest
import torch

from onegen.core.errors import PathError
from onegen.model.nextdit import CheckpointMismatch, load_model_checkpoint
from onegen.training.checkpoint import (
    consolidated_weights,
    export_weights,
    latest_checkpoint,
    rng_states,
    set_rng_states,
)
from onegen.training.train import TrainConfig, train
from onegen.training.train_logs import param_digest


def _config(shards: str, out: str, **changes) -> TrainConfig:
    base = TrainConfig(shards=shards, out=out, preset="tiny", batch_size=2, steps=2, ckpt_every=1, lr=1e-3,
                       ema_decay=0.5, num_workers=0, shuffle_buffer=2, progress=False, data_log=True,
                       sample_rows=0, task_weights=(("text2image", 1.0),), buckets=((64, 64),))
    return dataclasses.replace(base, **changes)


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
