"""Table sources (`--kind table`): Parquet, JSONL, CSV and TSV files whose rows hold image bytes or URLs.

Published URL lists read as they are distributed: COYO-700M and LAION (Parquet; LAION spells its columns
URL / TEXT), PixelProse (Parquet: url, original_caption, vlm_caption), Unsplash Lite (`photos.tsv000`,
tab-separated with a header: photo_image_url, photo_description, ai_description). Column names are
matched case-insensitively; `--image-column`, `--uri-column`, `--caption-column` win over the defaults.

Listing streams: a Parquet file is read one row group at a time, a CSV/TSV in blocks, so the driver never
holds a whole table (COYO is 700M rows in 128 files); items come out in uri order (`<file>#<row:09d>`, files
sorted by that key) and ingest cuts them into parts as they come.
- Rows of image bytes: the listing reads only the uri and caption columns; each item names its row group,
  which a part never splits (the worker reads its parts' row groups, each once, for the cells and the
  source columns).
- Rows of URLs or paths (COYO, LAION, PixelProse, Unsplash): each item carries its row's own fields
  (`fields`, JSON values; a value JSON lacks, e.g. a timestamp, as its text), so parts cut the table at any
  row: a URL table published as one row group per file (pyarrow's default is up to 1M rows a group; a TSV is
  one block) is still fetched by many workers at once. The worker types them back from the file's schema.
  For ingest, a Parquet file of URLs is listed from its footer alone (`list_table(ranges=True)`: a range
  item per row group), and the worker of each part makes its row items from the row group
  (`expand_ranges`), so the driver reads no row of it (COYO-700M); TSV / CSV / JSONL are listed per row.

Reading happens on the worker of a part: image-byte cells from the part's own row groups (each read once),
URLs fetched concurrently (pipelines/sources/url_fetch.py), relative paths against the table's folder. A
row that gives no bytes is yielded with its exception: FetchFailed carries the reason (http_404, timeout,
...) that the rejects table records.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from onegen.core.source_columns import SOURCE_COLUMN_PREFIX
from onegen.pipelines.sources.folder import file_stamp
from onegen.pipelines.sources.names import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    URI_COLUMNS,
    SourceError,
    pick_column,
)
from onegen.pipelines.sources.settings import SourceSpec
from onegen.pipelines.sources.url_fetch import Checked, FetchConfig, fetch_urls

_DELIMITED = re.compile(r"\.(csv|tsv)\d*$")  # Unsplash ships photos.tsv000
TABLE_FILE = re.compile(r"\.(parquet|jsonl)$|" + _DELIMITED.pattern)


def is_table_file(path: str) -> bool:
    return bool(TABLE_FILE.search(path))


def table_files(spec: SourceSpec) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The table files of the source, sorted by their uri key (so rows come out in uri order)."""
    fs, root = fsspec.core.url_to_fs(spec.path)
    found = [root] if fs.isfile(root) else [p for p in fs.find(root) if is_table_file(p)]
    return fs, sorted(found, key=lambda p: fs.unstrip_protocol(p) + "#")


def _delimiter(path: str) -> str:
    return "\t" if ".tsv" in posixpath.basename(path) else ","


def _schema(fs: fsspec.AbstractFileSystem, path: str) -> pa.Schema:
    with fs.open(path, "rb") as handle:
        if path.endswith(".parquet"):
            return pq.read_schema(handle)
        if path.endswith(".jsonl"):
            return pajson.read_json(handle).schema
        reader = pacsv.open_csv(handle, parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)))
        return reader.schema


