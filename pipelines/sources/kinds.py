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
              (read by pipelines/sources/co3d.py), one scene per sequence; one item per scene.
- subjects    an ID set: a folder of subject folders of photos of one person each; one item per photo,
              `group` = subject (parts never split a subject). Captions as for folders.
Published sources, each read as distributed (their modules name the files the format was read from):
- dl3dv       DL3DV-10K `<batch>/<hash>/transforms.json` + images_4 / images_8 (pipelines/sources/dl3dv.py);
              one scene per hash; detected.
- hypersim    Hypersim `ai_VVV_NNN/` scenes: one photo per tonemapped frame, its camera and its
              ground-truth depth in meta (pipelines/sources/hypersim.py); detected.
- co3d        CO3D v2 `<category>/{frame,sequence}_annotations.jgz` + `<category>/<sequence>/` (pipelines/
              sources/co3d.py): one scene per sequence, depth and masks named per view in meta; detected.
- journeydb   JourneyDB `data/train/imgs/NNN.tgz` + the annotation jsonl (pipelines/sources/journeydb.py);
              detected.
- gobjaverse  G-Objaverse renders `<dictionary_id>/<instance_id>/[campos_512_v4/]NNNNN/NNNNN.{png,json}`
              (pipelines/sources/gobjaverse.py); one scene per object, named by its Objaverse uid when
              the index-to-objaverse mapping is beside it; `ids` keeps listed objects (LGM's 80K); detected.

Scenes of every kind take `max_views` (evenly spaced frames, at ingest). `captions` joins a caption
table (CSV / Parquet / JSONL, e.g. Cap3D's header-less CSV) onto any kind's items by key
(pipelines/sources/caption_tables.py).

All I/O goes through fsspec, so s3:// and gs:// paths work the same as local ones. User errors
(missing path, empty source, wrong columns) raise `SourceError` with one line to print.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec

from onegen.pipelines.sources import co3d, dl3dv, gobjaverse, hypersim, journeydb
from onegen.pipelines.sources.folder import (
    folder_entries,
    iter_files,
    iter_folder,
    read_caption_sidecar,
    read_whole,
)
from onegen.pipelines.sources.names import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    IMAGE_EXTENSIONS,
    SourceError,
    pick_column,
)
from onegen.pipelines.sources.settings import SourceSpec
from onegen.pipelines.sources.table import is_table_file, list_table, read_table_rows
from onegen.pipelines.sources.tar import list_tars, read_tar_members
from onegen.pipelines.sources.url_fetch import FetchConfig


def detect_kind(spec: SourceSpec) -> str:
    """The source kind: the given one, or detected from what is at the path."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    if not fs.exists(root):
        raise SourceError(f"source path does not exist: {spec.path}")
    if spec.kind != "auto":
        return spec.kind
    if fs.isfile(root):
        if root.endswith(".json") or is_table_file(root):
            return "table"
        if root.endswith(".tar"):
            return "webdataset"
        raise SourceError(f"cannot tell what kind of source {spec.path} is: pass --kind")
    entries = folder_entries(spec.path)  # the top folder once, names only ("name/" for a folder)
    if set(entries) & {"dataset_info.json", "state.json", "dataset_dict.json"}:
        return "hf"
    published = _published_kind(fs, root)
    if published:
        return published
    if any(_scene_reader(fs, posixpath.join(root, e[:-1])) for e in entries if e.endswith("/")):
        return "scenes"
    tars = tables = False
    for path in iter_files(spec.path):  # streamed: the first image decides, without listing the rest
        if path.endswith(IMAGE_EXTENSIONS):
            return "folder"
        tars = tars or path.endswith(".tar")
        tables = tables or is_table_file(path)
    if tars:
        return "webdataset"
    if tables:
        return "table"
    raise SourceError(f"source folder has no images, tars, tables or dataset: {spec.path}")


STREAMED_KINDS = ("folder", "subjects", "table")  # listed in uri order as they are walked / read
SCENE_KINDS = ("scenes", "dl3dv", "co3d", "gobjaverse")  # one catalog row (kind "scene") per item


def _published_kind(fs: fsspec.AbstractFileSystem, root: str) -> str | None:
    """The published layout at `root` when it is unambiguous (a handful of `ls`/`exists` calls)."""
    if hypersim.looks_like_hypersim(fs, root):
        return "hypersim"
    if journeydb.find_split(fs, root):
        return "journeydb"
    if dl3dv.looks_like_dl3dv(fs, root):
        return "dl3dv"
    if co3d.looks_like_co3d(fs, root):
        return "co3d"
    if gobjaverse.looks_like_gobjaverse(fs, root):
        return "gobjaverse"
    return None


def _listers() -> dict:
    return {"folder": _list_folder, "table": list_table, "webdataset": list_tars, "hf": _list_hf,
            "scenes": _list_scenes, "subjects": _list_subjects, "dl3dv": dl3dv.list_dl3dv,
            "hypersim": hypersim.list_hypersim, "journeydb": journeydb.list_journeydb, "co3d": co3d.list_co3d,
            "gobjaverse": gobjaverse.list_gobjaverse}


def iter_items(spec: SourceSpec, ranges: bool = False) -> Iterator[dict]:
    """All items of the source in uri order (the order that defines ingest parts), as a stream.

    Folders and ID sets are walked one directory at a time (pipelines/sources/folder.py), so a listing
    of millions of files is never held whole; the other kinds are listed from their tables, tar
    headers, scene folders or dataset, then sorted. Raises SourceError for an empty source. With
    `ranges` (ingest's listing), a Parquet table of URLs comes as range items read from its footers
    (pipelines/sources/table.py `list_table`), unless captions are joined to it (a join needs each row)."""
    kind = detect_kind(spec)
    listers = _listers()
    if kind not in listers:
        raise SourceError(f"unknown source kind {kind!r}; use one of {sorted(listers)}")
    if spec.ids and kind != "gobjaverse":
        raise SourceError(f"--ids selects objects of a gobjaverse source, not of a {kind} source")
    if spec.views_as_photos and kind not in SCENE_KINDS:
        raise SourceError(f"--views-as-photos turns scenes' views into photos; a {kind} source has no scenes")
    listed = list_table(spec, ranges=not spec.captions) if kind == "table" and ranges else listers[kind](spec)
    items = listed if kind in STREAMED_KINDS else iter(sorted(listed, key=lambda item: item["uri"]))
    if spec.captions:
        items = _with_captions(spec, items)
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


def read_items(spec: SourceSpec, items: list[dict], check=None) -> Iterator[tuple[dict, bytes | Exception]]:
    """(item, bytes) per item in order, or (item, exception) when that item could not be read. `check`
    (bytes -> anything, never raising for bad data): a URL table runs it on each body in the thread that
    fetched it and yields `url_fetch.Checked(bytes, result)` instead of the bytes; other kinds ignore it."""
    if items and items[0]["kind"] == "table":
        yield from _read_table(spec, items, check)
        return
    readers = {"folder": _read_files, "webdataset": read_tar_members, "hf": _read_hf,
               "subjects": _read_files, "hypersim": hypersim.read_hypersim, "journeydb": journeydb.read_journeydb}
    kind = items[0]["kind"] if items else "folder"
    yield from readers[kind](spec, items)


class SceneReader:
    """The catalog rows of one part's scene items (kinds in SCENE_KINDS), in order, each by the reader
    its listing named; CO3D sequences share one parse of their category's frame annotations per part
    (pipelines/sources/co3d.py `PartReader`). `read` raises for a bad scene (Rejected, OSError,
    ValueError, KeyError, JSONDecodeError): the caller's reject."""

    def __init__(self, spec: SourceSpec, items: list[dict]):
        self.spec = spec
        self._co3d = co3d.PartReader(items, spec.source_name, spec.max_views or None, spec.min_viewpoint_quality)

    def read(self, item: dict) -> dict:
        if item["reader"] == co3d.READER:
            return self._co3d.read(item)
        return read_scene(self.spec, item)


def read_scene(spec: SourceSpec, item: dict) -> dict:
    """The catalog row of one scene item of a transforms.json, COLMAP or DL3DV folder (CO3D sequences are
    read per part: `SceneReader`). Raises for a bad scene (OSError, ValueError, KeyError, JSONDecodeError)."""
    from onegen.pipelines.sources.dl3dv import read_dl3dv_scene
    from onegen.pipelines.sources.scene_cameras import read_colmap, read_transforms_json

    source, views = spec.source_name, spec.max_views or None
    if item["reader"] == "dl3dv":
        return read_dl3dv_scene(item, source, views)
    if item["reader"] == "gobjaverse":
        return gobjaverse.read_gobjaverse_scene(item, source, views)
    reader = read_transforms_json if item["reader"] == "nerfstudio" else read_colmap
    return reader(item["path"], source=source, max_views=views)


def _with_captions(spec: SourceSpec, items: Iterator[dict]) -> Iterator[dict]:
    from onegen.core.job_output import terminal_stderr
    from onegen.pipelines.sources.caption_tables import CaptionJoin, CaptionTableError, join_captions

    try:
        join = CaptionJoin(spec.captions, spec.caption_key, spec.caption_text)
    except CaptionTableError as error:
        raise SourceError(str(error)) from None
    return join_captions(items, join, lambda line: print(line, file=terminal_stderr()))


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
def _scene_reader(fs: fsspec.AbstractFileSystem, folder: str) -> str | None:
    """"nerfstudio", "colmap" or "co3d" when `folder` holds scenes of that layout, else None."""
    if fs.exists(posixpath.join(folder, "transforms.json")):
        return "nerfstudio"
    if co3d.is_category(fs, folder):
        return co3d.READER
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
        if reader == co3d.READER:
            items.extend(co3d.category_items(fs, folder))
        elif reader:
            size = sum(info.get("size") or 0 for info in fs.find(folder, detail=True).values())
            items.append({"uri": fs.unstrip_protocol(folder), "path": folder, "reader": reader, "size": size,
                          "caption": _scene_caption(fs, folder), "caption_key": posixpath.basename(folder)})
    return items


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


# --- tables (pipelines/sources/table.py) ------------------------------------------------------------
def _read_table(spec: SourceSpec, items: list[dict], check=None) -> Iterator[tuple[dict, bytes | Exception]]:
    fetch = FetchConfig(concurrency=spec.fetch_concurrency, read_timeout=spec.fetch_timeout,
                        body_timeout=spec.fetch_body_timeout, retries=spec.fetch_retries)
    return read_table_rows(spec, items, fetch, check)


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
    image = pick_column(names, spec.image_column, IMAGE_COLUMNS + ("img",), "image", spec.path)
    if image is None:
        raise SourceError(f"{spec.path}: no image column ({'/'.join(IMAGE_COLUMNS)}); columns are: {', '.join(names)}")
    return image, None, pick_column(names, spec.caption_column, CAPTION_COLUMNS, "caption", spec.path)


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
