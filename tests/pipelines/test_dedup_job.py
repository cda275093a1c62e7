"""The dedup Ray job: catalog parts of two sources + phash parts -> committed per-part dedup tables."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from onegen.annotators.phash import PhashAnnotator
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.manifests.schemas import CATALOG_SCHEMA
from onegen.pipelines.hygiene.dedup_groups import find_duplicates
from onegen.pipelines.hygiene.dedup_tables import read_part_duplicates
from onegen.pipelines.hygiene.semdedup import SemDedupConfig, semantic_duplicates
from onegen.pipelines.jobs.dedup import (
    DedupJobConfig,
    bucket_part,
    partition_edges,
    plan_dedup_parts,
    resolve_duplicates,
    run_phash_dedup,
)
from onegen.pipelines.jobs.semdedup import semantic_dedup_parts
from tests.conftest import PHOTOS, photo

pytestmark = pytest.mark.timeout(300)


def _jpeg(pixels: np.ndarray, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.BICUBIC).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _catalog_row(key: str, source: str, data: bytes, kind: str = "image", subject: str | None = None) -> dict:
    size = Image.open(io.BytesIO(data)).size
    return {"key": key, "source": source, "uri": key, "kind": kind, "image": data, "image_format": "jpg",
            "width": size[0], "height": size[1], "sha256": hashlib.sha256(data).hexdigest(),
            "caption_original": None, "meta": "{}", "subject": subject, "view_images": None, "view_uris": None}


def _write_root(root: str) -> list[dict]:
    """Two sources, two parts in one: near copies across sources, an exact copy, a subject pair."""
    astro, coffee, chelsea = photo("astronaut"), photo("coffee")[:, 100:500], photo("chelsea")
    laion = [_catalog_row("laion-a", "laion", _jpeg(astro, 160)), _catalog_row("laion-b", "laion", _jpeg(coffee, 200)),
             _catalog_row("laion-c", "laion", _jpeg(photo(PHOTOS[5]), 120))]
    coyo_0 = [_catalog_row("coyo-a", "coyo", _jpeg(astro, 240)), _catalog_row("coyo-b", "coyo", _jpeg(coffee, 200))]
    coyo_1 = [_catalog_row("coyo-s1", "coyo", _jpeg(chelsea, 200), "subject_image", "cat"),
              _catalog_row("coyo-s2", "coyo", _jpeg(chelsea, 180), "subject_image", "cat"),
              _catalog_row("coyo-d", "coyo", _jpeg(photo(PHOTOS[3]), 100))]
    phash = PhashAnnotator()
    for source, part, rows in (("laion", 0, laion), ("coyo", 0, coyo_0), ("coyo", 1, coyo_1)):
        name = f"part-{part:05d}.parquet"
        files.commit_table(files.join(root, "catalog", source, name), pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA))
        columns = phash({k: [r[k] for r in rows] for k in ("key", "kind", "image", "meta")})
        files.commit_table(files.join(root, "annotations", "phash@1", source, name),
                           pa.Table.from_pydict(columns, schema=phash.schema()))
    return laion + coyo_0 + coyo_1


def _expected(rows: list[dict]) -> dict[str, str]:
    phash = PhashAnnotator()(
        {k: [r[k] for r in rows] for k in ("key", "kind", "image", "meta")})["phash"]
    exempt = [f"subject:{r['source']}/{r['subject']}" if r["subject"] else None for r in rows]
    return find_duplicates([r["key"] for r in rows], phash, [r["width"] * r["height"] for r in rows],
                           exempt, [r["sha256"] for r in rows])


def test_steps_without_ray_match_the_single_process_answer(tmp_path):
    rows = _write_root(str(tmp_path))
    parts = plan_dedup_parts(str(tmp_path))
    outputs = [bucket_part(part, 4, 3) for part in parts]
    edges = [partition_edges(4, *[tables[p] for tables, _ in outputs]) for p in range(3)]
    found = resolve_duplicates([e for e, _ in edges], [n for _, n in edges])
    expected = _expected(rows)
    assert dict(found.values()) == expected
    # the fixture exercises every rule: near copy across sources (largest wins), exact copy (smallest key), subject
    assert expected == {"laion-a": "coyo-a", "laion-b": "coyo-b"}
    phash = PhashAnnotator()({k: [r[k] for r in rows] for k in ("key", "kind", "image", "meta")})["phash"]
    unexempt = find_duplicates([r["key"] for r in rows], phash, [r["width"] * r["height"] for r in rows])
    assert unexempt["coyo-s2"] == "coyo-s1"  # the subject's two photos are near copies, kept only by the exemption


def test_ray_job_commits_one_table_per_part(tmp_path, ray_local):
    rows = _write_root(str(tmp_path))
    stats = run_phash_dedup(DedupJobConfig(root=str(tmp_path), partitions=2), ray_local)
    assert stats["duplicates"] == 2 and stats["parts"] == 3
    layout = DatasetLayout(str(tmp_path))
    out = layout.phash_dedup(4)
    assert out == files.join(str(tmp_path), "dedup", "phash-k4")
    assert files.read_json(files.join(out, "_SUCCESS.json"))["dedup"] == {"max_distance": 4}
    sha = hashlib.sha256("\n".join(r["key"] for r in rows[:3]).encode()).hexdigest()
    laion_0 = layout.catalog_part("laion", 0)
    assert read_part_duplicates(out, laion_0, sha) == {"laion-a": "coyo-a", "laion-b": "coyo-b"}
    assert read_part_duplicates(out, layout.catalog_part("coyo", 0)) == {}
    assert read_part_duplicates(out, layout.catalog_part("coyo", 1)) == {}
    table = files.read_table(files.join(out, "laion", "part-00000.parquet"))
    assert table.column("reason").to_pylist() == ["duplicate_of:coyo-a", "duplicate_of:coyo-b"]
    with pytest.raises(RuntimeError, match="another version"):
        read_part_duplicates(out, laion_0, "0" * 64)


def test_semantic_dedup_table_has_the_same_layout_and_reasons(tmp_path):
    from onegen.annotators.clip import ClipAnnotator, embedding_matrix
    from onegen.pipelines.demo.tiny_hygiene_models import tiny_clip

    rows = _write_root(str(tmp_path))
    clip = ClipAnnotator(model=tiny_clip(tmp_path / "clip"), num_gpus=0)
    for source, part in (("laion", 0), ("coyo", 0), ("coyo", 1)):
        name = f"part-{part:05d}.parquet"
        catalog = files.read_table(files.join(str(tmp_path), "catalog", source, name)).to_pylist()
        columns = clip({k: [r[k] for r in catalog] for k in ("key", "kind", "image", "meta", "caption_original")})
        files.commit_table(files.join(str(tmp_path), "annotations", "clip@1", source, name),
                           pa.Table.from_pydict(columns, schema=clip.schema()))
    config = SemDedupConfig(n_clusters=2, threshold=0.9999)
    out = DatasetLayout(str(tmp_path)).semantic_dedup(config.threshold)
    assert out == files.join(str(tmp_path), "dedup", "semantic-t0.9999")
    stats = semantic_dedup_parts(plan_dedup_parts(str(tmp_path), "clip"), config, out)
    found = {}
    for source, part in (("laion", 0), ("coyo", 0), ("coyo", 1)):
        found.update(read_part_duplicates(out, DatasetLayout(str(tmp_path)).catalog_part(source, part)))
    assert found["laion-b"] == "coyo-b"  # the exact copy: identical embeddings
    assert stats["duplicates"] == len(found) and stats["method"] == "semantic"
    # the table is the pure function's answer on the stored float16 embeddings
    clip_rows = clip({k: [r[k] for r in rows] for k in ("key", "kind", "image", "meta", "caption_original")})
    _, matrix = embedding_matrix(clip_rows["embedding"])
    exempt = [f"subject:{r['source']}/{r['subject']}" if r["subject"] else None for r in rows]
    assert found == semantic_duplicates([r["key"] for r in rows], matrix, [r["width"] * r["height"] for r in rows],
                                        exempt, config)
