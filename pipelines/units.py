"""Units of work on Ray workers: the driver plans them, workers commit them, the driver reads records.

Every job in pipelines/ has one shape (DESIGN §2, "Who writes"):

    driver: plan units (small JSON dicts) -> unit_dataset(units)
    workers: map stages that read, compute and commit each unit, the last one returning one record
             row per unit (`RECORD_SCHEMA`: a single JSON string column)
    driver: collect_records(dataset) iterates those records only, in whatever order units finish

so no row data or sample bytes ever reach the driver, and a slow unit holds back nobody
(`preserve_order` is off). A unit is committed by the worker that made it, under the commit rule of
manifests/store.py; a unit whose commit marker exists is skipped by the next run's plan.

Block discipline: `configure_unit_context` disables Ray Data's block splitting
(`target_max_block_size = None`), so a map task turns one input block into one output block and every
row of a unit stays in one block through an actor pool; a commit stage still checks that each unit
arrived whole (`UnitIncomplete` is a bug, never data). Units bound the size of a block.

Retries: a task lost with its worker or node is retried by Ray (its default, 3 times); an actor
lost likewise is restarted and its task retried up to `RETRIES` times (Ray Data's default for actor
pools is forever). Exceptions raised by our code are not retried (they are deterministic): they fail
the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

RECORD_COLUMN = "record"
RECORD_SCHEMA = pa.schema([(RECORD_COLUMN, pa.string())])
UNIT_COLUMN = "_unit"
RETRIES = 3
ACTOR_ARGS = {"max_restarts": RETRIES, "max_task_retries": RETRIES}


class UnitIncomplete(RuntimeError):
    """A unit's rows did not arrive together: the block discipline above was broken (a bug)."""


def configure_unit_context() -> None:
    """Ray Data settings every unit job relies on (see the module docstring)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = False
    context.target_max_block_size = None


def unit_dataset(units: list[dict]):
    """A Ray Dataset of one block per unit, each row {"unit": <JSON of the unit>}."""
    import ray

    configure_unit_context()
    items = [{"unit": json.dumps(unit, sort_keys=True)} for unit in units]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def unit_of(batch: dict | pa.Table) -> dict:
    """The unit of a `map_batches(batch_size=1)` call over `unit_dataset` rows."""
    column = batch.column("unit").to_pylist() if isinstance(batch, pa.Table) else list(batch["unit"])
    if len(column) != 1:
        raise UnitIncomplete(f"expected one unit per call, got {len(column)}")
    return json.loads(column[0])


def record_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """What a unit's last stage returns: one JSON record per committed unit (with the committing node)."""
    node = committed_by()
    return pa.Table.from_pydict({RECORD_COLUMN: [json.dumps({**r, "node": node}, sort_keys=True) for r in records]},
                                schema=RECORD_SCHEMA)


def committed_by() -> str:
    """The Ray node id of this worker ("local" outside Ray): written into what a worker commits."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


NODE_META = "onegen.node"


def collect_records(dataset, total: int, description: str, progress: bool) -> list[dict]:
    """Run `dataset` and return its unit records (driver side: small records only, as they finish)."""
    from tqdm.auto import tqdm

    records = []
    with tqdm(total=total, desc=description, unit="unit", disable=not progress) as bar:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            if batch.schema.names != RECORD_SCHEMA.names:
                raise RuntimeError(f"{description}: the driver was sent {batch.schema.names}, not unit records")
            for text in batch.column(RECORD_COLUMN).to_pylist():
                records.append(json.loads(text))
                bar.update(1)
    if len(records) != total:
        raise RuntimeError(f"{description}: {len(records)} unit records came back, expected {total}")
    return records


def split_units(table: pa.Table, expected_rows: dict[int, int]) -> list[tuple[int, pa.Table]]:
    """The rows of each unit in `table` (a block after an actor stage), `_unit` dropped, in row order.

    Raises UnitIncomplete when a unit is not whole in this block (see the module docstring)."""
    if table.num_rows == 0:
        return []
    units = table.column(UNIT_COLUMN).to_pylist()
    order = list(dict.fromkeys(units))
    pieces = []
    for unit in order:
        mask = pa.compute.equal(table.column(UNIT_COLUMN), unit)
        rows = table.filter(mask).drop_columns([UNIT_COLUMN])
        if rows.num_rows != expected_rows[unit]:
            raise UnitIncomplete(f"unit {unit}: {rows.num_rows} of its {expected_rows[unit]} rows in one block")
        pieces.append((unit, rows))
    return pieces
