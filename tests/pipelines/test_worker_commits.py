"""The cluster data path: workers commit their own units, the driver iterates unit records only, a slow
unit holds back nobody, sources are read once, and a by-reference catalog reads through to its source
(a source altered after ingest gives recorded reasons, never wrong bytes)."""

import io
import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onegen.annotators.base import Annotator
from onegen.manifests.query import read_manifests
from onegen.manifests.verify import verify_shards
from onegen.pipelines.cli.main import main
from onegen.pipelines.jobs.annotate import run_annotators
from onegen.pipelines.runtime.units import RECORD_SCHEMA
from onegen.pipelines.sources.kinds import list_items, read_items
from onegen.pipelines.sources.settings import SourceSpec
from tests.conftest import TEST_RAY, photo, write_photo_folder

pytestmark = pytest.mark.timeout(600)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _crops(count: int, size: int = 80) -> list[np.ndarray]:
    base = photo("astronaut")
    return [np.ascontiguousarray(base[i * 9:i * 9 + size, i * 13:i * 13 + size]) for i in range(count)]


def test_the_driver_iterates_unit_records_only(tmp_path, ray_local, monkeypatch):
    """Everything a job's workers hand the driver (Ray Data batches for annotate, task results for ingest
    and build) passes units.receive_records: only record tables, one row per unit."""
    from onegen.pipelines.runtime import units as unit_module

    seen: list[tuple[list[str], int]] = []
    original = unit_module.receive_records

    def spy(batch, description):
        seen.append((batch.schema.names, batch.num_rows))
        return original(batch, description)

    monkeypatch.setattr(unit_module, "receive_records", spy)
    write_photo_folder(tmp_path / "photos", count=10)
    root, shards = tmp_path / "d", tmp_path / "s"
    steps = [(["ingest", str(tmp_path / "photos"), "--out", str(root), "--rows-per-part", "3"], 4),
             (["annotate", str(root), "--annotators", "canny,blur"], 4),
             (["build", str(root), "--out", str(shards), "--samples-per-shard", "2", "--rows-per-unit", "5"], 2)]
    for argv, units in steps:
        seen.clear()
        assert main([*argv, *RAY]) == 0
        assert {tuple(names) for names, _ in seen} == {tuple(RECORD_SCHEMA.names)}, argv[0]
        assert sum(rows for _, rows in seen) == units, argv[0]
    assert verify_shards(str(shards))[1] == []
    # two build units, each with its own numbered shards per task
    assert {p.name.rsplit("-", 2)[-2] for p in shards.glob("onegen-canny2image-*.tar")} == {"00000", "00001"}


@dataclass
class SlowOnKey(Annotator):
    """Sleeps on one key (a straggler unit) and records when each row was annotated."""

    name: ClassVar[str] = "slow"
    output_schema: ClassVar[pa.Schema] = pa.schema([("done_at", pa.float64())])
    slow_key: str = ""
    seconds: float = 0.0

    def annotate_one(self, row):
        if row["key"] == self.slow_key:
            time.sleep(self.seconds)
        return {"done_at": time.time()}


@dataclass
class SlowOnKeyWithSetup(SlowOnKey):
    """The same, with state set up once per worker: the runner keeps it in the streaming actor pool."""

    name: ClassVar[str] = "slowactor"

    def setup(self):
        self.ready = True


@pytest.mark.parametrize("kind, path", [(SlowOnKey, "tasks"), (SlowOnKeyWithSetup, "actors")])
def test_a_slow_unit_holds_back_nobody(tmp_path, ray_local, kind, path):
    from ray import cloudpickle

    from onegen.pipelines.jobs.annotate_work import stateless

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    write_photo_folder(tmp_path / "photos", count=12)
    root = tmp_path / "d"
    assert main(["ingest", str(tmp_path / "photos"), "--out", str(root), "--rows-per-part", "2", *RAY]) == 0
    first_part = pq.read_table(root / "catalog" / "photos" / "part-00000.parquet")
    slow = kind(slow_key=first_part.column("key")[0].as_py(), seconds=12.0, batch_size=1, concurrency=2)
    assert stateless((slow,)) == (path == "tasks")
    run_annotators(str(root), [slow], False, TEST_RAY)
    parts = sorted((root / "annotations" / f"{kind.name}@1" / "photos").glob("*.parquet"))
    committed = {p.name: p.stat().st_mtime for p in parts}
    assert len(committed) == 6
    straggler = committed.pop("part-00000.parquet")
    assert all(when < straggler for when in committed.values()), committed  # nobody waited for part 0


