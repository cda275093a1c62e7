"""A table source's own columns in the catalog: `source.<column>` (scores, captions, ids of COYO, LAION,
PixelProse, Unsplash rows), written at ingest (pipelines/sources/table.py) and read by build filters
(`--filter 'source.punsafe<0.1'`), source policies (`dense = "source.vlm_caption"`) and `manifest stats`.
Their names keep the table's own spelling; readers compare them case-insensitively (LAION spells URL / TEXT).

Standard library only: the command line's settings import it at every start.
"""

from __future__ import annotations

from typing import Any

SOURCE_COLUMN_PREFIX = "source."


def source_values(row: dict[str, Any]) -> dict[str, Any]:
    """{column name lower-cased, without the prefix: value} of a catalog row's own source columns."""
    return {name[len(SOURCE_COLUMN_PREFIX):].lower(): value for name, value in row.items()
            if name.startswith(SOURCE_COLUMN_PREFIX)}
