"""JourneyDB as published (`--kind journeydb`, or detected): photos from `imgs/NNN.tgz`, prompts from the jsonl.

Layout, as the JourneyDB download scripts fetch it from the HF dataset repo JourneyDB/JourneyDB
(SonyResearch micro_diffusion `datasets/prepare/jdb/download.py`: `data/{split}/imgs/{idx:03}.tgz`,
extracted with `tar -xzf ... -C data/{split}/imgs/` into `imgs/{idx:03}/<name>.jpg`;
`data/train/train_anno_realease_repath.jsonl.tgz` holding `train_anno_realease_repath.jsonl`,
`data/valid/valid_anno_repath.jsonl.tgz`; the JourneyDB/JourneyDB GitHub README documents no layout):

    <root>/data/train/imgs/000.tgz ...            members "000/<name>.jpg"
    <root>/data/train/train_anno_realease_repath.jsonl   (or the .jsonl.tgz as downloaded)
    rows {"img_path": "./000/<name>.jpg", "prompt": ..., ...}, paths relative to imgs/

The source path may be the root, `data/`, `data/<split>/`, or a folder holding `imgs/` and the jsonl.
One item per image member of every `.tgz` (gzip: members are read in one streaming pass per archive
and part, in member order; no random access into a gzip stream); the caption is the row's `prompt`,
joined by `img_path` relative to `imgs/`. A member whose name has `..` or starts with `/` is refused
(`read_error: unsafe tar member name`), as for WebDataset tars; nothing is extracted to disk. A
malformed jsonl line is skipped and counted (`malformed_lines` in each item's meta); an image without
a row keeps no caption. Items carry `caption_key` = the file stem, for a caption table.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Iterator

import fsspec

from onegen.pipelines.sources.names import IMAGE_EXTENSIONS, SourceError

ANNOTATION_SUFFIXES = ("_anno_realease_repath.jsonl", "_anno_repath.jsonl", "_anno.jsonl")


def find_split(fs: fsspec.AbstractFileSystem, root: str) -> str | None:
    """The folder holding `imgs/*.tgz` at or below `root` (train first), or None."""
    for candidate in (root, posixpath.join(root, "train"), posixpath.join(root, "data", "train"),
                      posixpath.join(root, "valid"), posixpath.join(root, "data", "valid")):
        imgs = posixpath.join(candidate, "imgs")
        if fs.isdir(imgs) and any(p.endswith(".tgz") for p in fs.ls(imgs, detail=False)):
            return candidate
    return None


def _annotation_file(fs: fsspec.AbstractFileSystem, split: str) -> str | None:
    names = sorted(posixpath.basename(p) for p in fs.ls(split, detail=False))
    for suffix in ANNOTATION_SUFFIXES:
        for name in names:
            if name.endswith(suffix) or name.endswith(suffix + ".tgz"):
                return posixpath.join(split, name)
    return None


def _annotation_lines(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    with fs.open(path, "rb") as handle:
        raw = handle.read()
    if path.endswith(".tgz"):
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jsonl")), None)
            if member is None:
                raise SourceError(f"{path}: holds no .jsonl file")
            raw = archive.extractfile(member).read()
    return raw.decode("utf-8").splitlines()


def load_prompts(fs: fsspec.AbstractFileSystem, path: str) -> tuple[dict[str, str], int]:
    """img_path (normalised, relative to imgs/) -> prompt, and the number of malformed lines skipped."""
    prompts: dict[str, str] = {}
    malformed = 0
    for line in _annotation_lines(fs, path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts[posixpath.normpath(row["img_path"])] = row.get("prompt")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            malformed += 1  # one bad line loses one caption, not the source
    return prompts, malformed


def list_journeydb(spec) -> list[dict]:
    """One item per image member of the split's archives (headers read in one pass per archive)."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    split = find_split(fs, root)
    if split is None:
        raise SourceError(f"{spec.path}: no JourneyDB imgs/NNN.tgz archives found")
    annotations = _annotation_file(fs, split)
    prompts, malformed = load_prompts(fs, annotations) if annotations else ({}, 0)
    items = []
    imgs = posixpath.join(split, "imgs")
    for archive in sorted(p for p in fs.ls(imgs, detail=False) if p.endswith(".tgz")):
        info = fs.info(archive)
        for order, (name, size) in enumerate(_members(fs, archive)):
            items.append(
                {"uri": f"{fs.unstrip_protocol(archive)}#{name}", "archive": archive, "member": name,
                 "order": order, "size": size, "caption": prompts.get(posixpath.normpath(name)),
                 "caption_key": posixpath.basename(name).rsplit(".", 1)[0],
                 "meta": {"annotations": posixpath.basename(annotations) if annotations else None,
                          "malformed_lines": malformed},
                 "file_size": info.get("size"), "file_mtime": str(info.get("mtime") or "")}
            )
    return items


def _members(fs: fsspec.AbstractFileSystem, archive: str) -> Iterator[tuple[str, int]]:
    try:
        with fs.open(archive, "rb") as handle, tarfile.open(fileobj=handle, mode="r|gz") as stream:
            for member in stream:
                if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                    yield member.name, member.size
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SourceError(f"{archive}: not a readable .tgz ({error})") from None


def read_journeydb(spec, items: list[dict]) -> Iterator[tuple[dict, bytes | Exception]]:
    """Member bytes: each archive of the part is streamed once, front to back, keeping only wanted members."""
    fs, _ = fsspec.core.url_to_fs(spec.path)
    by_archive: dict[str, dict[str, dict]] = {}
    for item in items:
        by_archive.setdefault(item["archive"], {})[item["member"]] = item
    results: dict[str, tuple[dict, bytes | Exception]] = {}
    for archive, wanted in by_archive.items():
        for name, item in wanted.items():
            if name.startswith("/") or ".." in name.split("/"):
                results[item["uri"]] = (item, ValueError(f"unsafe tar member name {name!r}"))
        try:
            with fs.open(archive, "rb") as handle, tarfile.open(fileobj=handle, mode="r|gz") as stream:
                for member in stream:
                    item = wanted.get(member.name)
                    if item is not None and item["uri"] not in results:
                        results[item["uri"]] = (item, stream.extractfile(member).read())
        except (tarfile.TarError, OSError, EOFError) as error:  # a truncated archive: its unread members
            for item in wanted.values():
                results.setdefault(item["uri"], (item, OSError(f"{archive}: {error}")))
        for item in wanted.values():
            results.setdefault(item["uri"], (item, FileNotFoundError(f"{item['member']} not in {archive}")))
    for item in items:
        yield results[item["uri"]]
