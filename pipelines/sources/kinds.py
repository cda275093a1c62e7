"""Sources: where raw images come from, listed deterministically and read in parts (no Ray here).

A source turns a user path into a sorted list of small, picklable item dicts
`{"uri": str, "caption": str | None, ...locator fields}` and reads the bytes of a list of items.
Kinds (`--kind`, or detected):

- folder      an image folder, recursive (jpg, jpeg, png, webp, gif, bmp, tif, tiff); captions from a
              sidecar `<stem>.txt`, or an imagefolder-style `metadata.jsonl` / `metadata.csv`
              (`file_name` + `text`/`caption`) anywhere above the file.
- table       Parquet or JSONL file(s) (a file, or a folder of them) with image bytes (column
              image/jpg/png/bytes/image_bytes, raw binary or a {bytes, path} struct) or URIs (column
              uri/url/path/image_path/file_name, relative to the table's folder), plus an optional caption
              column (caption/text/txt/prompt, or `--caption-column`).
- webdataset  existing WebDataset tars (a tar, or a folder of them); images are members with an image
              extension; captions from the `.txt` member or `.json` {"caption": ...}.
- hf          a Hugging Face `datasets` dataset saved with `save_to_disk` (folder with dataset_info.json
              / state.json, or a DatasetDict); image column of the datasets Image feature.
- scenes      a folder of multiview scene folders, each with a nerfstudio/instant-ngp `transforms.json`
              or a COLMAP model (`sparse/0` or `sparse`, images in `images/`); or CO3D category folders
              (`frame_annotations.jgz`/`.json`, image paths relative to the category's parent), one
              scene per sequence; one item per scene.
- subjects    an ID set: a folder of subject folders of photos of one person each; one item per photo,
              `group` = subject (parts never split a subject). Captions as for folders.

All I/O goes through fsspec, so s3:// and gs:// paths work the same as local ones. User errors
(missing path, empty source, wrong columns) raise `SourceError` with one line to print.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from onegen.core.errors import UserError
from onegen.pipelines.sources.folder import (
    folder_entries,
    iter_files,
    iter_folder,
    read_caption_sidecar,
    read_whole,
    stamp_of,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
IMAGE_COLUMNS = ("image", "jpg", "png", "bytes", "image_bytes")
URI_COLUMNS = ("uri", "url", "path", "image_path", "file_name")
CAPTION_COLUMNS = ("caption", "text", "txt", "prompt")


class SourceError(UserError):
    """A user error about the source itself; the message is one line for the terminal."""


@dataclass(frozen=True)
class SourceSpec:
    """What `onegen ingest` was asked to read. Fields are the whole configuration of a source."""

    path: str
    kind: str = "auto"  # auto | folder | table | webdataset | hf
    name: str = ""  # source name used in keys; default: the path's last component
    caption_column: str = ""
    image_column: str = ""
    uri_column: str = ""

    @property
    def source_name(self) -> str:
        base = self.name or posixpath.basename(self.path.rstrip("/")) or "source"
        slug = re.sub(r"[^a-z0-9_]+", "_", base.lower().split(".")[0]).strip("_")
        return slug or "source"


def detect_kind(spec: SourceSpec) -> str:
    """The source kind: the given one, or detected from what is at the path."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    if not fs.exists(root):
        raise SourceError(f"source path does not exist: {spec.path}")
    if spec.kind != "auto":
        return spec.kind
    if fs.isfile(root):
        if root.endswith((".parquet", ".jsonl", ".json")):
            return "table"
        if root.endswith(".tar"):
            return "webdataset"
        raise SourceError(f"cannot tell what kind of source {spec.path} is: pass --kind")
    entries = folder_entries(spec.path)  # the top folder once, names only ("name/" for a folder)
    if set(entries) & {"dataset_info.json", "state.json", "dataset_dict.json"}:
        return "hf"
    if any(_scene_reader(fs, posixpath.join(root, e[:-1])) for e in entries if e.endswith("/")):
        return "scenes"
    tars = tables = False
    for path in iter_files(spec.path):  # streamed: the first image decides, without listing the rest
        if path.endswith(IMAGE_EXTENSIONS):
            return "folder"
        tars = tars or path.endswith(".tar")
        tables = tables or path.endswith((".parquet", ".jsonl"))
    if tars:
        return "webdataset"
    if tables:
        return "table"
    raise SourceError(f"source folder has no images, tars, tables or dataset: {spec.path}")


STREAMED_KINDS = ("folder", "subjects")  # listed in uri order as they are walked


