"""What runs on the workers of `onegen annotate`: read a unit's rows, annotate them, commit its parts.

The units are typed (`PartUnit`: one catalog part for one store; `GroupUnit`: one catalog part read
once for the annotators sharing a pass) and reach the workers as the objects the driver planned
(pipelines/jobs/annotate.py), pickled by Ray. Two ways run them, both ending in `commit_units`:

- model annotators: Ray Data stages, read task (`read_unit_rows`) -> actor pool (`AnnotatorActor`, the
  model and nothing else, so a GPU never waits on Parquet I/O) -> commit task;
- stateless annotators (no GPU, nothing loaded in `setup()`: canny, blur, low-res, inpainting, ...):
  one plain Ray task per unit (`annotate_unit`) reads, annotates and commits it. With no model to keep
  warm and no GPU to keep fed, the streaming actor pipeline only costs: the Ray Data executor's
  scheduling loop takes driver CPU time for every second the job runs, and every part is handed over
  between three stages. The contract is the same: the worker commits, the driver gets one record per
  unit, units finish in any order, a failing unit commits nothing.

A unit's parts are committed only once every annotator's rows passed the error-rate breaker; each part
is followed by its unit marker (pipelines/runtime/unit_job.py), written last.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from onegen.annotators.base import Annotator, decode_batch
from onegen.manifests import files
from onegen.manifests.layout import PART_SUFFIX
from onegen.pipelines.runtime.unit_job import COMPLETION_STAMP, UnitJob, finish_unit
from onegen.pipelines.runtime.units import (
    NODE_META,
    UNIT_COLUMN,
    committed_by,
    record_table,
    split_units,
    unit_of,
)
from onegen.pipelines.sources.catalog_images import resolve_images

CATALOG_KEYS_META = "onegen.catalog_keys_sha256"


class AnnotationFailed(RuntimeError):
    """A unit failed for a reason that is not bad input (a bug, CUDA, OOM on one row, too many errors):
    nothing of it was committed; the message names the annotator, the part and the first error."""

    def __init__(self, message: str):  # one argument, so the error survives Ray's pickling
        super().__init__(message)


@dataclass(frozen=True)
class PartUnit:
    """One catalog part to annotate for one store: where it is, where its output goes, what to join in."""

    index: int  # the catalog part's position among every catalog part (path order)
    catalog_path: str
    output_path: str
    rows: int  # rows to annotate (the retried ones only, on --retry-errors)
    input: str  # sha256 of the catalog part's keys: a re-ingested part makes the output stale
    joins: tuple[tuple[str, str], ...]  # (annotator name, path of its part for this catalog part)
    retry_keys: tuple[str, ...] = ()  # --retry-errors: only these rows (status "error") are annotated again

    @property
    def name(self) -> str:
        source, part = self.catalog_path.rsplit("/", 2)[-2:]
        return f"{source}/{part.removesuffix(PART_SUFFIX)}"


@dataclass(frozen=True)
class GroupUnit:
    """One catalog part read once for a group of annotators: `parts[position]` is the unit of the
    annotator at that position, or None where that store has the part done already."""

    index: int
    catalog_path: str
    rows: int
    joins: tuple[tuple[str, str], ...]
    retry_keys: tuple[str, ...]
    parts: tuple[PartUnit | None, ...]


def group_unit(parts: list[PartUnit | None]) -> GroupUnit:
    """The group unit of one catalog part's per-store units (at least one is not None)."""
    first = next(p for p in parts if p is not None)
    return GroupUnit(first.index, first.catalog_path, first.rows, first.joins, first.retry_keys, tuple(parts))


def read_unit_rows(batch: pa.Table, units: dict[int, GroupUnit]) -> pa.Table:
    """Stage 1 (CPU task, one unit per call): its catalog rows + joined columns + `_unit`."""
    unit = units[unit_of(batch)]
    table = resolve_images(files.read_table(unit.catalog_path))
    keys = table.column("key")
    for name, path in unit.joins:
        joined = files.read_table(path)
        if joined.column("key") != keys:
            raise RuntimeError(f"{path} is not aligned with {unit.catalog_path}: rerun that annotator with --overwrite")
        for column in joined.column_names:
            if column != "key":
                table = table.append_column(f"{name}.{column}", joined.column(column))
    if unit.retry_keys:
        table = table.filter(pc.is_in(table.column("key"), pa.array(unit.retry_keys, pa.string())))
    return table.append_column(UNIT_COLUMN, pa.array([unit.index] * table.num_rows, pa.int64()))


class AnnotatorActor:
    """Stage 2: one or more annotators over each batch: rows are decoded once and every annotator's
    output columns come back prefixed "<position>::"; carries `_unit` through. Does no I/O."""

    def __init__(self, annotators: tuple[Annotator, ...], parts: dict[int, str]):
        self.annotators = annotators
        self.parts = parts
        self.setup_error: Exception | None = None
        try:
            for annotator in annotators:
                annotator.setup()
        except Exception as error:  # raised with the first batch: an actor that dies in __init__ reaches
            self.setup_error = error  # the driver as ActorDiedError holding only text (pipelines/cli/failures.py)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.setup_error is not None:
            raise self.setup_error
        units = batch.column(UNIT_COLUMN)
        columns = batch.drop_columns([UNIT_COLUMN]).to_pydict()
        sources = columns.get("source")
        # rows of sources no annotator here runs on (their `sources` policy) are not decoded: all skipped
        running = [a for a in self.annotators if not a.sources or any(a.runs_on(s) for s in set(sources or [None]))]
        keys, kinds, rows = decode_batch(columns, any(a.decode_images for a in running),
                                         {k for a in running for k in a.kinds})
        table = pa.table({UNIT_COLUMN: units})
        for position, annotator in enumerate(self.annotators):
            try:
                outputs = annotator.annotate_rows(keys, kinds, rows, sources)
            except Exception as error:  # not bad input (base.Annotator): this unit fails, loudly
                part = self.parts.get(units[0].as_py(), "?")
                raise AnnotationFailed(f"{annotator.store_name} on {part}: {type(error).__name__}: {error}") from error
            columns = pa.Table.from_pydict(outputs, schema=annotator.schema())
            for name in columns.column_names:
                table = table.append_column(f"{position}::{name}", columns.column(name))
        return table


