"""Units of work on Ray workers: the driver plans them, workers commit them, the driver reads records.

Every job in pipelines/ has one shape (docs/design.md §2, "Who writes"), and one contract
(pipelines/runtime/unit_job.py: plan typed units, is a unit done, run one, summarise):

    driver: plan units (typed frozen dataclasses) -> run_unit_tasks, or unit_dataset(unit numbers)
    workers: read, compute and commit each unit, the last step returning one record row per unit
             (`RECORD_SCHEMA`: a single JSON string column)
    driver: iterates those records only, in whatever order units finish

so no row data or sample bytes ever reach the driver, and a slow unit holds back nobody
(`preserve_order` is off). Jobs whose unit is one step (ingest, build, stateless annotators) run
plain Ray tasks, `run_unit_tasks(fn, units, ...)`, which start their first unit sooner (see there);
annotate's model annotators keep a Ray Data pipeline, whose actor pools keep models loaded between units.
Units reach workers as the objects the driver planned, pickled by Ray: a task gets its unit as an
argument; a Ray Data stage gets the planned units once (`fn_args`) and its rows carry only the unit's
number (`unit_dataset`), so nothing is rebuilt from JSON on the far side. A unit is committed by the
worker that made it, under the commit rule of manifests/files.py, its completion marker last.

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
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
    """Ray Data settings every unit job relies on (see the module docstring); set on the driver where
    a unit dataset is made, so that jobs of plain tasks never import ray.data."""
    import logging

    from ray.data import DataContext

    # Ray Data logs every progress tick at INFO when no terminal bar is shown; keep warnings only.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = DataContext.get_current()
    context.execution_options.preserve_order = False  # units commit on workers, in whatever order they finish
    context.target_max_block_size = None
    context.enable_progress_bars = False  # one bar per stage, collect_records' own (core/job_output.py)
    context.print_on_execution_start = False
    # a UDF's own exception reaches the driver as RayTaskError(<its class>) with `.cause`, not as a
    # UserCodeException that lost it: how the CLI tells a user error from a bug (pipelines/cli/failures.py)
    context.raise_original_map_exception = True


def unit_dataset(numbers: Iterable[int]):
    """A Ray Dataset of one block per unit, each row {"unit": <the unit's number>}; the stages that
    read it get the planned unit objects themselves through `fn_args` / constructor arguments."""
    import ray

    configure_unit_context()
    items = [{"unit": int(number)} for number in numbers]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def unit_of(batch: dict | pa.Table) -> int:
    """The unit number of a `map_batches(batch_size=1)` call over `unit_dataset` rows."""
    column = batch.column("unit").to_pylist() if isinstance(batch, pa.Table) else list(batch["unit"])
    if len(column) != 1:
        raise UnitIncomplete(f"expected one unit per call, got {len(column)}")
    return int(column[0])


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


def receive_records(batch: pa.Table, description: str) -> list[dict]:
    """The records in what a worker sent the driver; anything but `RECORD_SCHEMA` is a bug."""
    if batch.schema.names != RECORD_SCHEMA.names:
        raise RuntimeError(f"{description}: the driver was sent {batch.schema.names}, not unit records")
    return [json.loads(text) for text in batch.column(RECORD_COLUMN).to_pylist()]


def collect_records(dataset, total: int, description: str, progress: bool) -> list[dict]:
    """Run `dataset` and return its unit records (driver side: small records only, as they finish)."""
    return _gather(dataset.iter_batches(batch_format="pyarrow", batch_size=None), total, description, progress)


def run_unit_tasks(fn: Callable[..., pa.Table], units: list[Any], fn_args: tuple, num_cpus: float,
                   description: str, progress: bool, total: int | None = None) -> list[dict]:
    """Run `fn(unit, *fn_args)` as one Ray task per unit; return their records as they finish. (`units`
    may be bundles of units, each task sending one record per unit: `total` is then the units in all.)

    For jobs whose unit is a single step (ingest, build, stateless annotators). `fn_args` (a job's
    typed configuration) go to the object store once, not once per task. Plain tasks rather than a Ray Data
    pipeline: a dataset's first unit waits for its streaming executor, its stats actor and `ray.data`
    being imported on a worker (1.5-3 s on a 2-core machine, bench/results/startup.txt), and a
    one-step job has no stages to pipeline. Same contract as `collect_records`: workers commit, only
    `RECORD_SCHEMA` tables reach the driver, units finish in any order, a task lost with its worker
    is retried (`RETRIES`), our own exceptions fail the job (the tasks still running are cancelled;
    whatever they leave is debris of the commit rule). At most `window` units are in flight, so the
    object store holds a bounded number of them; tasks are spread over the nodes as Ray Data spreads
    its tasks.
    """
    import ray

    remote = ray.remote(fn).options(num_cpus=num_cpus, max_retries=RETRIES, retry_exceptions=False,
                                    scheduling_strategy="SPREAD")
    window = max(2, int(2 * ray.cluster_resources().get("CPU", 1) / num_cpus))
    shared = [ray.put(arg) for arg in fn_args]

    def finished() -> Iterator[pa.Table]:  # each task's record table, as tasks finish
        queue, running = list(reversed(units)), []
        try:
            while queue or running:
                while queue and len(running) < window:
                    running.append(remote.remote(queue.pop(), *shared))
                done, running = ray.wait(running, num_returns=1)
                yield ray.get(done[0])
        except BaseException:  # a failed task, or the driver stopped reading (closed): cancel the rest
            for ref in running:
                ray.cancel(ref)
            raise

    with closing(finished()) as tables:
        return _gather(tables, len(units) if total is None else total, description, progress)


def _gather(tables: Iterable[pa.Table], total: int, description: str, progress: bool) -> list[dict]:
    """The one funnel of unit records to the driver: one progress bar, `receive_records` on every
    table, and the check that every unit sent its record."""
    from tqdm.auto import tqdm

    from onegen.core.job_output import progress_stream

    records = []
    with tqdm(total=total, desc=description, unit="unit", disable=not progress, file=progress_stream()) as bar:
        for table in tables:
            received = receive_records(table, description)
            records += received
            bar.update(len(received))
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
