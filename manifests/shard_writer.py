"""Writing one task's stream of samples into WebDataset tars with per-shard manifests.

A shard is `{prefix}-{task}-{n:06d}.tar` (so `{prefix}-{shard:06d}.tar` with the task in the prefix).
It closes when it holds `samples_per_shard` samples, or before a sample that would take it past
`max_shard_bytes` (a single larger sample gets a shard of its own). Commit order, per shard: the tar
(temp name, fsync, rename), then skipped/<name>.parquet, then manifests/<name>.parquet, which marks the
shard as existing. Tar headers are fixed (mtime 0, uid/gid 0, mode 0444), so the same samples give
the same tar bytes on every run.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass, field

import pyarrow as pa

from onegen.manifests import store
from onegen.manifests.schemas import SHARD_MANIFEST_SCHEMA, SKIPPED_SCHEMA

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

    def tar_bytes(self) -> int:
        """Bytes this sample adds to a tar: a header block per member plus padded data."""
        return sum(TAR_BLOCK + -(-len(data) // TAR_BLOCK) * TAR_BLOCK for _, data in self.members)


@dataclass
class ShardInfo:
    url: str  # tar file name, relative to the shards folder
    nsamples: int
    filesize: int
    md5: str
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
        """Commit the open shard (if it has samples)."""
        if not self._samples:
            return
        name = f"{self.prefix}-{self.task}-{self.next_index:06d}"
        self.written.append(self._commit(name))
        self.next_index += 1
        self._samples, self._skipped, self._bytes = [], [], 0

    def finish(self) -> None:
        """Commit the last shard; trailing skips with no shard to go with land in a tail file."""
        self.flush()
        if self._skipped:
            tail = store.join(self.out, "skipped", f"{self.prefix}-{self.task}-tail-{self._skipped[-1]['ordinal']}.parquet")
            store.commit_table(tail, pa.Table.from_pylist(self._skipped, schema=SKIPPED_SCHEMA))
            self._skipped = []

    def _commit(self, name: str) -> ShardInfo:
        md5 = hashlib.md5()
        rows = []
        fs, _ = store.filesystem(self.out)
        local_dir = self.out if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol else None
        if local_dir:
            os.makedirs(local_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=local_dir, suffix=store.TEMP_SUFFIX, delete=False) as handle:
            with tarfile.open(fileobj=_HashingWriter(handle, md5), mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                for sample in self._samples:
                    for suffix, data in sample.members:
                        tar.addfile(_tar_info(f"{sample.key}.{suffix}", len(data)), _Reader(data))
                    rows.append(_manifest_row(sample, name))
            temporary = handle.name
        filesize = os.path.getsize(temporary)
        try:
            store.commit_file(temporary, store.join(self.out, f"{name}.tar"))
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        store.commit_table(store.join(self.out, "skipped", f"{name}.parquet"),
                           pa.Table.from_pylist(self._skipped, schema=SKIPPED_SCHEMA))
        store.commit_table(store.join(self.out, "manifests", f"{name}.parquet"),
                           pa.Table.from_pylist(rows, schema=SHARD_MANIFEST_SCHEMA),
                           {"onegen.shard_md5": md5.hexdigest(), "onegen.shard_bytes": str(filesize)})
        return ShardInfo(f"{name}.tar", len(rows), filesize, md5.hexdigest(), self.task)


def _manifest_row(sample: Sample, shard: str) -> dict:
    return {
        "key": sample.key, "shard": f"{shard}.tar", "task": sample.task, "n_views": sample.n_views,
        "prompt": sample.prompt, "source": sample.source, "members": [s for s, _ in sample.members],
        "member_bytes": [len(d) for _, d in sample.members],
        "member_sha256": [hashlib.sha256(d).hexdigest() for _, d in sample.members],
        "source_keys": sample.source_keys, "annotators": sample.annotators,
        "width": sample.width, "height": sample.height, "ordinal": sample.ordinal,
    }


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o444, 0, 0, "", ""
    return info


class _Reader:
    """A minimal file object over bytes for tarfile.addfile (no BytesIO copy)."""

    def __init__(self, data: bytes):
        self._view, self._at = memoryview(data), 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._at + size
        chunk = self._view[self._at : end]
        self._at += len(chunk)
        return bytes(chunk)


class _HashingWriter:
    """File wrapper that feeds everything written into a hash (the shard's md5 for the index)."""

    def __init__(self, handle, digest):
        self._handle, self._digest = handle, digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()