def _column_chunks(fs: fsspec.AbstractFileSystem, path: str,
                   columns: list[str]) -> Iterator[tuple[int, int, dict[str, list]]]:
    """(row group, rows, {column: values}) over the whole file, one row group (or CSV block) in memory.
    With no columns only the row counts are read (Parquet: from the footer)."""
    with fs.open(path, "rb") as handle:
        if path.endswith(".parquet"):
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.metadata.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                table = parquet.read_row_group(group, columns=columns) if columns else None
                yield group, rows, {c: table.column(c).to_pylist() for c in columns} if table else {}
            return
        if path.endswith(".jsonl"):  # no row groups: the file is one group
            batches = pajson.read_json(handle).to_batches()
        else:  # as text, exactly as written (a CSV's types are only guessed, block by block)
            batches = pacsv.open_csv(handle, parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)),
                                     convert_options=pacsv.ConvertOptions(
                                         column_types={c: pa.string() for c in columns}))
        for batch in batches:
            yield 0, batch.num_rows, {c: batch.column(c).to_pylist() for c in columns}


def table_columns(spec: SourceSpec, schema: pa.Schema, path: str) -> tuple[str | None, str | None, str | None]:
    """(image column, uri column, caption column) of a table, by name (case-insensitive) or by flag."""
    names = schema.names
    image = pick_column(names, spec.image_column, IMAGE_COLUMNS, "image", path)
    uri = pick_column(names, spec.uri_column, URI_COLUMNS, "uri", path)
    caption = pick_column(names, spec.caption_column, CAPTION_COLUMNS, "caption", path)
    if image is None and uri is None:
        raise SourceError(
            f"{path}: no image bytes column ({'/'.join(IMAGE_COLUMNS)}) and no uri column "
            f"({'/'.join(URI_COLUMNS)}); columns are: {', '.join(names)}"
        )
    return image, uri, caption


def list_table(spec: SourceSpec, ranges: bool = False) -> Iterator[dict]:
    """One item per table row, streamed in uri order, with the file's stamp. Rows of image bytes carry their
    row group (`row_group`, which ingest parts never split); rows of URLs / paths carry their own fields
    (`fields`) instead, so parts may cut anywhere (module docstring).

    With `ranges`, a Parquet file of URLs / paths is listed from its footer alone: one range item per row
    group (`row` its first row, `rows` how many; no URL, no field), which stands for those rows in order
    and which ingest parts may cut anywhere (pipelines/sources/listing.py); the worker of a part reads its
    rows (`expand_ranges`). The driver then reads no row of such a table."""
    fs, paths = table_files(spec)
    for path in paths:
        try:
            schema = _schema(fs, path)
        except (pa.ArrowInvalid, OSError) as error:
            raise SourceError(f"{path}: not a readable table ({error})") from None
        image, uri, caption = table_columns(spec, schema, path)
        stamp, row, prefix = file_stamp(fs, path), 0, fs.unstrip_protocol(path)
        if ranges and not image and path.endswith(".parquet"):
            for group, rows in enumerate(_group_rows(fs, path)):
                if rows:
                    yield {"uri": f"{prefix}#{row:09d}", "table": path, "row": row, "rows": rows,
                           "row_group": f"{path}#{group}", "image_column": None, **stamp}
                row += rows
            continue
        read = [c for c in (uri, caption) if c] if image else schema.names  # URL rows: every field
        for group, rows, values in _column_chunks(fs, path, read):
            uris = values[uri] if uri else [None] * rows
            captions = values[caption] if caption else [None] * rows
            for index, (row_uri, row_caption) in enumerate(zip(uris, captions, strict=True)):
                item = {"uri": f"{prefix}#{row:09d}", "table": path, "row": row,
                        "image_column": image, "target": row_uri, "caption": row_caption, **stamp}
                if image:
                    item["row_group"] = f"{path}#{group}"
                else:
                    item["fields"] = {name: _jsonable(values[name][index]) for name in read}
                yield item
                row += 1


def _group_rows(fs: fsspec.AbstractFileSystem, path: str) -> list[int]:
    """Rows of each row group of a Parquet file, from its footer."""
    with fs.open(path, "rb") as handle:
        metadata = pq.ParquetFile(handle).metadata
        return [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]


_LAST_GROUP: dict[tuple, tuple[pa.Table, int]] = {}  # the row group a worker read last and its first row,
# by (path, group, stamp)


