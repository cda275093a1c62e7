"""manifests/layout.py: every path of a dataset root and a shards folder, and the jobs/ folder's logs."""

from __future__ import annotations

import os
import tempfile

from onegen.manifests.layout import DatasetLayout, ShardLayout, job_log, split_part


def test_dataset_root_paths():
    layout = DatasetLayout("s3://bucket/data/")
    part = layout.catalog_part("laion", 3)
    assert part == "s3://bucket/data/catalog/laion/part-00003.parquet"
    assert split_part(part) == ("laion", "part-00003.parquet")
    assert layout.store_part("depth@1", part) == "s3://bucket/data/annotations/depth@1/laion/part-00003.parquet"
    assert layout.failure_log("annotate") == "s3://bucket/data/jobs/annotate-failure.log"
    assert layout.ingest_record("laion") == "s3://bucket/data/jobs/ingest-laion.json"


def test_dedup_tables():
    layout = DatasetLayout("/d")
    assert layout.phash_dedup(4) == "/d/dedup/phash-k4"
    assert layout.semantic_dedup(0.95) == "/d/dedup/semantic-t0.95"
    table = layout.semantic_dedup(0.9)
    assert DatasetLayout.dedup_part(table, layout.catalog_part("coyo", 1)) == "/d/dedup/semantic-t0.9/coyo/part-00001.parquet"
    assert DatasetLayout.dedup_done(table) == "/d/dedup/semantic-t0.9/_SUCCESS.json"


def test_shards_folder_paths():
    shards = ShardLayout("/s")
    stem = ShardLayout.shard_name("onegen", "depth2image", 2, 7)
    assert stem == "onegen-depth2image-00002-000007"
    assert ShardLayout.shard_of(shards.manifest(stem)) == stem and shards.tar(stem) == f"/s/{stem}.tar"
    assert (shards.card(), shards.train_config(), shards.record()) == ("/s/README.md", "/s/train.json", "/s/build.json")
    assert ShardLayout.task_tars("onegen", "depth2image") == "onegen-depth2image-*.tar"


def test_job_logs_are_local_files():
    assert job_log("/d", "ingest") == "/d/jobs/ingest.log"
    assert job_log("file:///d", "build") == "/d/jobs/build.log"
    assert job_log("s3://bucket/d", "annotate") == os.path.join(tempfile.gettempdir(), "onegen-logs", "annotate.log")
