"""Failures are loud or retryable, never silently turned into data (through the real runner on Ray):
a buggy annotator fails the job and commits nothing; declared data errors are recorded; the error-rate
breaker trips above the configured rate and not at it; --retry-errors redoes only the error rows;
out-of-memory halves once and keeps the size that worked, or fails at one row; fsync errors abort.
A user error raised on a worker (weights missing at an actor's setup) is one line and exit 2; a bug
raised there keeps its type and traceback, whatever its text says."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from onegen.annotators.base import Annotator
from onegen.core.errors import PathError
from onegen.core.weights import resolve_checkpoint
from onegen.manifests import files
from onegen.manifests.query import catalog_stats
from onegen.pipelines.cli.failures import report_failure, user_error_message
from onegen.pipelines.cli.main import main
from onegen.pipelines.jobs.annotate import AnnotationFailed, run_annotators
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


@dataclass
class WeightsOnlyOnTheDriver(Annotator):
    """Declares no checkpoints, so the driver's preflight passes (as on a cluster whose driver cannot see a
    worker's disk), then finds no weights at setup on the worker: a user error raised in an actor."""

    name: ClassVar[str] = "weightless"
    output_schema: ClassVar[pa.Schema] = pa.schema([("mean", pa.float64())])

    def setup(self):
        resolve_checkpoint("nobody-here/no-such-weights", "weightless")

    def annotate_one(self, row):
        return {"mean": 0.0}


@dataclass
class SetupBug(Annotator):
    """A bug at setup whose text names a user-error class: only its type may decide."""

    name: ClassVar[str] = "setupbug"
    output_schema: ClassVar[pa.Schema] = pa.schema([("mean", pa.float64())])

    def setup(self):
        raise ValueError("wrong index; onegen.core.weights.MissingCheckpointError: said only in the text")

    def annotate_one(self, row):
        return {"mean": 0.0}


def _task_raises(unit: dict) -> pa.Table:
    """A one-step unit task (ingest, build) that fails with the exception its unit names."""
    raise PathError(unit["text"]) if unit["user"] else ValueError(unit["text"])


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


def _our_lines(err: str) -> list[str]:
    """The stderr lines not forwarded by Ray. Ray prefixes each forwarded line `(<who> pid=N) `; a progress
    bar's redraws ride inside one such line after carriage returns, so lines are split at newlines only
    (str.splitlines would also split at the \\r and lose the prefix of every redraw)."""
    forwarded = ("pid=", "(raylet", "(autoscaler")  # Ray's prefixes (ray._private.worker.print_worker_logs)
    return [text for text in err.strip().split("\n") if text.strip() and not any(f in text for f in forwarded)]


def test_a_buggy_annotator_fails_the_job_and_commits_nothing(root, capsys):
    with pytest.raises(Exception) as failed:
        run_annotators(str(root), [Buggy()], False, TEST_RAY)
    assert not list((root / "annotations" / "buggy@1").rglob("*.parquet"))
    log = root / "jobs" / "annotate-failure.log"
    assert report_failure(failed.value, AnnotationFailed, str(log)) == 1
    # lines Ray forwards from its own processes or earlier tests' workers ("(pid=gcs_server) ...",
    # "(annotate_unit pid=N) ...") may land in the same stderr; they are not ours
    lines = _our_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("onegen: error: buggy@1 on ")
    assert "part-0000" in line and "TypeError" in line and "Traceback" in log.read_text()


def test_a_user_error_at_an_actors_setup_is_one_line_and_exit_2(root, capsys):
    """Ray hands the driver an ActorDiedError with only text when an actor's __init__ raises; the actor
    raises its setup error with its first batch instead, and the CLI finds it by type behind Ray's wrapper."""
    argv = ["annotate", str(root), "--annotators", f"{__name__}:WeightsOnlyOnTheDriver", *RAY]
    assert main(argv) == 2
    # lines Ray forwards late from earlier tests' workers or its own processes ("(annotate_unit pid=N) ...",
    # "(pid=gcs_server) ...") are not ours
    lines = _our_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("onegen: error: weightless checkpoint 'nobody-here/no-such-weights'")
    assert not list((root / "annotations" / "weightless@1").rglob("*.parquet"))


def test_a_bug_on_a_worker_keeps_its_type_and_traceback(root, capsys):
    """A ValueError at an actor's setup whose text names MissingCheckpointError (what the old text search
    matched) is not a user error: it propagates as itself, with the worker's traceback."""
    argv = ["annotate", str(root), "--annotators", f"{__name__}:SetupBug", *RAY]
    with pytest.raises(ValueError, match="wrong index") as raised:
        main(argv)
    assert user_error_message(raised.value) is None
    assert "in setup" in str(raised.value)  # Ray's text of the worker traceback names the failing frame
    assert "onegen: error" not in capsys.readouterr().err


def test_unit_task_errors_are_told_apart_by_type(root):
    """Plain unit tasks (ingest, build): a worker's PathError is a user error, shown as its own one line;
    a ValueError is not, whatever it says."""
    from onegen.pipelines.runtime.units import run_unit_tasks

    for user, text, expected in ((True, "no such folder: /x", "no such folder: /x"),
                                 (False, "onegen.core.errors.PathError: no such folder: /x", None)):
        with pytest.raises(PathError if user else ValueError) as raised:
            run_unit_tasks(_task_raises, [{"user": user, "text": text}], (), 0.5, "fails", False)
        assert user_error_message(raised.value) == expected


def test_a_bug_raised_while_handling_a_user_error_is_a_bug():
    """Only Ray's wrappers are looked through: neither __context__ nor an exception of ours raised `from`
    a user error makes a bug a user error."""
    try:
        try:
            raise PathError("a user error")
        except PathError:
            raise KeyError("a bug")  # noqa: B904 (the point: implicitly chained, __context__)
    except KeyError as bug:
        assert isinstance(bug.__context__, PathError) and user_error_message(bug) is None
    try:
        raise KeyError("a bug") from PathError("a user error")
    except KeyError as bug:
        assert user_error_message(bug) is None
    assert user_error_message(PathError("raised here: as it is\nwhole")) == "raised here: as it is\nwhole"


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
