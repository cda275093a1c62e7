"""A source's listing, cut into ingest parts as it streams, and spilled to a file the workers read.

The driver of an ingest job never holds the whole listing: `list_parts` walks the source's items
(pipelines/sources/kinds.py `iter_items`, in uri order), cuts them into parts as they come, hashes them
for the job record and, when given a spill path, writes each part as one row group of a Parquet file
(`jobs/ingest-<source>.listing.parquet`, columns `uri` and `item` = the item as JSON) under the commit
rule. An ingest unit then carries only (spill path, part index); the worker reads its own row group
(`read_part`). The spill is rewritten by every run from the listing it made, so it is always the
listing the job record's fingerprint describes.

A Parquet table of URLs is listed as range items (pipelines/sources/table.py `list_table(ranges=True)`: a
row group's first row and row count, read from the footer): an item of `rows` rows counts as that many,
and a part cuts it where it fills (`split_range`), so parts hold `rows_per_part` rows as for any source
while the driver reads no row. The fingerprint hashes each row's uri as the per-row listing does, so a job
recorded from one listing is the same job under the other. A part that is one slice of a larger row
group names that group (`Listing.part_groups`): ingest runs the parts of one group in one task, which
reads the group once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onegen.manifests import files
from onegen.pipelines.sources.kinds import iter_items
from onegen.pipelines.sources.settings import SourceSpec

SPILL_SCHEMA = pa.schema([("uri", pa.string()), ("item", pa.string())])


@dataclass(frozen=True)
class Listing:
    """What the driver keeps of a listing: counts, the fingerprint, the spill's path."""

    items: int
    fingerprint: str  # sha256 over (uri, size) of every item: a changed input changes it
    part_sizes: tuple[int, ...]  # items of part i (rows, for range items)
    spill: str = ""  # the spill file ("" when none was written)
    part_groups: tuple[str, ...] = ()  # part i's row group when it is one slice of a larger one, else ""


def list_parts(spec: SourceSpec, rows_per_part: int, spill: str = "") -> Listing:
    """Stream `spec`'s listing into parts of `rows_per_part` (see `iter_parts`); write `spill` if given."""
    digest, sizes, groups, count = ListingDigest(), [], [], 0
    pending = files.begin_commit(spill) if spill else None
    # a row group per part, read by its index only: no column statistics (1.8 KB -> 0.5 KB a part)
    writer = pq.ParquetWriter(pending.scratch, SPILL_SCHEMA, write_statistics=False) if pending else None
    try:
        for part in iter_parts(iter_items(spec, ranges=True), rows_per_part):
            for item in part:
                digest.add(item)
            rows = sum(item_rows(item) for item in part)
            count += rows
            sizes.append(rows)
            groups.append(part[0]["row_group"] if len(part) == 1 and part[0].get("split") else "")
            if writer:
                column = {"uri": [item["uri"] for item in part], "item": [json.dumps(item) for item in part]}
                writer.write_table(pa.table(column, schema=SPILL_SCHEMA), row_group_size=len(part))
        if writer:
            writer.close()
            writer = None
            files.end_commit(pending)
    except BaseException:
        if writer:
            writer.close()
        if pending:
            files.abort_commit(pending)
        raise
    return Listing(count, digest.hexdigest(), tuple(sizes), spill, tuple(groups))


def read_part(spill: str, index: int) -> list[dict]:
    """The items of part `index` of a spilled listing (one row group read)."""
    fs, path = files.filesystem(spill)
    with fs.open(path, "rb") as handle:
        column = pq.ParquetFile(handle).read_row_group(index, columns=["item"]).column("item")
    return [json.loads(text) for text in column.to_pylist()]


def iter_parts(items: Iterable[dict], rows_per_part: int) -> Iterator[list[dict]]:
    """Consecutive parts of at most `rows_per_part` items; items sharing a `group` (an ID subject) or a
    `row_group` (a Parquet row group, so each part reads only its own) stay in one part, which may
    then be larger. A range item (`rows`) counts as its rows and is cut where a part fills."""
    part: list[dict] = []
    size = 0
    for item in items:
        if "rows" in item:
            while size + item["rows"] > rows_per_part:
                head, item = split_range(item, rows_per_part - size)
                if head:
                    part.append(head)
                yield part
                part, size = [], 0
            if item["rows"]:
                part.append(item)
                size += item["rows"]
            continue
        together = item.get("group") or item.get("row_group")
        same_group = part and together and (part[-1].get("group") or part[-1].get("row_group")) == together
        if part and size >= rows_per_part and not same_group:
            yield part
            part, size = [], 0
        part.append(item)
        size += 1
    if part:
        yield part


def split_range(item: dict, rows: int) -> tuple[dict | None, dict]:
    """A range item's first `rows` rows and the rest (None when `rows` is 0), both marked as slices of
    their row group (`split`)."""
    if rows <= 0:
        return None, item
    prefix, start = item["uri"].rsplit("#", 1)[0], item["row"] + rows
    head = {**item, "rows": rows, "split": True}
    tail = {**item, "uri": f"{prefix}#{start:09d}", "row": start, "rows": item["rows"] - rows, "split": True}
    return head, tail


def item_rows(item: dict) -> int:
    """How many rows an item stands for: a range item its `rows`, any other 1."""
    return item.get("rows", 1)


def cut_parts(items: Iterable[dict], rows_per_part: int) -> list[list[dict]]:
    """`iter_parts` as a list."""
    return list(iter_parts(items, rows_per_part))


class ListingDigest:
    """The listing fingerprint, fed one item at a time."""

    def __init__(self):
        self._digest = hashlib.sha256()

    def add(self, item: dict) -> None:
        if "rows" in item:  # each row's uri, as the per-row listing of the same table hashes them
            prefix, size = item["uri"].rsplit("#", 1)[0], item.get("size", "")
            for start in range(item["row"], item["row"] + item["rows"], 1 << 20):
                stop = min(start + (1 << 20), item["row"] + item["rows"])
                self._digest.update(_row_lines(prefix, start, stop, size))
            return
        self._digest.update(f"{item['uri']}\0{item.get('size', '')}\n".encode())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _row_lines(prefix: str, start: int, stop: int, size) -> memoryview:
    """The bytes of f"{prefix}#{row:09d}\\0{size}\\n" for row in [start, stop), made by Arrow (a COYO file's
    millions of rows in milliseconds): the values of a fresh string array lie back to back in its data
    buffer."""
    numbers = pc.utf8_lpad(pa.array(np.arange(start, stop, dtype=np.int64)).cast(pa.string()), 9, "0")
    lines = pc.binary_join_element_wise(prefix + "#", numbers, f"\0{size}\n", "")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    return memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]]
