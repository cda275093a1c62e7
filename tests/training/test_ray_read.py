"""Precomputed shards read as columns by `ray.data.read_webdataset`, whatever each sample's number of views.

Before packing, a shard whose samples had different view counts (faceid 2-5, multiview 2-12) held `latN.npy`
members that some samples lacked: Ray casts a column to its tensor type when the block's first value is an
array, and the missing values (NaN) of later samples made that fail ("Tried to cast column lat2.npy to the
TensorArray tensor extension type"). Precompute now writes every sample with the same member names
(views.npy + kinds.txt), so the samples below (4 views before 2) read.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

from onegen.manifests.query import select_shards
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.training.precompute import PrecomputeConfig, run_precompute


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 20 * i, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mixed_views(tmp_path_factory, checkpoints) -> str:
    """One raw faceid shard with 4-, 2- and 3-view samples (more views first), precomputed."""
    raw, out = tmp_path_factory.mktemp("ray_raw"), tmp_path_factory.mktemp("ray_latents")
    writer = ShardWriter(str(raw), "onegen", "faceid", samples_per_shard=10, max_shard_bytes=1 << 30)
    for i, views in enumerate((4, 2, 3, 2)):
        prompt = f"[[faceid]] [[img0]] person {i}"
        meta = {"task": "faceid", "n_views": views, "prompt": prompt}
        members = [(f"img{v}.png", _png(i + v)) for v in range(views)]
        members += [("txt", prompt.encode()), ("json", json.dumps(meta).encode())]
        writer.add(Sample(key=f"p{i}-faceid", task="faceid", prompt=prompt, source="test", members=members,
                          n_views=views, source_keys=[f"k{i}"], annotators=[], width=64, height=64, ordinal=i))
    writer.finish()
    run_precompute(PrecomputeConfig(str(raw), str(out), checkpoints["t5"], checkpoints["vae"], ((64, 64),)))
    return str(out)


@pytest.mark.timeout(300)
def test_read_webdataset_reads_precomputed_samples_of_any_view_count(mixed_views, ray_local):
    import ray

    rows = ray.data.read_webdataset(select_shards(mixed_views)).take_all()
    by_key = {row["__key__"]: row for row in rows}
    assert sorted(by_key) == [f"p{i}-faceid" for i in range(4)]
    for i, views in enumerate((4, 2, 3, 2)):
        row = by_key[f"p{i}-faceid"]
        assert np.asarray(row["views.npy"]).shape == (views, 16, 8, 8)
        assert row["kinds.txt"].split() == ["latent"] * views
        assert np.asarray(row["t5.npy"]).shape[1] == 32
