"""An ingest part's rows streamed into its files (pipelines/jobs/ingest_output.py), without Ray."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.jobs import ingest_output
from onegen.pipelines.jobs.ingest_output import PartOutput


def _row(n: int, size: int, reason: str | None = None) -> dict:
    row = {"source": "s", "uri": f"u{n}", "key": None if reason else f"s-{n:020d}", "caption_original": None,
           "reject_reason": reason, "reject_error": "why" if reason else None}
    if not reason:
        row.update(kind="image", image=bytes([n % 256]) * size, image_format="jpg", width=8, height=8,
                   sha256=f"{n:064d}", meta="{}")
    return row


def _visible(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


def test_rows_stream_in_row_groups_and_commit_rejects_first(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_output, "GROUP_BYTES", 3000)
    layout = DatasetLayout(str(tmp_path))
    fields = pa.table({"source.score": pa.array([float(n) for n in range(10)])})
    output = PartOutput(layout, "s", 0, fields)
    for n in range(10):
        output.add(_row(n, 1000, reason="http_404" if n in (2, 7) else None))
    assert not any(name.endswith(".parquet") for name in _visible(tmp_path))  # nothing visible before commit
    committed = []
    real_commit_table = files.commit_table
    monkeypatch.setattr(files, "commit_table", lambda path, *a, **k: (committed.append(path), real_commit_table(path, *a, **k)))
    catalog_rows, rejects = output.commit()
    assert (catalog_rows, rejects) == (8, {"http_404": 2})
    assert committed == [layout.rejects_part("s", 0)]  # the rejects file was committed while the catalog was not yet
    part = pq.ParquetFile(layout.catalog_part("s", 0))
    assert part.metadata.num_row_groups == 3  # 3 KB of images per group: 3 + 3 + 2 rows
    table = part.read()
    assert table.column("uri").to_pylist() == [f"u{n}" for n in range(10) if n not in (2, 7)]
    assert table.column("source.score").to_pylist() == [float(n) for n in range(10) if n not in (2, 7)]
    assert table.column("image").to_pylist()[3] == bytes([4]) * 1000  # each row's own bytes, in order
    assert files.read_table(layout.rejects_part("s", 0)).column("uri").to_pylist() == ["u2", "u7"]


def test_a_part_of_rejects_only_commits_an_empty_catalog_part(tmp_path):
    layout = DatasetLayout(str(tmp_path))
    output = PartOutput(layout, "s", 3, None)
    output.add(_row(0, 10, reason="timeout"))
    assert output.commit() == (0, {"timeout": 1})
    assert files.count_rows(layout.catalog_part("s", 3)) == 0


def test_abort_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_output, "GROUP_BYTES", 1)
    layout = DatasetLayout(str(tmp_path))
    output = PartOutput(layout, "s", 0, None)
    output.add(_row(0, 100))  # a row group already written to the temporary file
    assert _visible(tmp_path)
    output.abort()
    assert _visible(tmp_path) == []


def test_a_failing_rejects_commit_leaves_no_catalog_part(tmp_path, monkeypatch):
    layout = DatasetLayout(str(tmp_path))
    output = PartOutput(layout, "s", 0, None)
    output.add(_row(0, 100))
    output.add(_row(1, 0, reason="http_500"))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files, "commit_table", broken)
    with pytest.raises(OSError, match="disk full"):
        output.commit()
    assert _visible(tmp_path) == []
