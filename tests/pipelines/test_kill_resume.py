"""Killed at any commit point (SIGKILL, via the store's fault-injection hook) and rerun, every job ends
with exactly what an uninterrupted run produces: no lost and no duplicated rows, parts or samples.

Workers commit their own units, so the kill hits either the driver (the job dies; a rerun resumes) or
the worker doing the commit (Ray retries its unit; the same run finishes). Commits are counted across
the job's processes through a counter file, so "the N-th commit" is one moment of the whole job."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from onegen.annotators.conditions import CannyAnnotator, InpaintAnnotator
from onegen.manifests.files import CRASH_COUNTER_ENV, CRASH_ENV
from onegen.manifests.query import read_manifests
from onegen.manifests.verify import verify_shards
from onegen.pipelines.cli.main import main
from tests.conftest import write_photo_folder

pytestmark = pytest.mark.timeout(900)
RAY = ["--num-cpus", "2", "--object-store-mb", "200", "--no-progress"]


def _run(argv: list[str], crash_at: str | None = None, counter: Path | None = None) -> int:
    """Run the CLI in a fresh process (its own Ray); SIGKILL a process at `crash_at`; reap what it leaves."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
        env[CRASH_COUNTER_ENV] = str(counter)
    before = {p.pid for p in psutil.process_iter()}
    process = subprocess.run([sys.executable, "-m", "onegen.pipelines.cli.main", *argv, *RAY], env=env,
                             capture_output=True, text=True, timeout=300)
    for leftover in psutil.process_iter(["pid", "cmdline"]):
        if leftover.pid not in before and "ray" in " ".join(leftover.info["cmdline"] or []):
            leftover.kill()  # a SIGKILLed driver leaves some Ray agents behind
    if crash_at is None or not crash_at.endswith(":driver"):
        assert process.returncode == 0, process.stderr[-2000:]
    return process.returncode


def _parquet_rows(folder: Path) -> list[dict]:
    return sorted(pq.read_table(folder).to_pylist(), key=lambda r: r.get("key") or r.get("uri"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_photo_folder(folder, count=12)
    (folder / "bad.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photos, ray_local):
    base = tmp_path_factory.mktemp("reference")
    assert main(["ingest", str(photos), "--out", str(base / "d"), "--rows-per-part", "4", *RAY]) == 0
    assert main(["annotate", str(base / "d"), "--annotators", "canny,inpaint", *RAY]) == 0
    assert main(["build", str(base / "d"), "--out", str(base / "s"), "--samples-per-shard", "5", "--rows-per-unit", "4",
                 *RAY]) == 0
    return base


def test_kill_and_rerun_every_job(tmp_path, photos, reference):
    root, shards = tmp_path / "d", tmp_path / "s"
    ingest = ["ingest", str(photos), "--out", str(root), "--rows-per-part", "4"]
    annotate = ["annotate", str(root), "--annotators", "canny,inpaint"]
    build = ["build", str(root), "--out", str(shards), "--samples-per-shard", "5", "--rows-per-unit", "4"]
    counter = iter(range(100))

    def crash(job: list[str], at: str) -> int:
        return _run(job, at, tmp_path / f"count-{next(counter)}")

    # ingest: the driver killed while a worker renames a part, then a worker killed right after a rename
    assert crash(ingest, "before_rename:2:driver") == -9
    assert crash(ingest, "after_rename:3") == 0  # Ray retried the killed worker's part in the same run
    _run(ingest)
    assert _parquet_rows(root / "catalog") == _parquet_rows(reference / "d" / "catalog")
    assert _parquet_rows(root / "rejects") == _parquet_rows(reference / "d" / "rejects")
    # annotate: the committing worker killed before its rename, then the driver mid-way
    assert crash(annotate, "before_rename:2") == 0
    shutil.rmtree(root / "annotations")
    assert crash(annotate, "after_rename:3:driver") == -9
    _run(annotate)
    for store in (CannyAnnotator().store_name, InpaintAnnotator().store_name):
        assert _parquet_rows(root / "annotations" / store) == _parquet_rows(reference / "d" / "annotations" / store)
    # build: the driver killed between a tar's rename and its manifest, a worker before a tar's rename
    assert crash(build, "after_rename:2:driver") == -9
    assert crash(build, "before_rename:6") == 0
    _run(build)
    assert verify_shards(str(shards))[1] == []
    ours, theirs = read_manifests(str(shards)).to_pylist(), read_manifests(str(reference / "s")).to_pylist()
    assert len(ours) == len({r["key"] for r in ours}) == len(theirs)
    reference_rows = {r["key"]: r for r in theirs}
    differences = {r["key"]: {f: (v, reference_rows[r["key"]][f]) for f, v in r.items() if reference_rows[r["key"]][f] != v}
                   for r in ours if r != reference_rows.get(r["key"])}
    assert differences == {}
    tars = sorted(p.name for p in shards.glob("*.tar"))
    assert tars == sorted(p.name for p in (reference / "s").glob("*.tar"))
    assert all((shards / t).read_bytes() == (reference / "s" / t).read_bytes() for t in tars)
    assert not list(tmp_path.rglob("*.tmp-onegen"))