def commit_parts(rows: pa.Table, unit: GroupUnit, annotators: tuple[Annotator, ...], max_error_rate: float
                 ) -> list[tuple[int, dict]]:
    """Commit one unit's annotated `rows`, one part per annotator that has it to do; (position, record) each.

    Raises AnnotationFailed, committing nothing, when an annotator's rows are more than `max_error_rate`
    "error". A retry unit replaces its rows, by key, in the existing part."""
    staged = []
    for position, part in enumerate(unit.parts):
        if part is None:
            continue
        prefix = f"{position}::"
        own = rows.select([c for c in rows.column_names if c.startswith(prefix)])
        own = own.rename_columns([c[len(prefix):] for c in own.column_names]).cast(annotators[position].schema())
        check_error_rate(annotators[position], unit.catalog_path, own, max_error_rate)
        if part.retry_keys:
            own = merge_retried(files.read_table(part.output_path), own)
        staged.append((position, part, own))
    committed = []
    for position, part, own in staged:  # only once every annotator's rows passed the breaker
        files.commit_table(part.output_path, own,
                           {CATALOG_KEYS_META: part.input, NODE_META: committed_by(), **COMPLETION_STAMP})
        committed.append((position, part_record(part, own)))
    return committed


def part_record(part: PartUnit, table: pa.Table) -> dict:
    """The record of one committed annotation part (what its marker holds): rows and status counts."""
    return {"part": part.name, "rows": table.num_rows, "statuses": count(table.column("status").to_pylist())}


def commit_units(table: pa.Table, jobs: tuple[UnitJob, ...], units: dict[int, GroupUnit],
                 max_error_rate: float) -> pa.Table:
    """Stage 3 (CPU task): commit every unit in this block (parts, then their markers); their records.

    `jobs[position]` is the annotate job (pipelines/jobs/annotate.py) of the annotator at that position."""
    annotators = tuple(job.annotator for job in jobs)
    records = []
    for number, rows in split_units(table, {n: u.rows for n, u in units.items()}):
        unit = units[number]
        parts = {}
        for position, record in commit_parts(rows, unit, annotators, max_error_rate):
            parts[annotators[position].store_name] = finish_unit(jobs[position], unit.parts[position], record)
        records.append({"unit": number, "rows": rows.num_rows, "parts": parts})
    return record_table(records)


def check_error_rate(annotator: Annotator, part: str, rows: pa.Table, max_error_rate: float) -> None:
    """The error-rate breaker: too many rows of status "error" means the annotator, not the data, failed."""
    errors = [e for s, e in zip(rows.column("status").to_pylist(), rows.column("error").to_pylist(), strict=True)
              if s == "error"]
    if rows.num_rows and len(errors) > max_error_rate * rows.num_rows:
        common, times = max(count([(e or "").splitlines()[0][:200] if e else "" for e in errors]).items(),
                            key=lambda item: item[1])
        raise AnnotationFailed(f"{annotator.store_name} on {part}: {len(errors)} of {rows.num_rows} rows failed "
                               f"(more than --max-error-rate {max_error_rate:g}); most common ({times}x): {common}")


def merge_retried(existing: pa.Table, retried: pa.Table) -> pa.Table:
    """`existing` with the rows of `retried` put in place of the rows with the same key (order kept)."""
    new = {row["key"]: row for row in retried.to_pylist()}
    return pa.Table.from_pylist([new.get(row["key"], row) for row in existing.to_pylist()], schema=existing.schema)


def count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


# --- stateless annotators: one plain task per unit ----------------------------------------------------
_READY: dict[str, AnnotatorActor] = {}  # per worker process: annotators set up once, reused by later units


def stateless(annotators: tuple[Annotator, ...]) -> bool:
    """True when no annotator of the group needs a GPU, a model set up in `setup()`, or vLLM."""
    return all(a.num_gpus == 0 and type(a).setup is Annotator.setup and getattr(a, "backend", "hf") != "vllm"
               for a in annotators)


def annotate_rows(unit: GroupUnit, annotators: tuple[Annotator, ...]) -> pa.Table:
    """Read one unit's rows and annotate them in this process, in batches of the annotators' batch size."""
    key = repr(annotators)
    if key not in _READY:
        _READY[key] = AnnotatorActor(annotators, {})
    worker = _READY[key]
    worker.parts[unit.index] = unit.catalog_path
    rows = read_unit_rows(pa.table({"unit": [unit.index]}), {unit.index: unit})
    size = min(a.batch_size for a in annotators)
    pieces = [worker(rows.slice(start, size)) for start in range(0, rows.num_rows, size)]
    return pa.concat_tables(pieces) if pieces else worker(rows)


def annotate_unit(unit: GroupUnit, jobs: tuple[UnitJob, ...], max_error_rate: float) -> pa.Table:
    """Ray task: read, annotate and commit one unit (parts, then markers); its record."""
    annotated = annotate_rows(unit, tuple(job.annotator for job in jobs))
    return commit_units(annotated, jobs, {unit.index: unit}, max_error_rate)
