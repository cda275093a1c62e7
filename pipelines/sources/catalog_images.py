"""Catalog images stored by reference (`onegen ingest --images reference`) and read back from the source.

A by-reference catalog row has `image` null and `image_ref` set: a JSON locator of the original bytes

    {"path": URL, "offset": int, "length": int, "file_size": int, "file_mtime": str}        a file or tar member
    {"path": URL, "row_group": int, "row": int, "column": str, "file_size": ..., "file_mtime": ...}
                                                                                            a Parquet cell

Only items whose catalog bytes would be the original bytes are referenced (upright RGB JPEGs, kept byte
for byte at ingest); everything ingest re-encodes is copied as before, so a reader never has to
normalise again. `resolve_images` fills `image` for such rows and adds `image_error`: before any bytes
are trusted, the file's size and mtime/etag must be what ingest saw and the bytes must hash to the
row's `sha256`; otherwise the row gets `source_changed: ...` (or `source_unreadable: ...`) and no bytes,
so a changed source yields a recorded reason, never wrong pixels. Each file is opened once per call and
read front to back; each Parquet row group once.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from onegen.pipelines.sources.folder import stamp_of
from onegen.pipelines.sources.tar import read_range

REF_COLUMN = "image_ref"
ERROR_COLUMN = "image_error"
IMAGE_MODES = ("copy", "reference")


def make_ref(item: dict) -> dict | None:
    """The locator of an item's original bytes, or None where the source kind has none (HF datasets)."""
    stamp = {"file_size": item.get("file_size"), "file_mtime": item.get("file_mtime")}
    if "tar" in item:
        fs, _ = fsspec.core.url_to_fs(item["tar"])
        return {"path": fs.unstrip_protocol(item["tar"]), "offset": item["offset"], "length": item["size"], **stamp}
    if "table" in item:
        fs, _ = fsspec.core.url_to_fs(item["table"])
        if item.get("image_column") and item["table"].endswith(".parquet"):
            group = int(item["row_group"].rsplit("#", 1)[1])
            return {"path": fs.unstrip_protocol(item["table"]), "row_group": group, "row": item["row"],
                    "column": item["image_column"], **stamp}
        target = item.get("target")
        if not target or item.get("image_column"):
            return None  # JSONL cells have no byte range to point at: copied
        if "://" not in target and not target.startswith("/"):
            target = posixpath.join(posixpath.dirname(item["table"]), target)
        target_fs, stripped = fsspec.core.url_to_fs(target)
        info = target_fs.info(stripped)
        return {"path": target_fs.unstrip_protocol(stripped), "offset": 0, "length": info["size"], **stamp_of(info)}
    if "path" in item and item.get("file_size") is not None:
        fs, _ = fsspec.core.url_to_fs(item["path"])
        return {"path": fs.unstrip_protocol(item["path"]), "offset": 0, "length": item["file_size"], **stamp}
    return None


def resolve_images(table: pa.Table) -> pa.Table:
    """`table` (catalog rows) with `image` filled for by-reference rows and an `image_error` column."""
    refs = table.column(REF_COLUMN).to_pylist() if REF_COLUMN in table.column_names else [None] * table.num_rows
    images = table.column("image").to_pylist() if "image" in table.column_names else [None] * table.num_rows
    errors: list[str | None] = [None] * table.num_rows
    wanted = [(i, json.loads(ref)) for i, ref in enumerate(refs) if ref and images[i] is None]
    if not wanted:
        return _with(table, "image", pa.array(images, pa.binary()), ERROR_COLUMN, pa.array(errors, pa.string()))
    hashes = table.column("sha256").to_pylist()
    by_path: dict[str, list[tuple[int, dict]]] = {}
    for index, ref in wanted:
        by_path.setdefault(ref["path"], []).append((index, ref))
    for path, entries in by_path.items():
        for index, result in _read_refs(path, entries):
            if isinstance(result, str):
                errors[index] = result
            elif hashlib.sha256(result).hexdigest() != hashes[index]:
                errors[index] = f"source_changed: {path}: the bytes no longer hash to the catalog's sha256"
            else:
                images[index] = result
    return _with(table, "image", pa.array(images, pa.binary()), ERROR_COLUMN, pa.array(errors, pa.string()))


def _read_refs(path: str, entries: list[tuple[int, dict]]) -> list[tuple[int, bytes | str]]:
    """(row index, bytes or an error reason) for every reference into one file."""
    fs, stripped = fsspec.core.url_to_fs(path)
    try:
        now = stamp_of(fs.info(stripped))
    except OSError as error:
        return [(i, f"source_unreadable: {path}: {type(error).__name__}: {error}") for i, _ in entries]
    results: list[tuple[int, bytes | str]] = []
    current = [(i, ref) for i, ref in entries if _stamp(ref) == now]
    results += [(i, f"source_changed: {path}: size/mtime {_stamp(ref)} -> {now}") for i, ref in entries
                if _stamp(ref) != now]
    if not current:
        return results
    try:
        with fs.open(stripped, "rb") as handle:
            if "row_group" in current[0][1]:
                results += _read_cells(handle, current)
            else:
                for index, ref in sorted(current, key=lambda e: e[1]["offset"]):
                    results.append((index, read_range(handle, ref["offset"], ref["length"])))
    except (OSError, pa.ArrowException) as error:
        done = {i for i, _ in results}
        results += [(i, f"source_unreadable: {path}: {type(error).__name__}: {error}") for i, _ in current
                    if i not in done]
    return results


def _read_cells(handle, entries: list[tuple[int, dict]]) -> list[tuple[int, bytes | str]]:
    parquet = pq.ParquetFile(handle)
    starts, total = [], 0
    for group in range(parquet.metadata.num_row_groups):
        starts.append(total)
        total += parquet.metadata.row_group(group).num_rows
    loaded: dict[tuple[int, str], pa.ChunkedArray] = {}
    results: list[tuple[int, bytes | str]] = []
    for index, ref in entries:
        key = (ref["row_group"], ref["column"])
        if key not in loaded:
            loaded[key] = parquet.read_row_group(ref["row_group"], columns=[ref["column"]]).column(0)
        value = loaded[key][ref["row"] - starts[ref["row_group"]]].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        results.append((index, data if data is not None else f"source_changed: {ref['path']}: the cell is empty"))
    return results


def _stamp(ref: dict) -> dict:
    return {"file_size": ref.get("file_size"), "file_mtime": ref.get("file_mtime")}


def _with(table: pa.Table, *named) -> pa.Table:
    for name, values in zip(named[::2], named[1::2], strict=True):
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table
