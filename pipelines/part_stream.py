"""Assembling an ordered Ray Data stream back into committed parts (the unit of resume).

Every job in pipelines/ maps rows that carry a `_part` column (the index of the part they belong
to) through Ray Data with `preserve_order` on, so the rows of a part arrive together and in input
order. `commit_stream` cuts the stream where `_part` changes and hands each complete part to a
commit callback, which writes it atomically. A part is committed whole or not at all, so a job
killed at any moment and rerun redoes only the parts that have no committed file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa
from tqdm.auto import tqdm

PART_COLUMN = "_part"


def commit_stream(
    batches: Iterable[pa.Table],
    expected_rows: dict[int, int],
    commit: Callable[[int, pa.Table], None],
    description: str,
    progress: bool = True,
) -> None:
    """Group the ordered `batches` by `_part`; call `commit(part, rows)` once per complete part.

    `expected_rows` maps each pending part to its row count: a part that arrives with a different
    count (or out of order) is an infrastructure failure and raises before anything is committed.
    """
    pending_parts = list(expected_rows)
    bar = tqdm(total=len(pending_parts), desc=description, unit="part", disable=not progress)
    current: int | None = None
    pieces: list[pa.Table] = []

    def flush() -> None:
        rows = pa.concat_tables(pieces, promote_options="permissive") if pieces else None
        if current is None or rows is None:
            return
        if rows.num_rows != expected_rows[current]:
            raise RuntimeError(f"part {current}: {rows.num_rows} rows arrived, expected {expected_rows[current]}")
        commit(current, rows.drop_columns([PART_COLUMN]))
        bar.update(1)

    seen: set[int] = set()
    for batch in batches:
        if batch.num_rows == 0:
            continue
        parts = batch.column(PART_COLUMN).to_pylist()
        start = 0
        for index in range(1, len(parts) + 1):
            if index < len(parts) and parts[index] == parts[start]:
                continue
            part = parts[start]
            if part != current:
                flush()
                if part in seen or part not in expected_rows:
                    raise RuntimeError(f"part {part} arrived out of order: the stream lost its order")
                seen.add(part)
                current, pieces = part, []
            pieces.append(batch.slice(start, index - start))
            start = index
    flush()
    bar.close()
    missing = set(pending_parts) - seen
    if missing:
        raise RuntimeError(f"parts {sorted(missing)[:5]} produced no rows")
