"""Atomic commits, job records, shard cutting and manifest verification."""

import hashlib
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onegen.manifests import files
from onegen.manifests.shard_index import write_shard_index
from onegen.manifests.shard_writer import TAR_BLOCK, Sample, ShardWriter
from onegen.manifests.verify import verify_shards
from onegen.pipelines.runtime.job_state import JobConflict, check_and_record


def test_commit_is_atomic_and_debris_is_cleaned(tmp_path):
    target = str(tmp_path / "a" / "part-00000.parquet")
    files.commit_table(target, pa.table({"x": [1, 2]}), {"note": "hello"})
    (tmp_path / "a" / f"part-00001.parquet.abcd{files.TEMP_SUFFIX}").write_bytes(b"half a file")
    assert files.list_files(str(tmp_path / "a"), ".parquet") == [target]
    assert files.read_metadata(target)["note"] == "hello"
    assert files.clean_temporaries(str(tmp_path)) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["part-00000.parquet"]


def test_store_works_through_fsspec_urls():
    root = "memory://onegen-test/store"
    files.commit_table(files.join(root, "p.parquet"), pa.table({"x": [3]}))
    assert files.list_files(root, ".parquet") == [files.join(root, "p.parquet")]
    assert files.read_table(files.join(root, "p.parquet")).column("x").to_pylist() == [3]


def test_job_record_refuses_changes_and_names_them(tmp_path):
    path = str(tmp_path / "job.json")
    record = {"samples_per_shard": 100, "tasks": ["a", "b"]}
    assert check_and_record(path, record, False, "hint") is False
    assert check_and_record(path, dict(record), False, "hint") is False
    with pytest.raises(JobConflict) as refused:
        check_and_record(path, {"samples_per_shard": 50, "tasks": ["a", "b"]}, False, "Use --overwrite.")
    assert "samples_per_shard changed: 100 -> 50" in str(refused.value) and "--overwrite" in str(refused.value)
    assert check_and_record(path, {"samples_per_shard": 50, "tasks": ["a", "b"]}, True, "") is True


def _sample(i: int, size: int = 1000) -> Sample:
    data = bytes([i % 256]) * size
    return Sample(key=f"k{i:04d}-t", task="t", prompt=f"[[t]] {i}", source="s", n_views=1, source_keys=[f"k{i:04d}"],
                  annotators=[], width=8, height=8, ordinal=i, members=[("img0.jpg", data), ("txt", b"p")])


def _write(out, n, **limits):
    writer = ShardWriter(str(out), "pre", "t", **limits)
    for i in range(n):
        writer.add(_sample(i))
    writer.finish()
    return writer.written


def test_shards_cut_by_count_and_by_bytes(tmp_path):
    by_count = _write(tmp_path / "count", 10, samples_per_shard=4, max_shard_bytes=1 << 30)
    assert [s.nsamples for s in by_count] == [4, 4, 2]
    per_sample = _sample(0).tar_bytes()
    by_bytes = _write(tmp_path / "bytes", 10, samples_per_shard=100, max_shard_bytes=3 * per_sample + 2 * TAR_BLOCK)
    assert [s.nsamples for s in by_bytes] == [3, 3, 3, 1]
    assert all(s.filesize <= 3 * per_sample + 2 * TAR_BLOCK + 10240 for s in by_bytes)  # tar end padding aside
    with tarfile.open(tmp_path / "count" / "pre-t-000000.tar") as tar:
        assert tar.getnames()[:2] == ["k0000-t.img0.jpg", "k0000-t.txt"]
    manifest = pq.read_table(tmp_path / "count" / "manifests" / "pre-t-000001.parquet").to_pylist()
    assert [r["shard"] for r in manifest] == ["pre-t-000001.tar"] * 4 and [r["ordinal"] for r in manifest] == [4, 5, 6, 7]


def test_same_samples_give_the_same_tar_bytes(tmp_path):
    _write(tmp_path / "a", 5, samples_per_shard=10, max_shard_bytes=1 << 30)
    _write(tmp_path / "b", 5, samples_per_shard=10, max_shard_bytes=1 << 30)
    digest = [hashlib.sha256((tmp_path / d / "pre-t-000000.tar").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]


def test_index_lists_every_shard_with_its_md5(tmp_path):
    written = _write(tmp_path, 7, samples_per_shard=3, max_shard_bytes=1 << 30)
    index = write_shard_index(str(tmp_path), "pre")
    assert [(e["url"], e["nsamples"], e["filesize"]) for e in index] == [(s.url, s.nsamples, s.filesize) for s in written]
    for entry in index:
        assert entry["md5"] == hashlib.md5((tmp_path / entry["url"]).read_bytes()).hexdigest()
        assert entry["filesize"] == (tmp_path / entry["url"]).stat().st_size


def test_verify_passes_then_catches_every_kind_of_damage(tmp_path):
    _write(tmp_path, 6, samples_per_shard=3, max_shard_bytes=1 << 30)
    write_shard_index(str(tmp_path), "pre")
    assert verify_shards(str(tmp_path)) == (6, [])
    shard = tmp_path / "pre-t-000000.tar"
    data = bytearray(shard.read_bytes())
    data[TAR_BLOCK + 10] ^= 0xFF  # flip one byte inside the first member
    shard.write_bytes(bytes(data))
    (tmp_path / "pre-t-000001.tar").unlink()
    checked, problems = verify_shards(str(tmp_path))
    assert any("pre-t-000000.tar: member k0000-t.img0.jpg does not match" in p for p in problems)
    assert any("md5" in p and "shard index" in p for p in problems)
    assert any("pre-t-000001.tar: missing shard" in p for p in problems)
