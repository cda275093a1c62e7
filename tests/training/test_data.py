"""Shard loader: homogeneous batches, roles per task, caption dropout, raw vs precomputed shards."""

import dataclasses
import json

import pytest
import torch

from onegen.model.vae import Vae
from onegen.training.data import (
    DataConfig,
    batch_caption,
    batch_latents,
    choose_generated,
    family_shards,
    make_loader,
)
from onegen.training.precompute import PrecomputeConfig


def test_raw_batches_are_homogeneous_with_roles(raw_shards, checkpoints):
    config = DataConfig(raw_shards, batch_size=2, buckets=((64, 64), (32, 48)), caption_dropout=0.0)
    batches = make_loader(config)
    seen_directions, tasks = set(), set()
    vae = Vae.load(checkpoints["vae"])
    for _ in range(12):
        batch = next(batches)
        n_views = len(batch["kinds"])
        assert batch["generate"].shape == (2, n_views)
        assert batch["generate"].sum(1).tolist() == [1, 1]  # exactly one generated view per sample here
        for view in batch["views"]:
            assert view.shape == (2, 3, 64, 64) and view.min() >= -1 and view.max() <= 1
        assert all((n_views == 2) == (task == "canny2image") for task in batch["task"])
        if n_views == 2:
            seen_directions.update(tuple(row) for row in batch["generate"].tolist())
        tasks.update(batch["task"])
        assert batch_latents(batch, vae).shape == (2, 16, n_views, 8, 8)
    assert tasks == {"text2image", "canny2image"}
    assert seen_directions == {(True, False), (False, True)}  # both directions of a two-view task


def test_precomputed_batches_and_caption_dropout(latent_shards):
    config = DataConfig(latent_shards, batch_size=4, caption_dropout=0.5)
    dropped = kept = 0
    batches = make_loader(config)
    for _ in range(8):
        batch = next(batches)
        assert set(batch["kinds"]) == {"latent"}
        latents = batch_latents(batch)
        assert latents.shape[:2] == (4, 16) and latents.shape[-2:] == (8, 8)
        caption, mask = batch_caption(batch)
        assert caption.shape[:2] == mask.shape and caption.shape[2] == 32
        assert (mask.any(1) == batch["keep_caption"]).all()
        dropped += int((~batch["keep_caption"]).sum())
        kept += int(batch["keep_caption"].sum())
    assert dropped > 0 and kept > 0


def test_families_without_shards_are_dropped(raw_shards, caplog):
    shards = family_shards(DataConfig(raw_shards))
    assert set(shards) == {"text2image", "image2image"}
    assert "multiview" in caplog.text and "id" in caplog.text


def test_roles_for_multiview_and_faceid():
    import random

    rng = random.Random(0)
    kinds = ("latent", "ray") * 3
    for _ in range(20):
        generate = choose_generated(kinds, "multiview", rng, 0.5, pose_prob=0.3)
        gen_images = [generate[i] for i in (0, 2, 4)]
        gen_rays = [generate[i] for i in (1, 3, 5)]
        # either pose estimation (rays only) or novel views (some, not all, images; rays clean)
        assert (all(gen_rays) and not any(gen_images)) or (not any(gen_rays) and 0 < sum(gen_images) < 3)
    assert choose_generated(("latent",) * 3, "id", rng, 0.5, 0.2) == [True, False, False]


def _same_batch(x: dict, y: dict) -> None:
    assert x["key"] == y["key"] and x["kinds"] == y["kinds"]
    assert torch.equal(x["generate"], y["generate"]) and torch.equal(x["keep_caption"], y["keep_caption"])
    for a, b in zip(x["views"], y["views"], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(x["t5"], y["t5"]) and torch.equal(x["t5mask"], y["t5mask"])


def test_loader_is_deterministic(latent_shards):
    config = DataConfig(latent_shards, batch_size=2, task_weights=(("text2image", 1.0), ("image2image", 1.0)))
    a, b = make_loader(config), make_loader(dataclasses.replace(config))
    for _ in range(5):
        _same_batch(next(a), next(b))


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_loader_continues_exactly_and_reads_o1_samples(latent_shards, workers):
    # two families, caption dropout, a shuffle buffer and batches left pending: all of it must resume
    config = DataConfig(latent_shards, batch_size=3, caption_dropout=0.5, shuffle_buffer=3, num_workers=workers,
                        task_weights=(("text2image", 1.0), ("image2image", 1.0)))
    bound = 2 * 3 + 2 * 3 + 3  # per family the buffer, the pending rows (< batch) of two groups, one batch
    for steps in (2, 7, 24):
        run = make_loader(config)
        for _ in range(steps):
            next(run)
        state = json.loads(json.dumps(run.state_dict()))  # plain data: survives JSON
        restored = make_loader(config, state)
        first = next(restored)
        assert restored.samples_read <= bound  # O(1) in the step: no replay of the stream since step 0
        for x, y in zip([next(run) for _ in range(3)], [first, next(restored), next(restored)], strict=True):
            _same_batch(x, y)
    assert run.samples_read > 3 * bound  # while the run itself read the stream up to step 24


def test_loader_state_refuses_another_worker_count(latent_shards):
    config = DataConfig(latent_shards, batch_size=2, task_weights=(("text2image", 1.0),))
    loader = make_loader(config)
    next(loader)
    with pytest.raises(ValueError, match="worker"):
        make_loader(dataclasses.replace(config, num_workers=2), loader.state_dict())


def test_precompute_config_is_frozen():
    assert dataclasses.is_dataclass(PrecomputeConfig)


def test_npy_members_decode_like_np_load():
    import io

    import numpy as np

    from onegen.training.data import _npy

    arrays = [np.random.default_rng(0).random((16, 4, 6)).astype(np.float16), np.ones(7, dtype=bool),
              np.arange(6.0).reshape(2, 3).copy(order="F"), np.zeros((0, 3), dtype=np.int64)]
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array)
        for _ in range(2):  # the second read takes the cached header
            out = _npy(buffer.getvalue())
            expected = np.load(io.BytesIO(buffer.getvalue()))
            assert out.dtype == expected.dtype and out.shape == expected.shape and np.array_equal(out, expected)