def iter_items(spec: SourceSpec) -> Iterator[dict]:
    """All items of the source in uri order (the order that defines ingest parts), as a stream.

    Folders and ID sets are walked one directory at a time (pipelines/sources/folder.py), so a listing
    of millions of files is never held whole; the other kinds are listed from their tables, tar
    headers, scene folders or dataset, then sorted. Raises SourceError for an empty source."""
    kind = detect_kind(spec)
    from onegen.pipelines.sources.tar import list_tars  # imported here: tar_source imports this module

    listers = {"folder": _list_folder, "table": _list_table, "webdataset": list_tars, "hf": _list_hf,
               "scenes": _list_scenes, "subjects": _list_subjects}
    if kind not in listers:
        raise SourceError(f"unknown source kind {kind!r}; use one of {sorted(listers)}")
    listed = listers[kind](spec)
    items = listed if kind in STREAMED_KINDS else iter(sorted(listed, key=lambda item: item["uri"]))
    empty = True
    for item in items:
        empty = False
        item["kind"] = kind
        yield item
    if empty:
        raise SourceError(f"source {spec.path} ({kind}) holds no items")


def list_items(spec: SourceSpec) -> list[dict]:
    """`iter_items` as a list (for a source small enough to hold; jobs stream it)."""
    return list(iter_items(spec))


def read_items(spec: SourceSpec, items: list[dict]) -> Iterator[tuple[dict, bytes | Exception]]:
    """(item, bytes) per item in order, or (item, exception) when that item could not be read."""
    from onegen.pipelines.sources.tar import read_tar_members

    readers = {"folder": _read_files, "table": _read_table_rows, "webdataset": read_tar_members, "hf": _read_hf,
               "subjects": _read_files}
    kind = items[0]["kind"] if items else "folder"
    yield from readers[kind](spec, items)


# --- folder ----------------------------------------------------------------------------------------
def _list_folder(spec: SourceSpec) -> Iterator[dict]:
    return iter_folder(spec.path, IMAGE_EXTENSIONS, CAPTION_COLUMNS)


def _read_files(spec: SourceSpec, items: list[dict]) -> Iterator[tuple[dict, bytes | Exception]]:
    fs, _ = fsspec.core.url_to_fs(spec.path)
    for item in items:
        try:
            data = read_whole(fs, item["path"])
            read_caption_sidecar(fs, item)
        except (OSError, UnicodeDecodeError) as error:  # an unreadable image or caption: a recorded reject
            yield item, error
            continue
        yield item, data


# --- multiview scenes and ID subjects -------------------------------------------------------------
CO3D_ANNOTATIONS = ("frame_annotations.jgz", "frame_annotations.json")


def _scene_reader(fs: fsspec.AbstractFileSystem, folder: str) -> str | None:
    """"nerfstudio", "colmap" or "co3d" when `folder` holds scenes of that layout, else None."""
    if fs.exists(posixpath.join(folder, "transforms.json")):
        return "nerfstudio"
    if any(fs.exists(posixpath.join(folder, name)) for name in CO3D_ANNOTATIONS):
        return "co3d"
    for sparse in ("sparse/0", "sparse"):
        if fs.exists(posixpath.join(folder, sparse, "cameras.bin")) or fs.exists(posixpath.join(folder, sparse, "cameras.txt")):
            return "colmap"
    return None


def _list_scenes(spec: SourceSpec) -> list[dict]:
    fs, root = fsspec.core.url_to_fs(spec.path)
    folders = [root] if _scene_reader(fs, root) else sorted(p for p in fs.ls(root, detail=False) if fs.isdir(p))
    items = []
    for folder in folders:
        reader = _scene_reader(fs, folder)
        if reader == "co3d":
            items.extend(_co3d_sequences(fs, folder))
        elif reader:
            size = sum(info.get("size") or 0 for info in fs.find(folder, detail=True).values())
            items.append({"uri": fs.unstrip_protocol(folder), "path": folder, "reader": reader, "size": size,
                          "caption": _scene_caption(fs, folder)})
    return items


def _co3d_sequences(fs: fsspec.AbstractFileSystem, folder: str) -> list[dict]:
    """One item per sequence of a CO3D category folder."""
    import gzip

    path = next(posixpath.join(folder, n) for n in CO3D_ANNOTATIONS if fs.exists(posixpath.join(folder, n)))
    with fs.open(path, "rb") as handle:
        raw = handle.read()
    frames = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    counts: dict[str, int] = {}
    for frame in frames:
        counts[frame["sequence_name"]] = counts.get(frame["sequence_name"], 0) + 1
    return [{"uri": f"{fs.unstrip_protocol(path)}#{name}", "path": path, "reader": "co3d", "sequence": name,
             "root": posixpath.dirname(folder.rstrip("/")), "size": count, "caption": None}
            for name, count in sorted(counts.items())]