def expand_ranges(spec: SourceSpec, items: list[dict]) -> list[dict]:
    """`items` with every range item (`list_table(ranges=True)`) replaced by the row items it stands for,
    exactly as the per-row listing makes them (uri, target, caption, fields). Run on the worker of a part:
    its rows are read from their row group, and the last group read stays in memory, so the parts of one
    row group run one after another in a task (pipelines/jobs/ingest.py) read it once."""
    if not any("rows" in item for item in items):
        return items
    fs, _ = fsspec.core.url_to_fs(spec.path)
    expanded = []
    for item in items:
        if "rows" not in item:
            expanded.append(item)
            continue
        path, group = item["table"], int(item["row_group"].rsplit("#", 1)[1])
        key = (path, group, item["file_size"], item["file_mtime"])
        if key not in _LAST_GROUP:
            _LAST_GROUP.clear()
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                if group >= parquet.metadata.num_row_groups:
                    raise SourceError(f"{path}: has no row group {group} any more (the table changed since "
                                      f"this job listed it)")
                _LAST_GROUP[key] = parquet.read_row_group(group), _rows_before(parquet.metadata, group)
        table, first = _LAST_GROUP[key]
        _, uri, caption = table_columns(spec, table.schema, path)
        offset = item["row"] - first
        rows = table.slice(offset, item["rows"])
        if rows.num_rows != item["rows"]:  # the file was rewritten after the job listed it
            raise SourceError(f"{path}: row group {group} no longer holds rows {item['row']}-"
                              f"{item['row'] + item['rows'] - 1} (the table changed since this job listed it)")
        values = {name: rows.column(name).to_pylist() for name in rows.schema.names}
        stamp = {"file_size": item["file_size"], "file_mtime": item["file_mtime"]}
        prefix = item["uri"].rsplit("#", 1)[0]
        for index in range(item["rows"]):
            row = item["row"] + index
            expanded.append({"uri": f"{prefix}#{row:09d}", "table": path, "row": row, "image_column": None,
                             "target": values[uri][index] if uri else None,
                             "caption": values[caption][index] if caption else None, **stamp,
                             "fields": {name: _jsonable(values[name][index]) for name in rows.schema.names},
                             "kind": item["kind"]})
    return expanded


def _jsonable(value):
    """A cell as the listing's JSON keeps it: JSON's own types as they are, anything else as its text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def read_table_rows(spec: SourceSpec, items: list[dict], fetch: FetchConfig | None = None,
                    check=None) -> Iterator[tuple[dict, bytes | Checked | Exception]]:
    """Bytes of table rows, in item order: cells from their row groups (each read once), URLs fetched
    concurrently (`check` run on each body in its fetching thread: `url_fetch.Checked`), paths read from
    the table's folder; (item, exception) for a row that gives none."""
    fs, _ = fsspec.core.url_to_fs(spec.path)
    urls = [item for item in items if _is_url_row(item)]
    fetched = fetch_urls([item["target"] for item in urls], fetch or FetchConfig(), check)  # in flight from here
    loaded: dict[tuple[str, str], tuple[pa.Table, int]] = {}  # (row group, column) -> (cells, first row)
    for item in items:
        if _is_url_row(item):
            yield item, next(fetched)
            continue
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




