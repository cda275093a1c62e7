"""Atomic, fsspec-backed file commits: the commit rule of docs/design.md §2.

Every committed file is written under a temporary name in the same folder, flushed and fsynced
(local files), then renamed. A reader only ever sees whole files; anything still carrying the
temporary suffix is debris from a killed run and is removed by `clean_temporaries` on the next run.
On object stores (s3://, gs://) a single PUT is already atomic, and the rename is a copy + delete of
a file nobody lists (the temporary suffix hides it).
"""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

TEMP_SUFFIX = ".tmp-onegen"
# Fault injection for the kill-and-rerun tests: "before_rename:N" or "after_rename:N" SIGKILLs the
# committing process at the N-th commit (1-based) at that point; "...:N:driver" SIGKILLs the job's
# driver instead (its pid in CRASH_DRIVER_ENV, which init_ray sets). With CRASH_COUNTER_ENV naming a
# file, the workers' commits are counted across all their processes (the driver's own job records are
# not counted), so the N-th unit commit of the whole job fires, once. Unset in normal use; costs one
# environment lookup.
CRASH_ENV = "ONEGEN_CRASH_AT"
CRASH_COUNTER_ENV = "ONEGEN_CRASH_COUNTER"
CRASH_DRIVER_ENV = "ONEGEN_CRASH_DRIVER_PID"
_commit_counts = {"before_rename": 0, "after_rename": 0}


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `path` and the path as that filesystem spells it."""
    fs, stripped = fsspec.core.url_to_fs(path)
    return fs, stripped


def join(base: str, *parts: str) -> str:
    """Join path segments with "/", keeping a URL scheme intact."""
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def commit_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically (temp name, fsync, rename)."""
    fs, target = filesystem(path)
    fs.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    try:
        with fs.open(temporary, "wb") as handle:
            handle.write(data)
            _fsync(handle)
    except BaseException:
        if fs.exists(temporary):
            fs.rm(temporary)  # nothing of a failed commit stays, not even its temporary
        raise
    _maybe_crash("before_rename")
    fs.mv(temporary, target)
    _maybe_crash("after_rename")


@dataclass(frozen=True)
class PendingFile:
    """A file being committed: written at `scratch` (local), visible at `target` after `end_commit`."""

    target: str  # as the filesystem spells it
    temporary: str  # the hidden name it takes on the target filesystem before the rename
    scratch: str  # the local path to write to (== temporary for local targets: no copy)
    local: bool


def begin_commit(path: str) -> PendingFile:
    """Reserve a temporary name for `path`; write the content to `.scratch`, then call `end_commit`."""
    fs, target = filesystem(path)
    fs.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    local = isinstance(fs, LocalFileSystem)
    scratch = temporary if local else tempfile.NamedTemporaryFile(suffix=TEMP_SUFFIX, delete=False).name
    return PendingFile(path, temporary, scratch, local)


def end_commit(pending: PendingFile) -> None:
    """fsync the written scratch file, move it under its temporary name, rename it into place."""
    fs, _ = filesystem(pending.target)
    try:
        with open(pending.scratch, "rb+") as handle:
            os.fsync(handle.fileno())
        if not pending.local:
            fs.put_file(pending.scratch, pending.temporary)
        _maybe_crash("before_rename")
        fs.mv(pending.temporary, filesystem(pending.target)[1])
        _maybe_crash("after_rename")
    finally:
        abort_commit(pending)


def abort_commit(pending: PendingFile) -> None:
    """Remove what an unfinished commit left (nothing remains at the target)."""
    leftovers = {pending.scratch, pending.temporary} if pending.local else {pending.scratch}
    for leftover in leftovers:
        if os.path.exists(leftover):
            os.remove(leftover)