def test_parquet_parts_read_only_their_row_groups(tmp_path, monkeypatch):
    crops = _crops(9)
    table = pa.table({"image": [_jpeg(c) for c in crops], "caption": [f"crop {i}" for i in range(9)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=3)
    spec = SourceSpec(str(tmp_path / "t.parquet"))
    items = list_items(spec)
    from onegen.pipelines.sources.listing import cut_parts

    parts = cut_parts(items, 2)  # asked for 2 rows a part: parts keep whole row groups of 3
    assert [len(p) for p in parts] == [3, 3, 3]
    groups_read = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **k: groups_read.append(i) or original(self, i, *a, **k))
    data = [d for _, d in read_items(spec, parts[1])]
    assert groups_read == [1] and data == table.column("image").to_pylist()[3:6]


def test_tar_members_are_read_by_offset_in_one_pass(tmp_path, monkeypatch):
    members = {f"s{i:03d}.jpg": _jpeg(c) for i, c in enumerate(_crops(6))}
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            caption = f"caption of {name}".encode()
            info = tarfile.TarInfo(name.replace(".jpg", ".txt"))
            info.size = len(caption)
            tar.addfile(info, io.BytesIO(caption))
    spec = SourceSpec(str(tmp_path / "a.tar"))
    items = list_items(spec)
    import fsspec.implementations.local as local

    counted = []
    original = local.LocalFileOpener.read
    monkeypatch.setattr(local.LocalFileOpener, "read", lambda self, *a: counted.append(a) or original(self, *a))
    read = list(read_items(spec, items[2:5]))
    wanted = sum(len(members[i["member"]]) + len(f"caption of {i['member']}") for i in items[2:5])
    assert [d for _, d in read] == [members[i["member"]] for i in items[2:5]]
    assert [i["caption"] for i, _ in read] == [f"caption of {i['member']}" for i in items[2:5]]
    assert sum(a[0] for a in counted) == wanted  # exactly the members' bytes: no scan of the archive


def test_catalog_by_reference_reads_through_and_refuses_changed_sources(tmp_path, ray_local):
    crops = _crops(6)
    tar_path = tmp_path / "tars" / "a.tar"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w") as tar:
        for i, crop in enumerate(crops[:3]):
            data = _jpeg(crop)
            info = tarfile.TarInfo(f"t{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    table_path = tmp_path / "tables" / "b.parquet"
    table_path.parent.mkdir()
    pq.write_table(pa.table({"image": [_jpeg(c) for c in crops[3:]], "caption": ["a", "b", "c"]}), table_path)
    root, shards = tmp_path / "d", tmp_path / "s"
    for source in (tar_path.parent, table_path.parent):
        assert main(["ingest", str(source), "--out", str(root), "--images", "reference", *RAY]) == 0
    catalog = pq.read_table(root / "catalog")
    assert catalog.column("image").null_count == 6 and catalog.column("image_ref").null_count == 0
    assert main(["annotate", str(root), "--annotators", "canny", *RAY]) == 0
    assert main(["build", str(root), "--out", str(shards), "--tasks", "canny2image", *RAY]) == 0
    assert verify_shards(str(shards))[1] == []
    import webdataset as wds

    originals = {hash(_jpeg(c)) for c in crops}
    images = [s["img0.jpg"] for s in wds.WebDataset(sorted(str(p) for p in shards.glob("*.tar")), shardshuffle=False)]
    ok = pq.read_table(root / "annotations" / "canny@1").column("status").to_pylist().count("ok")
    assert len(images) == ok and {hash(i) for i in images} <= originals  # the source's own bytes
    # alter one tar member in place, keeping size and mtime (only the hash can tell), and rewrite the table
    stat = tar_path.stat()
    data = bytearray(tar_path.read_bytes())
    member = tarfile.open(tar_path).getmember("t1.jpg")
    data[member.offset_data + 200] ^= 0xFF
    tar_path.write_bytes(bytes(data))
    os.utime(tar_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.01)
    pq.write_table(pa.table({"image": [_jpeg(c, 50) for c in crops[3:]], "caption": ["a", "b", "c"]}), table_path)
    assert main(["annotate", str(root), "--annotators", "blur", *RAY]) == 0
    blur = {r["key"]: r for r in pq.read_table(root / "annotations" / "blur@1").to_pylist()}
    uris = dict(zip(catalog.column("key").to_pylist(), catalog.column("uri").to_pylist(), strict=True))
    changed = {uris[k].rsplit("/", 1)[-1]: r["error"] for k, r in blur.items() if r["status"] == "source_changed"}
    assert sorted(changed) == ["a.tar#t1.jpg", "b.parquet#000000000", "b.parquet#000000001", "b.parquet#000000002"]
    assert "no longer hash" in changed["a.tar#t1.jpg"] and "size/mtime" in changed["b.parquet#000000000"]
    assert [r["status"] for k, r in blur.items() if uris[k].endswith(("t0.jpg", "t2.jpg"))] == ["ok", "ok"]
    assert main(["build", str(root), "--out", str(tmp_path / "s2"), "--tasks", "canny2image", *RAY]) == 0
    skipped = pq.read_table(tmp_path / "s2" / "skipped").column("reason").to_pylist()
    assert skipped.count("source_changed") == 4
    assert read_manifests(str(tmp_path / "s2")).num_rows == len(images) - sum(
        1 for k, r in blur.items() if r["status"] == "source_changed" and k in
        {m["source_keys"][0] for m in read_manifests(str(shards)).to_pylist()})


def test_workers_record_the_node_that_committed(tmp_path, ray_local):
    write_photo_folder(tmp_path / "photos", count=4)
    assert main(["ingest", str(tmp_path / "photos"), "--out", str(tmp_path / "d"), "--rows-per-part", "2", *RAY]) == 0
    import ray

    nodes = {pq.read_schema(p).metadata[b"onegen.node"].decode()
             for p in (tmp_path / "d" / "catalog" / "photos").glob("*.parquet")}
    assert nodes == {ray.get_runtime_context().get_node_id()}  # a worker of this (one-node) Ray
    assert json.loads((tmp_path / "d" / "jobs" / "ingest-photos.json").read_text())["rows_per_part"] == 2


def _unit_task(unit: dict) -> pa.Table:
    """A one-step unit job's task: fails on the unit that asks for it, else returns its record."""
    from onegen.pipelines.runtime.units import record_table

    if unit["fail"]:
        raise ValueError(f"unit {unit['n']} is broken")
    return record_table([{"n": unit["n"]}])


def test_unit_tasks_return_every_record_and_fail_loudly(ray_local):
    """run_unit_tasks (ingest, build): one record per unit, more units than fit in flight at once, the
    committing node named; an exception of our code fails the job with its own type and text."""
    from ray import cloudpickle

    from onegen.pipelines.runtime.units import run_unit_tasks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    records = run_unit_tasks(_unit_task, [{"n": n, "fail": False} for n in range(20)], (), 0.5, "ok", False)
    assert sorted(r["n"] for r in records) == list(range(20)) and all(r["node"] for r in records)
    with pytest.raises(ValueError, match="unit 3 is broken"):
        run_unit_tasks(_unit_task, [{"n": n, "fail": n == 3} for n in range(6)], (), 0.5, "fails", False)


def test_ingest_units_carry_a_part_index_and_the_spilled_listing(tmp_path, ray_local, monkeypatch):
    """The driver streams the listing into jobs/ingest-<source>.listing.parquet (a row group per part);
    an ingest unit (typed, as planned) carries no items, the worker reads its own row group."""
    from onegen.pipelines.jobs import ingest
    from onegen.pipelines.jobs.ingest import IngestUnit
    from onegen.pipelines.sources.listing import cut_parts, read_part

    units_sent = []
    original = ingest.run_unit_tasks

    def spy(fn, bundles, *args, **kwargs):  # ingest's tasks run bundles of parts (each a list)
        units_sent.extend(unit for bundle in bundles for unit in bundle)
        return original(fn, bundles, *args, **kwargs)

    monkeypatch.setattr(ingest, "run_unit_tasks", spy)
    write_photo_folder(tmp_path / "photos", count=10)
    root = tmp_path / "d"
    assert main(["ingest", str(tmp_path / "photos"), "--out", str(root), "--rows-per-part", "3", *RAY]) == 0
    spill = root / "jobs" / "ingest-photos.listing.parquet"
    assert units_sent == [IngestUnit(i, str(spill), rows) for i, rows in enumerate([3, 3, 3, 1])]
    assert pq.ParquetFile(spill).metadata.num_row_groups == 4
    expected = cut_parts(list_items(SourceSpec(str(tmp_path / "photos"))), 3)
    assert [read_part(str(spill), i) for i in range(4)] == expected
    catalog = pq.read_table(root / "catalog").column("uri").to_pylist()
    assert catalog == [item["uri"] for part in expected for item in part]
