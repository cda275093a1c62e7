"""Writing one task's stream of samples into WebDataset tars with per-shard manifests.

A shard is `{stem}-{n:06d}.tar`, the stem being `{prefix}-{task}` or, for a build unit's shards,
`{prefix}-{task}-{unit:05d}` (manifests/layout.py). It closes when it holds `samples_per_shard`
samples, or before a sample that would take it past `max_shard_bytes` (a single larger sample gets a
shard of its own). Samples are streamed into the open tar as they come (one sample in memory at a
time). Commit order, per shard: the tar (temp name, fsync, rename; written in place for local
folders, no copy), then skipped/<name>.parquet, then manifests/<name>.parquet, which marks the shard
as existing. Tar headers are fixed (mtime 0, uid/gid 0, mode 0444), so the same samples give the same
tar bytes on every run.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa

from onegen.manifests import files
from onegen.manifests.layout import ShardLayout
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
    """Streams one task's samples (in stream order) into tars and commits full shards."""

    out: str
    prefix: str
    task: str
    samples_per_shard: int
    max_shard_bytes: int
    next_index: int = 0
    stem: str = ""  # name before "-{n:06d}"; default "{prefix}-{task}"
    written: list[ShardInfo] = field(default_factory=list)
    _rows: list[dict] = field(default_factory=list)
    _skipped: list[dict] = field(default_factory=list)
    _bytes: int = 0
    _open: tuple[files.PendingFile, BinaryIO] | None = None
    _commits: list[Future] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stem = self.stem or f"{self.prefix}-{self.task}"

    @property
    def shard(self) -> str:
        """Name of the shard being filled (or filled next)."""
        return f"{self.stem}-{self.next_index:06d}"

    def add(self, sample: Sample) -> None:
        size = sample.tar_bytes()
        if self._rows and self._bytes + size + 2 * TAR_BLOCK > self.max_shard_bytes:
            self.flush()
        if self._open is None:
            pending = files.begin_commit(ShardLayout(self.out).tar(self.shard))
            self._open = (pending, open(pending.scratch, "wb"))
        try:
            self._bytes += write_sample(self._open[1], sample)
        except BaseException:
            self._abort()
            raise
        self._rows.append(_manifest_row(sample, self.shard))
        if len(self._rows) >= self.samples_per_shard:
            self.flush()

    def skip(self, key: str, reason: str, ordinal: int) -> None:
        self._skipped.append({"key": key, "task": self.task, "reason": reason, "ordinal": ordinal})

    def flush(self) -> None:
        """Close the open shard (if it has samples) and queue its commit.

        Its md5 is computed on a small hashing pool, and fsync, rename and the skipped/manifest tables
        happen on one committer thread (so in shard order: committed shards stay a prefix), all while
        the next shard is being written.
        """
        self._raise_commit_errors()
        if self._open is None:
            return
        pending, handle = self._open
        try:
            filesize = self._bytes + write_end(handle, self._bytes)
            handle.close()
        except BaseException:
            self._abort()
            raise
        self._open = None
        name = self.shard
        md5 = _pools().hashers.submit(file_md5, pending.scratch)  # in parallel with the commits before it
        self._commits.append(_pools().committer.submit(self._commit, name, pending, self._rows, self._skipped,
                                                       filesize, md5))
        self.written.append(ShardInfo(f"{name}.tar", len(self._rows), filesize, self.task))
        self.next_index += 1
        self._rows, self._skipped, self._bytes = [], [], 0

    def finish(self) -> None:
        """Commit the last shard and wait for every queued commit; trailing skips with no shard to go
        with land in a tail file (`{stem}-tail.parquet`)."""
        self.flush()
        for future in self._commits:
            future.result()  # every queued commit done (re-raises a failed one)
        self._commits = []
        if self._skipped:
            files.commit_table(ShardLayout(self.out).skipped(f"{self.stem}-tail"), pa.Table.from_pylist(self._skipped, schema=SKIPPED_SCHEMA))
            self._skipped = []

    def _abort(self) -> None:
        if self._open is not None:
            pending, handle = self._open
            handle.close()
            files.abort_commit(pending)
            self._open = None

    def _commit(self, name: str, pending: files.PendingFile, rows: list[dict], skipped: list[dict],
                filesize: int, md5: Future) -> None:
        digest = md5.result()  # before the rename: the scratch file is gone after it
        files.end_commit(pending)
        layout = ShardLayout(self.out)
        files.commit_table(layout.skipped(name), pa.Table.from_pylist(skipped, schema=SKIPPED_SCHEMA))
        files.commit_table(layout.manifest(name),
                           pa.Table.from_pylist(rows, schema=SHARD_MANIFEST_SCHEMA),
                           {"onegen.shard_bytes": str(filesize), "onegen.shard_md5": digest})

    def _raise_commit_errors(self) -> None:
        done = [future for future in self._commits if future.done()]
        self._commits = [future for future in self._commits if not future.done()]
        for future in done:
            future.result()  # re-raises a failed commit here, in the caller's thread


@dataclass(frozen=True)
class _Pools:
    committer: ThreadPoolExecutor  # one thread: commits run in the order they were queued (shard order)
    hashers: ThreadPoolExecutor
    pid: int  # threads do not survive a fork: a forked child makes its own


_shared: list[_Pools] = []
_shared_lock = threading.Lock()


def _pools() -> _Pools:
    """The process's commit and hashing threads, made once and kept: a build worker runs many units,
    and pools made per writer (new threads per unit) grew the worker by ~5 MiB a unit, in
    pyarrow's mimalloc heaps that exited threads leave behind (bench/scale.py (iii))."""
    with _shared_lock:
        if not _shared or _shared[0].pid != os.getpid():
            _shared[:] = [_Pools(ThreadPoolExecutor(max_workers=1, thread_name_prefix="onegen-shard-commit"),
                                 ThreadPoolExecutor(max_workers=2, thread_name_prefix="onegen-shard-md5"), os.getpid())]
        return _shared[0]


def write_sample(handle: BinaryIO, sample: Sample) -> int:
    """Append one sample's members to a ustar stream (headers from tarfile's own `TarInfo.tobuf`, data
    without intermediate copies); returns the bytes written."""
    size = 0
    for suffix, data in sample.members:
        header = _tar_info(f"{sample.key}.{suffix}", len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        padding = -len(data) % TAR_BLOCK
        handle.write(header)
        handle.write(data)
        handle.write(bytes(padding))
        size += len(header) + len(data) + padding
    return size


def write_end(handle: BinaryIO, size: int) -> int:
    """Write the end-of-archive marker after `size` bytes of members, padded to a whole record."""
    end = 2 * TAR_BLOCK + -(size + 2 * TAR_BLOCK) % tarfile.RECORDSIZE
    handle.write(bytes(end))
    return end


def write_tar(handle: BinaryIO, samples: list[Sample]) -> int:
    """Write `samples` as a whole ustar archive to `handle`; returns the size."""
    size = sum(write_sample(handle, sample) for sample in samples)
    return size + write_end(handle, size)


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
