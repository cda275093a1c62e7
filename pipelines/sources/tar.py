"""WebDataset tar sources (`--kind webdataset`): listing image members with their byte offsets, and
reading them back by offset, one sequential pass per tar (no archive scan, nothing extracted to disk).

`read_range` is the one byte-range read of the project (tar members here, by-reference catalog images in
pipelines/sources/catalog_images.py). Listing and reading are dispatched from pipelines/sources/kinds.py.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

import fsspec

from onegen.pipelines.sources.folder import file_stamp
from onegen.pipelines.sources.names import IMAGE_EXTENSIONS, SourceError
from onegen.pipelines.sources.settings import SourceSpec


def list_tars(spec: SourceSpec) -> list[dict]:
    """One item per image member, with its data offset and size in the tar (and its caption member's),
    so a part reads its members with seeks in one pass instead of scanning the archive."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    tars = [root] if fs.isfile(root) else sorted(p for p in fs.find(root) if p.endswith(".tar"))
    items = []
    for tar_path in tars:
        with fs.open(tar_path, "rb") as handle:
            try:
                members = tarfile.open(fileobj=handle, mode="r:").getmembers()
            except tarfile.TarError as error:
                raise SourceError(f"{tar_path}: not a readable tar ({error})") from None
        stamp = file_stamp(fs, tar_path)
        by_key: dict[str, dict[str, tarfile.TarInfo]] = {}
        for member in members:
            if not member.isfile():
                continue
            directory, name = posixpath.split(member.name)
            stem, _, extension = name.partition(".")
            by_key.setdefault(posixpath.join(directory, stem), {})[extension.lower()] = member
        for _, parts in sorted(by_key.items()):
            image = next((parts[e] for e in parts if ("." + e.rsplit(".", 1)[-1]) in IMAGE_EXTENSIONS), None)
            if image is None:
                continue
            caption = parts.get("txt") or parts.get("json")
            items.append(
                {"uri": f"{fs.unstrip_protocol(tar_path)}#{image.name}", "tar": tar_path, "member": image.name,
                 "offset": image.offset_data, "size": image.size,
                 "caption_member": caption.name if caption else None,
                 "caption_offset": caption.offset_data if caption else None,
                 "caption_size": caption.size if caption else None, "caption": None, **stamp}
            )
    return items


def read_tar_members(spec: SourceSpec, items: list[dict]) -> Iterator[tuple[dict, bytes | Exception]]:
    """Member bytes by offset: each tar is opened once and read front to back (items sorted by offset)."""
    fs, _ = fsspec.core.url_to_fs(spec.path)
    by_tar: dict[str, list[dict]] = {}
    for item in items:
        by_tar.setdefault(item["tar"], []).append(item)
    results: dict[str, tuple[dict, bytes | Exception]] = {}
    for tar_path, tar_items in by_tar.items():
        try:
            with fs.open(tar_path, "rb") as handle:
                for item in sorted(tar_items, key=lambda i: i["offset"]):
                    results[item["uri"]] = _read_member(handle, item)
        except OSError as error:
            for item in tar_items:
                results.setdefault(item["uri"], (item, error))
    for item in items:
        yield results[item["uri"]]


def read_range(handle, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes at offset {offset}")
    return data


def _read_member(handle, item: dict) -> tuple[dict, bytes | Exception]:
    name = item["member"]
    if name.startswith("/") or ".." in name.split("/"):
        # Never extracted to disk anyway; refused so that a hostile name is visible in the rejects.
        return item, ValueError(f"unsafe tar member name {name!r}")
    try:
        data = read_range(handle, item["offset"], item["size"])
        if item.get("caption_member"):
            raw = read_range(handle, item["caption_offset"], item["caption_size"])
            text = raw.decode("utf-8", errors="replace")
            item["caption"] = json.loads(text).get("caption") if item["caption_member"].endswith(".json") else text.strip()
        return item, data
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        return item, error
