"""A Parquet table of URLs listed for ingest from its footers alone (range items), its rows read on the
worker of each part (pipelines/sources/table.py, pipelines/sources/listing.py, pipelines/jobs/ingest.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from onegen.pipelines.jobs.ingest import IngestUnit, bundle_parts
from onegen.pipelines.sources import table as table_source
from onegen.pipelines.sources.kinds import list_items
from onegen.pipelines.sources.listing import ListingDigest, list_parts, read_part
from onegen.pipelines.sources.settings import SourceSpec
from onegen.pipelines.sources.table import expand_ranges


def _coyo_like(path, rows: int, group: int) -> None:
    table = pa.table({"id": list(range(rows)), "url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(rows)],
                      "text": [f"caption {i}" for i in range(rows)], "aesthetic_score_laion_v2": [i / 10 for i in range(rows)]})
    pq.write_table(table, path, row_group_size=group)


def test_the_driver_lists_footers_and_the_worker_reads_the_rows(tmp_path):
    _coyo_like(tmp_path / "coyo.parquet", 1200, 500)  # row groups of 500, 500, 200
    spec = SourceSpec(str(tmp_path / "coyo.parquet"))
    listing = list_parts(spec, 256, str(tmp_path / "spill.parquet"))
    assert listing.items == 1200 and listing.part_sizes == (256, 256, 256, 256, 176)
    prefix = f"{tmp_path / 'coyo.parquet'}#0"
    assert listing.part_groups == (prefix, "", f"{tmp_path / 'coyo.parquet'}#1", "", f"{tmp_path / 'coyo.parquet'}#2")
    spilled = pq.read_table(tmp_path / "spill.parquet").column("item").to_pylist()
    assert len(spilled) == 7  # range items (parts 1 and 3 hold two each), not 1200 rows
    assert not any(key in json.loads(text) for text in spilled for key in ("target", "fields", "caption"))

    per_row = list_items(spec)  # the per-row listing of the same table
    digest = ListingDigest()
    for item in per_row:
        digest.add(item)
    assert listing.fingerprint == digest.hexdigest()  # a job recorded from either listing is the same job

    rows = [item for index in range(5) for item in expand_ranges(spec, read_part(listing.spill, index))]
    assert rows == per_row  # the worker makes exactly the items the per-row listing makes


def test_a_worker_reads_a_row_group_once_for_consecutive_parts(tmp_path, monkeypatch):
    _coyo_like(tmp_path / "coyo.parquet", 1200, 500)
    spec = SourceSpec(str(tmp_path / "coyo.parquet"))
    listing = list_parts(spec, 100, str(tmp_path / "spill.parquet"))
    parts = [read_part(listing.spill, index) for index in range(len(listing.part_sizes))]
    reads = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, *a, **k: (reads.append(i), real(self, i, *a, **k))[1])
    table_source._LAST_GROUP.clear()
    for part in parts:
        expand_ranges(spec, part)
    assert reads == [0, 1, 2]  # 12 parts, each group read once


def test_parts_of_one_row_group_run_in_bundles_that_keep_every_slot_busy():
    units = [IngestUnit(i, "spill", 100, group="t.parquet#0" if i < 8 else "") for i in range(10)]
    bundles = bundle_parts(units, slots=2)  # 8 slices of one group over 2 slots: 4 bundles of 2
    assert [[u.index for u in bundle] for bundle in bundles] == [[0, 1], [2, 3], [4, 5], [6, 7], [8], [9]]
    one_slot = bundle_parts(units, slots=1)
    assert [len(bundle) for bundle in one_slot] == [4, 4, 1, 1]


def test_a_table_rewritten_after_its_listing_is_a_source_error_not_wrong_rows(tmp_path):
    import pytest

    from onegen.pipelines.sources.names import SourceError

    _coyo_like(tmp_path / "coyo.parquet", 600, 300)
    spec = SourceSpec(str(tmp_path / "coyo.parquet"))
    listing = list_parts(spec, 256, str(tmp_path / "spill.parquet"))
    _coyo_like(tmp_path / "coyo.parquet", 100, 300)  # republished shorter while the job runs
    table_source._LAST_GROUP.clear()
    for index in (1, 2):  # rows past the new end of group 0; a group the file no longer has
        with pytest.raises(SourceError, match="changed since this job listed it"):
            expand_ranges(spec, read_part(listing.spill, index))
