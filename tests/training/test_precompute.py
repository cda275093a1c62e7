"""Precompute keeps keys, shard names and manifests; latents / T5 states decode back; reruns skip."""

import io
import tarfile

import numpy as np
import torch
from PIL import Image

from onegen.manifests import files
from onegen.manifests.query import read_manifests
from onegen.model.text_encoder import TextEncoder
from onegen.model.vae import Vae
from onegen.training.precompute import PrecomputeConfig, run_precompute


def _members(path: str) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_precompute_keeps_keys_and_updates_manifests(raw_shards, latent_shards, checkpoints):
    before, after = read_manifests(raw_shards).to_pylist(), read_manifests(latent_shards).to_pylist()
    assert sorted((r["key"], r["shard"]) for r in before) == sorted((r["key"], r["shard"]) for r in after)
    rows = {r["key"]: r for r in after}
    row = rows["s1-canny2image"]
    assert row["members"] == ["views.npy", "kinds.txt", "txt", "json", "t5.npy", "t5mask.npy"]
    members = _members(files.join(latent_shards, row["shard"]))
    assert [len(members[f"s1-canny2image.{m}"]) for m in row["members"]] == row["member_bytes"]
    names = {tuple(r["members"]) for r in after}  # one- and two-view samples: the same member names
    assert names == {("views.npy", "kinds.txt", "txt", "json", "t5.npy", "t5mask.npy")}

    views = np.load(io.BytesIO(members["s1-canny2image.views.npy"]))
    assert views.dtype == np.float16 and views.shape == (2, 16, 8, 8)
    assert members["s1-canny2image.kinds.txt"] == b"latent latent"
    raw = _members(files.join(raw_shards, row["shard"]))
    vae = Vae.load(checkpoints["vae"])
    for view, member in enumerate(("img0.png", "img1.png")):
        image = np.asarray(Image.open(io.BytesIO(raw[f"s1-canny2image.{member}"])), dtype=np.float32)
        expected = vae.encode(torch.from_numpy(image).permute(2, 0, 1)[None] / 127.5 - 1)[0].numpy()
        np.testing.assert_allclose(views[view].astype(np.float32), expected, atol=2e-3, rtol=2e-3)

    states = np.load(io.BytesIO(members["s1-canny2image.t5.npy"]))
    mask = np.load(io.BytesIO(members["s1-canny2image.t5mask.npy"]))
    want, want_mask = TextEncoder.load(checkpoints["t5"]).encode([row["prompt"]])
    assert mask.all() and mask.shape[0] == int(want_mask.sum()) == states.shape[0]
    np.testing.assert_allclose(states.astype(np.float32), want[0].numpy(), atol=1e-2, rtol=1e-2)

    index = files.read_json(files.join(latent_shards, "index.json"))
    assert sorted(s["url"] for s in index["shardlist"]) == sorted({r["shard"] for r in before})
    assert files.read_json(files.join(latent_shards, "build.json"))["precomputed"]["vae"] == checkpoints["vae"]


def test_precompute_rerun_skips_done_shards(raw_shards, latent_shards, checkpoints):
    config = PrecomputeConfig(raw_shards, latent_shards, checkpoints["t5"], checkpoints["vae"], ((64, 64),))
    assert run_precompute(config) == {"written": 0, "skipped": 2}
