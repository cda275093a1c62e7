"""Where the rows of one ingest part go as they are made: `PartOutput`.

Accepted rows stream into the part's catalog file (catalog/<source>/part-NNNNN.parquet, under a temporary
name) a row group at a time, as soon as `GROUP_BYTES` of images have arrived; rejects (small: no image
bytes) are kept until the end. `commit` then does what the commit rule of pipelines/jobs/ingest.py says,
in its order: the rejects file, then the catalog file (renamed into place only now, so nothing of the part
is visible before), its completion stamp and node in the file's metadata. `abort` leaves nothing.

Why stream: a part of 256 web images of 0.5 MB held whole would be ~130 MB of bodies plus as much again
in Arrow, per worker; streamed, a worker holds one row group. It also moves the part's disk writes into
the time its later images are still downloading, instead of after the last one.
"""

from __future__ import annotations

import pyarrow as pa

from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.manifests.schemas import CATALOG_SCHEMA, REJECTS_SCHEMA
from onegen.pipelines.runtime.unit_job import COMPLETION_STAMP
from onegen.pipelines.runtime.units import NODE_META, committed_by

GROUP_BYTES = 8 << 20  # image bytes per catalog row group
GROUP_ROWS = 1024  # rows per row group when images are small (or referenced)


class PartOutput:
    """The rows of part `index` of `source`, in order (`add`), then `commit` or `abort`.

    `fields`: the source row's own columns (`source.<column>`, pipelines/sources/table.py), a row per
    row `add` will be given, appended to the catalog columns of the accepted ones; None for sources
    without them."""

    def __init__(self, layout: DatasetLayout, source: str, index: int, fields: pa.Table | None):
        self.layout, self.source, self.index, self.fields = layout, source, index, fields
        extra = list(fields.schema) if fields is not None else []
        self.catalog = files.TableWriter(layout.catalog_part(source, index), pa.schema(list(CATALOG_SCHEMA) + extra),
                                         {NODE_META: committed_by(), **COMPLETION_STAMP})
        self.position = 0  # rows added so far: the row of `fields` the next one takes
        self.accepted: list[dict] = []  # the row group being gathered
        self.accepted_positions: list[int] = []
        self.accepted_bytes = 0
        self.catalog_rows = 0
        self.rejected: list[dict] = []

    def add(self, row: dict) -> None:
        if row["reject_reason"] is not None:
            self.rejected.append(row)
        else:
            self.accepted.append(row)
            self.accepted_positions.append(self.position)
            self.accepted_bytes += len(row.get("image") or b"") + sum(map(len, row.get("view_images") or ()))
            if self.accepted_bytes >= GROUP_BYTES or len(self.accepted) >= GROUP_ROWS:
                self._write_group()
        self.position += 1

    def commit(self) -> tuple[int, dict[str, int]]:
        """Commit the part (rejects, then catalog); (catalog rows, rejects by reason)."""
        try:
            self._write_group()
            rejects = _columns([{"source": row["source"], "uri": row["uri"], "key": row["key"],
                                 "reason": row["reject_reason"], "error": row["reject_error"], "stage": "ingest"}
                                for row in self.rejected], REJECTS_SCHEMA)
            files.commit_table(self.layout.rejects_part(self.source, self.index), rejects)
        except BaseException:
            self.catalog.abort()
            raise
        self.catalog.commit()
        reasons: dict[str, int] = {}
        for row in self.rejected:
            reasons[row["reject_reason"]] = reasons.get(row["reject_reason"], 0) + 1
        return self.catalog_rows, reasons

    def abort(self) -> None:
        self.catalog.abort()

    def _write_group(self) -> None:
        if not self.accepted and self.catalog_rows:
            return
        group = _columns(self.accepted, CATALOG_SCHEMA)  # an empty part still writes its (empty) group
        if self.fields is not None:
            kept = self.fields.take(pa.array(self.accepted_positions, pa.int64()))
            for name in kept.column_names:
                group = group.append_column(name, kept.column(name))
        self.catalog.write(group)
        self.catalog_rows += group.num_rows
        self.accepted, self.accepted_positions, self.accepted_bytes = [], [], 0


def _columns(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """`rows` as one table of `schema`, built column by column (a key a row lacks is a null; keys not in
    `schema` are dropped): `Table.from_pylist` took 150 ms for a part of 256 photos, this 6 ms."""
    return pa.table([pa.array([row.get(field.name) for row in rows], field.type) for field in schema], schema=schema)
