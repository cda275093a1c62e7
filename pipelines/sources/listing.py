"""A source's listing, cut into ingest parts as it streams, and spilled to a file the workers read.

The driver of an ingest job never holds the whole listing: `list_parts` walks the source's items
(pipelines/sources/kinds.py `iter_items`, in uri order), cuts them into parts as they come, hashes them
for the job record and, when given a spill path, writes each part as one row group of a Parquet file
(`jobs/ingest-<source>.listing.parquet`, columns `uri` and `item` = the item as JSON) under the commit
rule. An ingest unit then carries only (spill path, part index); the worker reads its own row group
(`read_part`). The spill is rewritten by every run from the listing it made, so it is always the
listing the job record's fingerprint describes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
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
    part_sizes: tuple[int, ...]  # items of part i
    spill: str = ""  # the spill file ("" when none was written)


def list_parts(spec: SourceSpec, rows_per_part: int, spill: str = "") -> Listing:
    """Stream `spec`'s listing into parts of `rows_per_part` (see `iter_parts`); write `spill` if given."""
    digest, sizes, count = ListingDigest(), [], 0
    pending = files.begin_commit(spill) if spill else None
    writer = pq.ParquetWriter(pending.scratch, SPILL_SCHEMA) if pending else None
    try:
        for part in iter_parts(iter_items(spec), rows_per_part):
            for item in part:
                digest.add(item)
            count += len(part)
            sizes.append(len(part))
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
    return Listing(count, digest.hexdigest(), tuple(sizes), spill)


def read_part(spill: str, index: int) -> list[dict]:
    """The items of part `index` of a spilled listing (one row group read)."""
    fs, path = files.filesystem(spill)
    with fs.open(path, "rb") as handle:
        column = pq.ParquetFile(handle).read_row_group(index, columns=["item"]).column("item")
    return [json.loads(text) for text in column.to_pylist()]


def iter_parts(items: Iterable[dict], rows_per_part: int) -> Iterator[list[dict]]:
    """Consecutive parts of at most `rows_per_part` items; items sharing a `group` (an ID subject) or a
    `row_group` (a Parquet row group, so each part reads only its own) stay in one part, which may
    then be larger."""
    part: list[dict] = []
    for item in items:
        together = item.get("group") or item.get("row_group")
        same_group = part and together and (part[-1].get("group") or part[-1].get("row_group")) == together
        if part and len(part) >= rows_per_part and not same_group:
            yield part
            part = []
        part.append(item)
    if part:
        yield part


def cut_parts(items: Iterable[dict], rows_per_part: int) -> list[list[dict]]:
    """`iter_parts` as a list."""
    return list(iter_parts(items, rows_per_part))


class ListingDigest:
    """The listing fingerprint, fed one item at a time."""

    def __init__(self):
        self._digest = hashlib.sha256()

    def add(self, item: dict) -> None:
        self._digest.update(f"{item['uri']}\0{item.get('size', '')}\n".encode())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
