"""Hygiene at build, through the real CLI: exact copies across two sources skipped as duplicate_of the
representative, a score filter skipping with its value, and a rebuild with a new threshold that runs
no annotator (the annotation parts are untouched) and gives the new answer."""

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from onegen.manifests.query import read_manifests, shard_stats
from onegen.pipelines.cli.main import main
from onegen.pipelines.demo.tiny_hygiene_models import tiny_image_classifier
from tests.conftest import write_photo_folder

pytestmark = pytest.mark.timeout(600)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}


def test_dedup_and_filters_at_build(tmp_path, ray_local):
    write_photo_folder(tmp_path / "a", count=6)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same 6 photos again, as another source
    root = tmp_path / "d"
    for source in ("a", "b"):
        assert main(["ingest", str(tmp_path / source), "--out", str(root), *RAY]) == 0
    nsfw = tiny_image_classifier(tmp_path / "nsfw")
    annotate = ["annotate", str(root), "--annotators", "phash,nsfw", "--set", f"nsfw.model={nsfw}"]
    assert main([*annotate, *RAY]) == 2  # nsfw wants a GPU by default: refused at once, nothing hangs
    assert main([*annotate, "--set", "nsfw.num_gpus=0", *RAY]) == 0
    assert main(["dedup", str(root), *RAY]) == 0
    annotations = _mtimes(root / "annotations")
    scores = {r["key"]: r["score"] for r in pq.read_table(root / "annotations" / "nsfw@1").to_pylist()}
    threshold = sorted(scores.values())[len(scores) // 2]

    def build(out: str, limit: float) -> dict:
        assert main(["build", str(root), "--out", str(tmp_path / out), "--tasks", "text2image",
                     "--dedup", "phash", "--filter", f"nsfw<{limit}", *RAY]) == 0
        return shard_stats(str(tmp_path / out))

    stats = build("s1", threshold)
    kept = {r["source_keys"][0] for r in read_manifests(str(tmp_path / "s1")).to_pylist()}
    skipped = pq.read_table(tmp_path / "s1" / "skipped").to_pylist()
    reasons = {r["key"]: r["reason"] for r in skipped}
    duplicates = {k: r for k, r in reasons.items() if r.startswith("duplicate_of:")}
    # every photo of source b is an exact copy of one in a: same size, so the smaller key (a's) represents it
    assert len(duplicates) == 6 and all(k.startswith("b-") for k in duplicates)
    assert all(r.split(":", 1)[1].startswith("a-") and r.split(":", 1)[1] not in duplicates for r in duplicates.values())
    filtered = {k: r for k, r in reasons.items() if r.startswith("filtered:nsfw=")}
    assert filtered and all(scores[k] >= threshold for k in filtered)
    assert all(scores[k] < threshold for k in kept) and not kept & set(reasons)
    per_reason = stats["skipped_per_reason"]  # counted by family, as manifest stats and the preview show them
    assert per_reason["text2image: duplicate_of"] == 6 and per_reason["text2image: filtered:nsfw"] == len(filtered)
    # a new threshold: nothing is annotated again, and the answer moves with it
    build("s2", 1.01)
    assert _mtimes(root / "annotations") == annotations
    kept_all = {r["source_keys"][0] for r in read_manifests(str(tmp_path / "s2")).to_pylist()}
    assert kept < kept_all and not any(r.startswith("filtered:")
                                       for r in pq.read_table(tmp_path / "s2" / "skipped").column("reason").to_pylist())
