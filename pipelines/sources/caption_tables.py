"""Captions joined by key at ingest: a caption table attaches its text to a source's items.

A caption table is a CSV, Parquet or JSONL file (fsspec path) with a key column and a caption column:
- named columns: `key_column` / `caption_column` (defaults: the first of uid / id / key / file_name /
  img_path, and of caption / text / prompt);
- a CSV WITHOUT a header row, as Cap3D publishes `Cap3D_automated_Objaverse_full.csv` (rows
  `uid,caption`, read in its README with `pd.read_csv(..., header=None)`): give the columns by position,
  `key_column="0"`, `caption_column="1"`. A CSV whose columns are named by position is read header-less.
(Cap3D's repository could not be read here; the header-less `uid,caption` rows are as the issue quotes
them and as every loader of that file we found reads it.)

Keys: each item names its own `caption_key` (a scene's folder name, which is the Objaverse uid for
per-object renders; a JourneyDB image's file stem; a CO3D sequence name); without one, the stem of
the last component of its uri. A table key is matched as given and by its own stem (so `./000/a.jpg`
in a table matches an item keyed `a`). The table's caption replaces the source's own; an item whose
key has no caption keeps its own and is counted: `join_captions` reports how many, with examples, on
the terminal, and every joined item records `caption_key` and `caption_joined` in its meta. Never an
error: a caption table rarely covers a whole source (Cap3D's 785k captions vs. a render set).

The table is read once, on the driver, while the listing streams (a dict of key -> caption; Cap3D's
785k rows are about 150 MB of Python strings).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterator

import fsspec
import pyarrow.parquet as pq

KEY_COLUMNS = ("uid", "id", "key", "file_name", "img_path")
TEXT_COLUMNS = ("caption", "text", "prompt")


class CaptionTableError(ValueError):
    """The caption table cannot be used as asked (missing file or column); one line for the terminal."""


def key_stem(key: str) -> str:
    """A key without folders and extension ("./000/a.jpg" -> "a", "0/10005" -> "10005")."""
    base = posixpath.basename(str(key).split("#", 1)[0].rstrip("/"))
    return base.split(".", 1)[0] if "." in base else base


def load_caption_table(path: str, key_column: str = "", caption_column: str = "") -> dict[str, str]:
    """key -> caption of every row with both (later rows win); each key also under its stem."""
    try:
        with fsspec.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, ValueError) as error:
        raise CaptionTableError(f"caption table {path}: {error}") from None
    rows = _rows(path, raw, key_column, caption_column)
    captions: dict[str, str] = {}
    for key, text in rows:
        if key is None or text is None or str(text).strip() == "":
            continue
        captions[str(key)] = str(text).strip()
    by_stem = {key_stem(key): text for key, text in captions.items() if key_stem(key) not in captions}
    return {**by_stem, **captions}


def _rows(path: str, raw: bytes, key_column: str, caption_column: str) -> Iterator[tuple]:
    positional = key_column.isdigit() and caption_column.isdigit()
    if path.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(raw))
        key, text = _columns(path, table.column_names, key_column, caption_column)
        return zip(table.column(key).to_pylist(), table.column(text).to_pylist(), strict=True)
    if path.endswith((".jsonl", ".json")):
        records = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
        names = list(records[0]) if records else []
        key, text = _columns(path, names, key_column, caption_column)
        return ((r.get(key), r.get(text)) for r in records)
    reader = csv.reader(io.StringIO(raw.decode("utf-8")))
    if positional:
        k, t = int(key_column), int(caption_column)
        return ((row[k], row[t]) for row in reader if len(row) > max(k, t))
    header = next(reader, [])
    key, text = _columns(path, header, key_column, caption_column)
    k, t = header.index(key), header.index(text)
    return ((row[k], row[t]) for row in reader if len(row) > max(k, t))


def _columns(path: str, names: list[str], key_column: str, caption_column: str) -> tuple[str, str]:
    key = key_column or next((c for c in KEY_COLUMNS if c in names), "")
    text = caption_column or next((c for c in TEXT_COLUMNS if c in names), "")
    for wanted, what in ((key, "key"), (text, "caption")):
        if not wanted or wanted not in names:
            raise CaptionTableError(
                f"caption table {path}: no {what} column {wanted!r} (columns: {', '.join(map(str, names))}); "
                "a CSV without a header names its columns by position, e.g. key 0 and caption 1"
            )
    return key, text


def item_caption_key(item: dict) -> str:
    """The key an item is joined by: its own `caption_key`, else its uri's last stem."""
    return item.get("caption_key") or key_stem(item["uri"])


class CaptionJoin:
    """Joins a table's captions onto items as they stream, and counts the keys it found no caption for."""

    def __init__(self, path: str, key_column: str = "", caption_column: str = ""):
        self.path = path
        self.captions = load_caption_table(path, key_column, caption_column)
        self.joined = 0
        self.missing = 0
        self.missing_examples: list[str] = []

    def apply(self, item: dict) -> dict:
        key = item_caption_key(item)
        text = self.captions.get(key)
        if text is None:
            text = self.captions.get(key_stem(key))
        meta = dict(item.get("meta") or {})
        meta.update(caption_key=key, caption_joined=text is not None)
        item["meta"] = meta
        if text is None:
            self.missing += 1
            if len(self.missing_examples) < 3:
                self.missing_examples.append(key)
        else:
            self.joined += 1
            item["caption"] = text
        return item

    def report(self) -> str:
        """One line: how many items got a caption, how many keys had none (with examples)."""
        line = f"captions from {self.path}: {self.joined} items joined"
        if self.missing:
            line += f", {self.missing} keys without a caption (e.g. {', '.join(self.missing_examples)})"
        return line


def join_captions(items: Iterator[dict], join: CaptionJoin, report) -> Iterator[dict]:
    """`items` with captions joined; `report(line)` is called once with the counts at the end."""
    for item in items:
        yield join.apply(item)
    report(join.report())
