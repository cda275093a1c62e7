"""Writing one task's stream of samples into WebDataset tars with per-shard manifests.

A shard is `{prefix}-{task}-{n:06d}.tar` (so `{prefix}-{shard:06d}.tar` with the task in the prefix).
It closes when it holds `samples_per_shard` samples, or before a sample that would take it past
`max_shard_bytes` (a single larger sample gets a shard of its own). Commit order, per shard: the tar
(temp name, fsync, rename; written in place for local folders, no copy), then skipped/<name>.parquet, then manifests/<name>.parquet, which marks the
shard as existing. Tar headers are fixed (mtime 0, uid/gid 0, mode 0444), so the same samples give
the same tar bytes on every run.
"""

from __future__ import annotations

import hashlib
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa

from onegen.manifests import store
from onegen.manifests.schemas import SHARD_MANIFEST_SCHEMA, SKIPPED_SCHEMA
from onegen.manifests.shard_index import file_md5

TAR_BLOCK = 512


@dataclass
class Sample:
    """One training sample: `members` are (suffix, bytes) pairs, e.g. ("img0.jpg", b"...")."""

    key: str
    task: str
    prompt: str
    source: str
    members: list[tuple[str, bytes]]
    n_views: int
    source_keys: list[str]
    annotators: list[str]
    width: int | None
    height: int | None
    ordinal: int
    member_sha256: list[str] | None = None  # computed by whoever made the members, if they did

    def tar_bytes(self) -> int:
        """Bytes this sample adds to a tar: a header block per member plus padded data."""
        return sum(TAR_BLOCK + -(-len(data) // TAR_BLOCK) * TAR_BLOCK for _, data in self.members)


@dataclass
class ShardInfo:
    url: str  # tar file name, relative to the shards folder
    nsamples: int
    filesize: int
    task: str


@dataclass
class ShardWriter:
    """Accumulates one task's samples (in stream order) and commits full shards."""

    out: str
    prefix: str
    task: str
    samples_per_shard: int
    max_shard_bytes: int
    next_index: int = 0
    written: list[ShardInfo] = field(default_factory=list)
    _samples: list[Sample] = field(default_factory=list)
    _skipped: list[dict] = field(default_factory=list)
    _bytes: int = 0
    _committer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    _commits: list[Future] = field(default_factory=list)
    _hashers: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=2))

    def add(self, sample: Sample) -> None:
        size = sample.tar_bytes()
        if self._samples and self._bytes + size + 2 * TAR_BLOCK > self.max_shard_bytes:
            self.flush()
        self._samples.append(sample)
        self._bytes += size
        if len(self._samples) >= self.samples_per_shard:
            self.flush()

    def skip(self, key: str, reason: str, ordinal: int) -> None:
        self._skipped.append({"key": key, "task": self.task, "reason": reason, "ordinal": ordinal})

    def flush(self) -> None:
        """Write the open shard (if it has samples) and queue its commit.

        The tar is written here; its md5 is computed on a small hashing pool, and fsync, rename and the
        skipped/manifest tables happen on one committer thread (so in shard order: committed shards stay
        a prefix), all while the next shard is being written.
        """
        self._raise_commit_errors()
        if not self._samples:
            return
        name = f"{self.prefix}-{self.task}-{self.next_index:06d}"
        rows = [_manifest_row(sample, name) for sample in self._samples]
        pending = store.begin_commit(store.join(self.out, f"{name}.tar"))
        try:
            with open(pending.scratch, "wb") as handle:
                filesize = write_tar(handle, self._samples)
        except BaseException:
            store.abort_commit(pending)
            raise
        md5 = self._hashers.submit(file_md5, pending.scratch)  # in parallel with the commits before it
        self._commits.append(self._committer.submit(self._commit, name, pending, rows, self._skipped, filesize, md5))
        self.written.append(ShardInfo(f"{name}.tar", len(rows), filesize, self.task))
        self.next_index += 1
        self._samples, self._skipped, self._bytes = [], [], 0

    def finish(self) -> None:
        """Commit the last shard and wait for every queued commit; trailing skips with no shard to go
        with land in a tail file."""
        self.flush()
        self._committer.shutdown(wait=True)
        self._hashers.shutdown(wait=True)
        self._raise_commit_errors()
        if self._skipped:
            tail = store.join(self.out, "skipped", f"{self.prefix}-{self.task}-tail-{self._skipped[-1]['ordinal']}.parquet")
            store.commit_table(tail, pa.Table.from_pylist(self._skipped, schema=SKIPPED_SCHEMA))
            self._skipped = []

    def _commit(self, name: str, pending: store.PendingFile, rows: list[dict], skipped: list[dict],
                filesize: int, md5: Future) -> None:
        digest = md5.result()  # before the rename: the scratch file is gone after it
        store.end_commit(pending)
        store.commit_table(store.join(self.out, "skipped", f"{name}.parquet"),
                           pa.Table.from_pylist(skipped, schema=SKIPPED_SCHEMA))
        store.commit_table(store.join(self.out, "manifests", f"{name}.parquet"),
                           pa.Table.from_pylist(rows, schema=SHARD_MANIFEST_SCHEMA),
                           {"onegen.shard_bytes": str(filesize), "onegen.shard_md5": digest})

    def _raise_commit_errors(self) -> None:
        done = [future for future in self._commits if future.done()]
        self._commits = [future for future in self._commits if not future.done()]
        for future in done:
            future.result()  # re-raises a failed commit here, in the caller's thread


def write_tar(handle: BinaryIO, samples: list[Sample]) -> int:
    """Write `samples` as a ustar archive to `handle` (headers from tarfile's own `TarInfo.tobuf`, data
    without intermediate copies); returns the size."""
    size = 0
    for sample in samples:
        for suffix, data in sample.members:
            header = _tar_info(f"{sample.key}.{suffix}", len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
            padding = -len(data) % TAR_BLOCK
            handle.write(header)
            handle.write(data)
            handle.write(bytes(padding))
            size += len(header) + len(data) + padding
    end = 2 * TAR_BLOCK + -(size + 2 * TAR_BLOCK) % tarfile.RECORDSIZE  # end marker, then a whole record
    handle.write(bytes(end))
    return size + end


def _manifest_row(sample: Sample, shard: str) -> dict:
    hashes = sample.member_sha256 or [hashlib.sha256(d).hexdigest() for _, d in sample.members]
    return {
        "key": sample.key, "shard": f"{shard}.tar", "task": sample.task, "n_views": sample.n_views,
        "prompt": sample.prompt, "source": sample.source, "members": [s for s, _ in sample.members],
        "member_bytes": [len(d) for _, d in sample.members],
        "member_sha256": hashes,
        "source_keys": sample.source_keys, "annotators": sample.annotators,
        "width": sample.width, "height": sample.height, "ordinal": sample.ordinal,
    }


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o444, 0, 0, "", ""
    return info