def _scene_caption(fs: fsspec.AbstractFileSystem, folder: str) -> str | None:
    path = posixpath.join(folder, "caption.txt")
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return handle.read().strip() or None


def _list_subjects(spec: SourceSpec) -> Iterator[dict]:
    _, root = fsspec.core.url_to_fs(spec.path)
    for item in _list_folder(spec):
        relative = posixpath.relpath(item["path"], root)
        item["group"] = relative.split("/", 1)[0] if "/" in relative else ""
        if item["group"]:
            yield item


# --- tables ----------------------------------------------------------------------------------------
def _table_files(spec: SourceSpec) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, root = fsspec.core.url_to_fs(spec.path)
    files = [root] if fs.isfile(root) else sorted(p for p in fs.find(root) if p.endswith((".parquet", ".jsonl")))
    return fs, files


def _load_table(fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    with fs.open(path, "rb") as handle:
        if path.endswith(".parquet"):
            return pq.read_table(handle, columns=columns)
        table = pajson.read_json(handle)
        return table.select(columns) if columns else table


def _pick(names: list[str], wanted: str, candidates: tuple[str, ...], what: str, path: str) -> str | None:
    if wanted:
        if wanted not in names:
            raise SourceError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(names)})")
        return wanted
    return next((c for c in candidates if c in names), None)


def _table_columns(spec: SourceSpec, schema: pa.Schema, path: str) -> tuple[str | None, str | None, str | None]:
    names = schema.names
    image = _pick(names, spec.image_column, IMAGE_COLUMNS, "image", path)
    uri = _pick(names, spec.uri_column, URI_COLUMNS, "uri", path)
    caption = _pick(names, spec.caption_column, CAPTION_COLUMNS, "caption", path)
    if image is None and uri is None:
        raise SourceError(
            f"{path}: no image bytes column ({'/'.join(IMAGE_COLUMNS)}) and no uri column "
            f"({'/'.join(URI_COLUMNS)}); columns are: {', '.join(names)}"
        )
    return image, uri, caption


def _list_table(spec: SourceSpec) -> list[dict]:
    """One item per table row. Parquet rows carry their row group (`row_group`, which ingest parts
    never split, so each part reads only its own row groups) and the file's size and mtime."""
    fs, files = _table_files(spec)
    items = []
    for path in files:
        try:
            schema = _load_table(fs, path).schema if path.endswith(".jsonl") else pq.read_schema(fs.open(path, "rb"))
        except (pa.ArrowInvalid, OSError) as error:
            raise SourceError(f"{path}: not a readable table ({error})") from None
        image, uri, caption = _table_columns(spec, schema, path)
        table = _load_table(fs, path, [c for c in (uri, caption) if c])
        uris = table.column(uri).to_pylist() if uri else [None] * _num_rows(fs, path)
        captions = table.column(caption).to_pylist() if caption else [None] * len(uris)
        groups = _row_groups(fs, path, len(uris))
        stamp = file_stamp(fs, path)
        for row, (row_uri, row_caption) in enumerate(zip(uris, captions, strict=True)):
            items.append(
                {"uri": f"{fs.unstrip_protocol(path)}#{row:09d}", "table": path, "row": row,
                 "image_column": image, "target": row_uri, "caption": row_caption,
                 "row_group": f"{path}#{groups[row]}", **stamp}
            )
    return items


def _row_groups(fs: fsspec.AbstractFileSystem, path: str, rows: int) -> list[int]:
    """The row group of every row (JSONL: one group per file)."""
    if not path.endswith(".parquet"):
        return [0] * rows
    metadata = pq.ParquetFile(fs.open(path, "rb")).metadata
    groups: list[int] = []
    for group in range(metadata.num_row_groups):
        groups.extend([group] * metadata.row_group(group).num_rows)
    return groups


