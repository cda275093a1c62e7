"""Failures are loud or retryable, never silently turned into data (through the real runner on Ray):
a buggy annotator fails the job and commits nothing; declared data errors are recorded; the error-rate
breaker trips above the configured rate and not at it; --retry-errors redoes only the error rows;
out-of-memory halves once and keeps the size that worked, or fails at one row; fsync errors abort."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from onegen.annotators.base import Annotator
from onegen.manifests import files
from onegen.manifests.query import catalog_stats
from onegen.pipelines.cli.main import main, report_failure
from onegen.pipelines.jobs.annotate import run_annotators
from tests.conftest import TEST_RAY, write_photo_folder

pytestmark = pytest.mark.timeout(600)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


@dataclass
class Buggy(Annotator):
    name: ClassVar[str] = "buggy"
    output_schema: ClassVar[pa.Schema] = pa.schema([("value", pa.float32())])

    def annotate_one(self, row):
        return {"value": row["image"].mean() + "one"}  # a TypeError on every row: a bug


@dataclass
class FailsListed(Annotator):
    """Rows whose key is listed in the file `fail_list` come back "error" (a data error it declares)."""

    name: ClassVar[str] = "listed"
    output_schema: ClassVar[pa.Schema] = pa.schema([("mean", pa.float64())])
    data_errors: ClassVar[tuple[type[Exception], ...]] = (LookupError,)
    fail_list: str = ""

    def annotate_one(self, row):
        if row["key"] in Path(self.fail_list).read_text().split():
            raise LookupError(f"listed as bad: {row['key']}")
        return {"mean": float(row["image"].mean())}


@dataclass
class OomAbove(Annotator):
    """CUDA's out-of-memory error for batches above `fits` rows (a model annotator: set up once per actor)."""

    name: ClassVar[str] = "oom"
    output_schema: ClassVar[pa.Schema] = pa.schema([("mean", pa.float64())])
    fits: int = 2

    def setup(self):
        self.model = torch.nn.Identity()  # what an annotator that can run out of GPU memory holds

    def annotate(self, rows):
        if len(rows) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return [{"mean": float(r["image"].mean())} for r in rows]


@pytest.fixture(scope="module")
def root(tmp_path_factory, ray_local):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    base = tmp_path_factory.mktemp("failures")
    write_photo_folder(base / "photos", count=8)
    assert main(["ingest", str(base / "photos"), "--out", str(base / "d"), "--rows-per-part", "4", *RAY]) == 0
    return base / "d"


def _keys(root: Path) -> list[str]:
    return pq.read_table(root / "catalog").column("key").to_pylist()


def test_a_buggy_annotator_fails_the_job_and_commits_nothing(root, capsys):
    with pytest.raises(Exception) as failed:
        run_annotators(str(root), [Buggy()], False, TEST_RAY)
    assert not list((root / "annotations" / "buggy@1").rglob("*.parquet"))
    log = root / "jobs" / "annotate-failure.log"
    assert report_failure(failed.value, "AnnotationFailed", str(log)) == 1
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("onegen: error: buggy@1 on ")
    assert "part-0000" in line and "TypeError" in line and "Traceback" in log.read_text()


def test_data_errors_are_rows_and_the_breaker_trips_above_the_rate(root, tmp_path):
    keys = _keys(root)
    listed = tmp_path / "bad.txt"
    listed.write_text(" ".join([keys[0], keys[4]]))  # one row of each 4-row part: 25% errors
    with pytest.raises(Exception, match="more than --max-error-rate 0.2"):
        run_annotators(str(root), [FailsListed(fail_list=str(listed))], False, TEST_RAY, max_error_rate=0.2)
    assert not list((root / "annotations" / "listed@1").rglob("*.parquet"))  # nothing of a tripped unit
    run_annotators(str(root), [FailsListed(fail_list=str(listed))], False, TEST_RAY, max_error_rate=0.25)
    rows = pq.read_table(root / "annotations" / "listed@1").to_pylist()
    errors = {r["key"]: r["error"] for r in rows if r["status"] == "error"}
    assert errors == {keys[0]: f"LookupError: listed as bad: {keys[0]}", keys[4]: f"LookupError: listed as bad: {keys[4]}"}
    stats = catalog_stats(str(root))["annotation_errors"]["listed@1"]
    assert sorted(e["count"] for e in stats.values()) == [1, 1] and {k for e in stats.values() for k in e["examples"]} == set(errors)
    # --retry-errors: the data is fixed; only the two error rows are annotated again, ok rows keep their values
    before = {r["key"]: r for r in rows if r["status"] == "ok"}
    listed.write_text("")
    run_annotators(str(root), [FailsListed(fail_list=str(listed))], False, TEST_RAY, retry_errors=True)
    after = {r["key"]: r for r in pq.read_table(root / "annotations" / "listed@1").to_pylist()}
    assert all(after[k]["status"] == "ok" for k in keys) and all(after[k] == before[k] for k in before)
    assert [r["key"] for r in pq.read_table(root / "annotations" / "listed@1").to_pylist()] == keys  # order kept


def test_out_of_memory_is_paid_once_or_fails_at_one_row(root):
    run_annotators(str(root), [OomAbove(fits=2, batch_size=8)], False, TEST_RAY)
    assert {r["status"] for r in pq.read_table(root / "annotations" / "oom@1").to_pylist()} == {"ok"}
    with pytest.raises(Exception, match="OutOfMemoryError"):
        run_annotators(str(root), [OomAbove(fits=0, batch_size=8)], True, TEST_RAY)
    assert not list((root / "annotations" / "oom@1").rglob("*.parquet"))  # --overwrite cleared it; nothing new


def test_overwrite_redoes_an_unchanged_store(root):
    assert main(["annotate", str(root), "--annotators", "canny", *RAY]) == 0
    parts = sorted((root / "annotations" / "canny@1").rglob("*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in parts}
    assert main(["annotate", str(root), "--annotators", "canny", *RAY]) == 0
    assert {p: p.stat().st_mtime_ns for p in parts} == before  # a plain rerun keeps them
    assert main(["annotate", str(root), "--annotators", "canny", "--overwrite", *RAY]) == 0
    assert all(p.stat().st_mtime_ns != before[p] for p in parts)  # --overwrite redid them


def test_an_fsync_error_aborts_the_commit(tmp_path, monkeypatch):
    import os

    def failing_fsync(descriptor):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    target = tmp_path / "part-00000.parquet"
    with pytest.raises(OSError, match="Input/output error"):
        files.commit_table(str(target), pa.table({"key": ["a"]}))
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind
    with pytest.raises(OSError):
        files.commit_bytes(str(tmp_path / "_job.json"), b"{}")
    assert not (tmp_path / "_job.json").exists()
