"""The dataset card: HF YAML configs per task that `datasets.load_dataset(SHARDS, TASK)` reads, offline."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
from PIL import Image

from onegen.manifests import files
from onegen.manifests.dataset_card import caption_note, write_dataset_card
from onegen.manifests.shard_writer import Sample, ShardWriter


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((16, 16, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _shards(tmp_path) -> str:
    """depth2image (5 samples, 2 shards of one unit) and text2image (3, one skipped for no caption) + a root."""
    out, root = tmp_path / "shards", tmp_path / "dataset"
    for task, n in (("depth2image", 5), ("text2image", 3)):
        writer = ShardWriter(str(out), "onegen", task, 3, 1 << 30, stem=f"onegen-{task}-00000")
        for i in range(n):
            views = [("img0.png", _png(i))] + ([("img1.png", _png(100 + i))] if task == "depth2image" else [])
            meta = {"task": task, "roles": ["image", "condition"][: len(views)]}
            writer.add(Sample(key=f"photos-k{i}-{task}", task=task, prompt=f"[[{task}]] photo {i}",
                              source="photos" if i % 2 else "web", n_views=len(views), source_keys=[f"k{i}"],
                              annotators=["depth@1"] if task == "depth2image" else [], width=16, height=16,
                              ordinal=i, members=[*views, ("txt", f"[[{task}]] photo {i}".encode()),
                                                  ("json", json.dumps(meta).encode())]))
        if task == "text2image":
            writer.skip("photos-k9", "no_caption", 9)
        writer.finish()
    files.commit_table(str(root / "annotations" / "depth@1" / "photos" / "part-00000.parquet"),
                       pa.table({"key": ["k0"], "status": ["ok"], "error": pa.array([None], pa.string()), "model_id": ["depth-anything/Depth-Anything-V2-Small-hf"],
                                 "model_revision": ["abc123"]}))
    files.commit_json(str(out / "build.json"), {"job": "build", "root": str(root), "stores": ["depth@1"]})
    return str(out)


def test_card_configs_load_with_datasets_offline(tmp_path):
    import datasets

    shards = _shards(tmp_path)
    card = open(write_dataset_card(shards, "onegen"), encoding="utf-8").read()
    assert card.startswith("---\nconfigs:\n") and '- config_name: "depth2image"' in card
    assert '"onegen-depth2image-*.tar"' in card
    assert "| depth2image | photos | 2 |" in card and "| depth2image | web | 3 |" in card
    assert "| depth@1 | depth-anything/Depth-Anything-V2-Small-hf@abc123 |" in card
    assert "| text2image | no_caption | 1 |" in card
    depth = datasets.load_dataset(shards, "depth2image", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(depth) == 5 and {"img0.png", "img1.png", "txt", "json"} <= set(depth.column_names)
    assert sorted(depth["__key__"]) == [f"photos-k{i}-depth2image" for i in range(5)]
    assert depth[0]["img1.png"].size == (16, 16)
    text = datasets.load_dataset(shards, "text2image", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(text) == 3 and "img1.png" not in text.column_names


def test_build_notes_text2image_without_captions(tmp_path):
    shards = _shards(tmp_path)
    assert "1 image(s) got no text2image sample: no caption" in caption_note(shards)
    assert caption_note(str(tmp_path / "nothing-here")) is None


def test_build_finish_writes_the_card_and_agrees_with_stats_on_bytes(tmp_path):
    from pathlib import Path

    from onegen.manifests.query import shard_stats
    from onegen.pipelines.jobs.build import BuildConfig, _finish

    shards = _shards(tmp_path)
    built = _finish(BuildConfig(str(tmp_path / "dataset"), shards))
    tar_bytes = sum(path.stat().st_size for path in Path(shards).glob("*.tar"))
    assert built["bytes"] == shard_stats(shards)["bytes"] == tar_bytes  # one definition: tar file sizes
    assert (Path(shards) / "README.md").read_text().startswith("---\nconfigs:\n")