def file_stamp(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    """What a by-reference catalog checks before trusting bytes again: the file's size and mtime/etag."""
    return stamp_of(fs.info(path))


def _num_rows(fs: fsspec.AbstractFileSystem, path: str) -> int:
    if path.endswith(".parquet"):
        return pq.ParquetFile(fs.open(path, "rb")).metadata.num_rows
    return _load_table(fs, path).num_rows


def _read_table_rows(spec: SourceSpec, items: list[dict]) -> Iterator[tuple[dict, bytes | Exception]]:
    """Bytes of table rows: each Parquet row group (JSONL file) the items touch is read once."""
    fs, _ = fsspec.core.url_to_fs(spec.path)
    loaded: dict[tuple[str, str], tuple[pa.Table, int]] = {}  # (row group, column) -> (cells, first row)
    for item in items:
        try:
            if item["image_column"]:
                yield item, _table_cell(fs, item, loaded)
            else:
                target = item["target"]
                if not target:
                    raise ValueError("uri column is empty in this row")
                if "://" not in target and not target.startswith("/"):
                    target = fs.unstrip_protocol(posixpath.join(posixpath.dirname(item["table"]), target))
                with fsspec.open(target, "rb") as handle:
                    yield item, handle.read()
        except (OSError, ValueError, pa.ArrowException) as error:
            yield item, error


def _table_cell(fs: fsspec.AbstractFileSystem, item: dict, loaded: dict) -> bytes:
    """The image bytes of one table row, reading its row group (or JSONL file) once into `loaded`."""
    group = item.get("row_group") or f"{item['table']}#0"
    if (group, item["image_column"]) not in loaded:
        loaded[group, item["image_column"]] = (_load_group(fs, item["table"], group, item["image_column"]),
                                               _group_start(fs, item["table"], group))
    table, first = loaded[group, item["image_column"]]
    value = table.column(0)[item["row"] - first].as_py()
    data = value.get("bytes") if isinstance(value, dict) else value
    if isinstance(data, str):
        data = data.encode("latin-1")
    if data is None:
        raise ValueError("image column is empty in this row")
    return data


def _load_group(fs: fsspec.AbstractFileSystem, path: str, group: str, column: str) -> pa.Table:
    if not path.endswith(".parquet"):
        return _load_table(fs, path, [column])
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).read_row_group(int(group.rsplit("#", 1)[1]), columns=[column])


def _group_start(fs: fsspec.AbstractFileSystem, path: str, group: str) -> int:
    """Index of the first row of row group `group` in its file."""
    index = int(group.rsplit("#", 1)[1])
    if not path.endswith(".parquet") or index == 0:
        return 0
    metadata = pq.ParquetFile(fs.open(path, "rb")).metadata
    return sum(metadata.row_group(g).num_rows for g in range(index))


# --- Hugging Face datasets on disk -----------------------------------------------------------------
def _load_hf(spec: SourceSpec):
    import datasets

    loaded = datasets.load_from_disk(spec.path)
    if isinstance(loaded, datasets.DatasetDict):
        return datasets.concatenate_datasets([loaded[split] for split in sorted(loaded)])
    return loaded


def _list_hf(spec: SourceSpec) -> list[dict]:
    dataset = _load_hf(spec)
    image, _, caption = _hf_columns(spec, dataset)
    captions = dataset[caption] if caption else [None] * len(dataset)
    return [
        {"uri": f"{spec.path.rstrip('/')}#{row:09d}", "row": row, "image_column": image,
         "size": f"{dataset._fingerprint}", "caption": captions[row]}
        for row in range(len(dataset))
    ]


def _hf_columns(spec: SourceSpec, dataset) -> tuple[str, None, str | None]:
    names = list(dataset.column_names)
    image = _pick(names, spec.image_column, IMAGE_COLUMNS + ("img",), "image", spec.path)
    if image is None:
        raise SourceError(f"{spec.path}: no image column ({'/'.join(IMAGE_COLUMNS)}); columns are: {', '.join(names)}")
    return image, None, _pick(names, spec.caption_column, CAPTION_COLUMNS, "caption", spec.path)


def _read_hf(spec: SourceSpec, items: list[dict]) -> Iterator[tuple[dict, bytes | Exception]]:
    import datasets

    dataset = _load_hf(spec)
    column = items[0]["image_column"]
    undecoded = dataset.cast_column(column, datasets.Image(decode=False))
    rows = undecoded.select([item["row"] for item in items])[column]
    for item, value in zip(items, rows, strict=True):
        data = value.get("bytes") if isinstance(value, dict) else None
        if data is None and isinstance(value, dict) and value.get("path"):
            try:
                with fsspec.open(value["path"], "rb") as handle:
                    data = handle.read()
            except OSError as error:
                yield item, error
                continue
        yield (item, data) if data is not None else (item, ValueError("image cell holds no bytes"))