def commit_table(path: str, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Write `table` as one Parquet file at `path` atomically, with optional key/value metadata."""
    writer = TableWriter(path, table.schema, metadata)
    try:
        writer.write(table)
    except BaseException:
        writer.abort()
        raise
    writer.commit()


class TableWriter:
    """One Parquet file at `path` written in pieces (a row group per `write`) and committed atomically:
    nothing is visible at `path` before `commit` (the temp-name, fsync, rename of `commit_bytes`), and
    `abort` leaves nothing. Written straight to its file as pieces come, so a job streaming a part's
    images holds one piece in memory, never the part."""

    def __init__(self, path: str, schema: pa.Schema, metadata: dict[str, str] | None = None):
        if metadata:
            merged = dict(schema.metadata or {})
            merged.update({k.encode(): v.encode() for k, v in metadata.items()})
            schema = schema.with_metadata(merged)
        self.schema = schema
        self._pending = begin_commit(path)
        try:
            self._writer = pq.ParquetWriter(self._pending.scratch, schema, compression=_compression(schema))
        except BaseException:
            abort_commit(self._pending)
            raise

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def commit(self) -> None:
        try:
            self._writer.close()
        except BaseException:
            abort_commit(self._pending)
            raise
        end_commit(self._pending)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:  # nothing of the file stays, even when closing it fails
            abort_commit(self._pending)


def _compression(schema: pa.Schema) -> dict[str, str]:
    """zstd for ordinary columns; none for binary ones (images, PNG maps, arrays): their bytes are
    already compressed or incompressible, and compressing them again only costs CPU."""
    def is_binary(kind: pa.DataType) -> bool:
        return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or (
            pa.types.is_list(kind) and is_binary(kind.value_type))

    return {field.name: "none" if is_binary(field.type) else "zstd" for field in schema}


def commit_json(path: str, payload: Any) -> None:
    commit_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())


def read_json(path: str) -> Any | None:
    """The JSON at `path`, or None when there is none."""
    fs, target = filesystem(path)
    if not fs.exists(target):
        return None
    with fs.open(target, "rb") as handle:
        return json.loads(handle.read())


def exists(path: str) -> bool:
    fs, target = filesystem(path)
    return fs.exists(target)


def list_files(folder: str, suffix: str) -> list[str]:
    """Committed files under `folder` (recursive) ending in `suffix`, sorted, as full paths/URLs."""
    fs, target = filesystem(folder)
    if not fs.exists(target):
        return []
    found = [p for p in fs.find(target) if p.endswith(suffix) and not p.endswith(TEMP_SUFFIX)]
    return sorted(_unstrip(folder, target, p) for p in found)


def clean_temporaries(folder: str) -> int:
    """Remove debris of killed runs under `folder`; returns how many files went."""
    fs, target = filesystem(folder)
    if not fs.exists(target):
        return 0
    debris = [p for p in fs.find(target) if p.endswith(TEMP_SUFFIX)]
    for path in debris:
        fs.rm(path)
    return len(debris)


def remove(path: str) -> None:
    fs, target = filesystem(path)
    if fs.exists(target):
        fs.rm(target, recursive=True)


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, target = filesystem(path)
    with fs.open(target, "rb") as handle:
        return pq.read_table(handle, columns=columns)


def count_rows(path: str) -> int:
    """Rows of the Parquet file at `path`, from its footer."""
    fs, stripped = filesystem(path)
    with fs.open(stripped, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def column_statistics(paths: list[str], prefix: str) -> dict[str, dict]:
    """Footer statistics of the flat columns whose names start with `prefix` in the Parquet files `paths`:
    {column: {"type", "rows", "nulls", "min", "max"}} merged over files and row groups; min / max stay None
    where no row group kept them (all null, or no statistics written). Reads footers only, never row data."""
    found: dict[str, dict] = {}
    for path in paths:
        fs, stripped = filesystem(path)
        with fs.open(stripped, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        _merge_statistics(found, metadata, prefix)
    return found


def _merge_statistics(found: dict[str, dict], metadata: pq.FileMetaData, prefix: str) -> None:
    types = {field.name: str(field.type) for field in metadata.schema.to_arrow_schema()}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            name = column.path_in_schema  # a flat column's own name (nested ones are "a.list.element")
            if not name.startswith(prefix) or name not in types:
                continue
            entry = found.setdefault(name, {"type": types[name], "rows": 0, "nulls": 0, "min": None, "max": None})
            entry["rows"] += row_group.num_rows
            stats = column.statistics
            if stats is None:
                continue
            if types[name] != entry["type"]:  # files of one source typing the column differently: no range
                entry["type"], entry["min"], entry["max"] = "mixed", None, None
            entry["nulls"] += stats.null_count or 0
            if stats.has_min_max and entry["type"] != "mixed":
                entry["min"] = stats.min if entry["min"] is None else min(entry["min"], stats.min)
                entry["max"] = stats.max if entry["max"] is None else max(entry["max"], stats.max)


def read_metadata(path: str) -> dict[str, str]:
    """The key/value metadata written with `commit_table`."""
    fs, target = filesystem(path)
    with fs.open(target, "rb") as handle:
        raw = pq.read_schema(handle).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW")}


def _maybe_crash(stage: str) -> None:
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    name, _, rest = wanted.partition(":")
    count, _, target = rest.partition(":")
    if name != stage:
        return
    if os.environ.get(CRASH_COUNTER_ENV) and os.environ.get(CRASH_DRIVER_ENV) == str(os.getpid()):
        return  # the driver's commits (job records, index) are not what the workers' count is about
    if _next_count(stage) == int(count):
        pid = int(os.environ[CRASH_DRIVER_ENV]) if target == "driver" else os.getpid()
        os.kill(pid, signal.SIGKILL)
        if pid != os.getpid():
            time.sleep(60)  # the driver is gone; Ray ends this worker with its job


def mark_driver() -> None:
    """Under fault injection, record this process as the job's driver (its children inherit the pid)."""
    if os.environ.get(CRASH_ENV):
        os.environ.setdefault(CRASH_DRIVER_ENV, str(os.getpid()))


def _next_count(stage: str) -> int:
    """This commit's number at `stage`: per process, or across processes through the counter file."""
    counter = os.environ.get(CRASH_COUNTER_ENV)
    if not counter:
        _commit_counts[stage] += 1
        return _commit_counts[stage]
    import fcntl

    with open(f"{counter}.{stage}", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        number = len(handle.read()) + 1
        handle.write("x")
        handle.flush()
        return number


def _fsync(handle: Any) -> None:
    """fsync local files (an fsync error raises: nothing is renamed over it); remote file objects have
    no descriptor and commit on close."""
    handle.flush()
    try:
        descriptor = handle.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return
    os.fsync(descriptor)


def _unstrip(original: str, stripped_root: str, found: str) -> str:
    """Map a path found by fs.find back into the caller's spelling (keeps s3:// etc.)."""
    if original.rstrip("/").endswith(stripped_root.rstrip("/")):
        prefix = original.rstrip("/")[: len(original.rstrip("/")) - len(stripped_root.rstrip("/"))]
        return prefix + found
    return found