def source_columns(items: list[dict]) -> pa.Table:
    """Every column of the items' table rows except the image bytes, typed as the table stores them,
    named `source.<column>`, one row per item in order (the catalog keeps them: scores, captions, ids).

    Read on the worker from the part's own row groups. CSV / TSV columns are strings (their types are
    only guessed per block, which could differ between the parts of one file)."""
    if not items:
        return pa.table({})
    fs, _ = fsspec.core.url_to_fs(items[0]["table"])
    if all("fields" in item for item in items):
        return _typed_fields(fs, items)
    pieces, loaded = [], {}
    for item in items:
        group = item.get("row_group") or f"{item['table']}#0"
        if group not in loaded:
            loaded[group] = (_read_fields(fs, item["table"], group, item["image_column"]),
                             _group_start(fs, item["table"], group))
        fields, first = loaded[group]
        pieces.append(fields.slice(item["row"] - first, 1))
    schemas = {piece.schema for piece in pieces}
    if len(schemas) > 1:  # files of one source with different columns: keep those all of them share
        shared = [name for name in pieces[0].schema.names if all(name in p.schema.names for p in pieces)]
        pieces = [piece.select(shared) for piece in pieces]
    table = pa.concat_tables(pieces, promote_options="permissive")
    return table.rename_columns([SOURCE_COLUMN_PREFIX + name for name in table.schema.names])


def _typed_fields(fs: fsspec.AbstractFileSystem, items: list[dict]) -> pa.Table:
    """`source.<column>` columns of URL / path rows from the fields their listing items carry, typed as
    their file's schema says (CSV / TSV: strings, as `_read_fields` reads them); a part spanning files with
    different columns keeps the columns all of them share, as for cells."""
    schemas = {path: _schema(fs, path) for path in dict.fromkeys(item["table"] for item in items)}
    names = [n for n in next(iter(schemas.values())).names if all(n in s.names for s in schemas.values())]
    columns = {}
    for name in names:
        types = {s.field(name).type for path, s in schemas.items()}
        kind = next(iter(types)) if len(types) == 1 and not _DELIMITED.search(items[0]["table"]) else pa.string()
        values = [item["fields"][name] for item in items]
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = [None if v is None else str(v) for v in values]
        try:
            columns[SOURCE_COLUMN_PREFIX + name] = pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a value JSON kept as text (timestamps, decimals)
            columns[SOURCE_COLUMN_PREFIX + name] = pa.array([None if v is None else str(v) for v in values]).cast(kind)
    return pa.table(columns)


def _read_fields(fs: fsspec.AbstractFileSystem, path: str, group: str, image_column: str | None) -> pa.Table:
    """The non-image columns of one row group (a whole JSONL / CSV file; CSV columns as strings)."""
    names = [n for n in _schema(fs, path).names if n != image_column]
    return _read_group(fs, path, group, names, strings=True)


def _is_url_row(item: dict) -> bool:
    target = item["target"]
    return not item["image_column"] and isinstance(target, str) and target.lower().startswith(("http://", "https://"))


def _table_cell(fs: fsspec.AbstractFileSystem, item: dict, loaded: dict) -> bytes:
    """The image bytes of one table row, reading its row group (or whole file) once into `loaded`."""
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
    return _read_group(fs, path, group, [column])


def _read_group(fs: fsspec.AbstractFileSystem, path: str, group: str, columns: list[str],
                strings: bool = False) -> pa.Table:
    """`columns` of row group `group` of a Parquet file (of the whole file for JSONL / CSV, which have no
    row groups); `strings`: CSV columns read as strings rather than typed by guess."""
    with fs.open(path, "rb") as handle:
        if path.endswith(".parquet"):
            return pq.ParquetFile(handle).read_row_group(int(group.rsplit("#", 1)[1]), columns=columns)
        if path.endswith(".jsonl"):
            return pajson.read_json(handle).select(columns)
        types = {name: pa.string() for name in columns} if strings else None
        return pacsv.read_csv(handle, parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)),
                              convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types))


def _group_start(fs: fsspec.AbstractFileSystem, path: str, group: str) -> int:
    """Index of the first row of row group `group` in its file."""
    index = int(group.rsplit("#", 1)[1])
    if not path.endswith(".parquet") or index == 0:
        return 0
    with fs.open(path, "rb") as handle:
        return _rows_before(pq.ParquetFile(handle).metadata, index)


def _rows_before(metadata: pq.FileMetaData, group: int) -> int:
    """Rows of a Parquet file before its row group `group` (the index of that group's first row)."""
    return sum(metadata.row_group(g).num_rows for g in range(group))
