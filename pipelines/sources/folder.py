"""Image folders listed as a stream, in uri order, one directory in memory at a time.

A folder of millions of images is never listed whole: `iter_folder` walks it depth first and yields
one item per image as it goes, holding only the entry names of the directories on the current path
(and the metadata captions that apply there). The order is exactly the sorted order of the items'
uris, which defines ingest parts: inside a directory, entries are visited in the order of
`name + "/"` for directories and `name` for files, which is how their full paths sort ("a.png" <
"a/x.png" < "a-b/y.png" is not path order; "a-b/y.png" < "a.png" < "a/x.png" is, and is what this
walk gives, since "-" < "." < "/").

Captions: a sidecar `<stem>.txt` next to the image, else an imagefolder-style `metadata.jsonl` /
`metadata.csv` (`file_name` relative to the metadata's folder, + `text`/`caption`/...) in the image's
folder or any folder above it; the nearest metadata file naming the image wins (metadata before a
sidecar). Metadata files are read while walking (one per folder); a sidecar is only named in the item
(`caption_sidecar`) and read by the worker that reads the image.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import os
import posixpath
from collections.abc import Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

METADATA_FILES = ("metadata.csv", "metadata.jsonl")


def iter_folder(path: str, image_extensions: tuple[str, ...], caption_columns: tuple[str, ...]) -> Iterator[dict]:
    """Items `{"uri", "path", "size", "caption", "caption_sidecar", "file_size", "file_mtime"}` of every image under
    `path` (a name ending in one of `image_extensions`, any case), in uri order."""
    fs, root = fsspec.core.url_to_fs(path)
    yield from _walk(fs, _walker(fs), root, {}, image_extensions, caption_columns)


def folder_entries(path: str) -> list[str]:
    """The names in the folder `path`, sorted, a folder's with a trailing "/"."""
    fs, root = fsspec.core.url_to_fs(path)
    return _walker(fs).entries(root)[0]


def iter_files(path: str) -> Iterator[str]:
    """Every file under `path` (any order within a directory): for telling a source's kind."""
    fs, root = fsspec.core.url_to_fs(path)
    walker = _walker(fs)
    stack = [root]
    while stack:
        folder = stack.pop()
        keys, _ = walker.entries(folder)
        for key in keys:
            if key.endswith("/"):
                stack.append(posixpath.join(folder, key[:-1]))
            else:
                yield posixpath.join(folder, key)


def _walk(fs, walker, folder: str, inherited: dict[str, str], image_extensions, caption_columns) -> Iterator[dict]:
    keys, infos = walker.entries(folder)
    captions = inherited
    for name in METADATA_FILES:
        if _has(keys, name):
            captions = {**captions, **_metadata_captions(fs, folder, name, caption_columns)}
    prefix = folder.rstrip("/") + "/"  # posixpath.join(folder, key) for the names of this folder, per item cheaper
    for key in keys:
        if key.endswith("/"):
            yield from _walk(fs, walker, prefix + key[:-1], captions, image_extensions, caption_columns)
            continue
        if not key.lower().endswith(image_extensions):
            continue
        path = prefix + key
        caption = captions.get(path)
        sidecar = key.rsplit(".", 1)[0] + ".txt"
        # a sidecar is read by the worker with the image (`read_caption_sidecar`), not here: a driver
        # reading a million small files (a million GETs on an object store) would be the bottleneck
        sidecar_path = prefix + sidecar if caption is None and _has(keys, sidecar) else None
        stamp = walker.stamp(path, infos)
        yield {"uri": walker.uri(path), "path": path, "size": stamp["file_size"], "caption": caption,
               "caption_sidecar": sidecar_path, **stamp}


def read_caption_sidecar(fs, item: dict) -> None:
    """Set `item["caption"]` from its `caption_sidecar` file, if it has one (worker side)."""
    if item.get("caption_sidecar"):
        text = read_whole(fs, item["caption_sidecar"]).decode("utf-8")
        item["caption"] = text.replace("\r\n", "\n").replace("\r", "\n").strip()  # as text mode read it


def _has(sorted_keys: list[str], key: str) -> bool:
    at = bisect.bisect_left(sorted_keys, key)
    return at < len(sorted_keys) and sorted_keys[at] == key


def _metadata_captions(fs, folder: str, name: str, caption_columns: tuple[str, ...]) -> dict[str, str]:
    with fs.open(posixpath.join(folder, name), "r") as handle:
        text = handle.read()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if name.endswith("jsonl") else list(
        csv.DictReader(io.StringIO(text))
    )
    captions: dict[str, str] = {}
    for row in rows:
        caption = next((row[c] for c in caption_columns if row.get(c)), None)
        if "file_name" in row and caption:
            captions[posixpath.join(folder, row["file_name"])] = str(caption)
    return captions


def _walker(fs) -> _LocalWalk | _FsspecWalk:
    """How to list one folder of `fs`: os.scandir for local paths, `fs.ls` otherwise."""
    return _LocalWalk() if isinstance(fs, LocalFileSystem) else _FsspecWalk(fs)


class _LocalWalk:
    """os.scandir: names only in memory (a stat per image when it is yielded, as a listing with
    details would pay anyway)."""

    def uri(self, path: str) -> str:
        return "file://" + path  # what LocalFileSystem.unstrip_protocol gives for an absolute posix path

    def entries(self, folder: str) -> tuple[list[str], None]:
        with os.scandir(folder) as scan:
            keys = [entry.name + "/" if entry.is_dir() else entry.name for entry in scan]
        keys.sort()
        return keys, None

    def stamp(self, path: str, infos: None) -> dict:
        status = os.stat(path)
        return stamp_of({"size": status.st_size, "mtime": status.st_mtime})  # as LocalFileSystem.info has them


class _FsspecWalk:
    """Any fsspec filesystem (s3, gs, ...): one `ls` per directory, its details kept for that directory."""

    def __init__(self, fs):
        self.fs = fs

    def uri(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def entries(self, folder: str) -> tuple[list[str], dict[str, dict]]:
        infos = {}
        for info in self.fs.ls(folder, detail=True):
            name = posixpath.basename(info["name"].rstrip("/"))
            if name:
                infos[name + "/" if info["type"] == "directory" else name] = info
        return sorted(infos), {posixpath.join(folder, key): info for key, info in infos.items()}

    def stamp(self, path: str, infos: dict[str, dict]) -> dict:
        return stamp_of(infos[path])


def stamp_of(info: dict) -> dict:
    """What a by-reference catalog checks before trusting bytes again, from an fsspec file info: the
    file's size and its mtime / etag (whichever the filesystem reports)."""
    changed = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("ETag") or ""
    return {"file_size": info.get("size"), "file_mtime": str(changed)}


def read_whole(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """A whole file's bytes; local files through the builtin `open` (an fsspec file object costs tens
    of microseconds per open, paid per image and per caption sidecar)."""
    if isinstance(fs, LocalFileSystem):
        with open(path, "rb") as handle:
            return handle.read()
    with fs.open(path, "rb") as handle:
        return handle.read()


def file_stamp(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    """What a by-reference catalog checks before trusting bytes again: the file's size and mtime/etag."""
    return stamp_of(fs.info(path))
