"""`onegen annotate DIR --annotators a,b`: the one Ray Data runner for every annotator.

For each annotator, catalog parts without an annotation part are the units of work
(pipelines/runtime/units.py). Three stages run on the workers, streaming:
  1. a CPU task reads a unit's catalog part (images read back from the source for by-reference
     rows), with the stored columns of the annotators it `requires` as "<name>.<column>";
  2. the annotator's actor pool (`ActorPoolStrategy`, its num_gpus / num_cpus / batch_size /
     concurrency) runs the model, and nothing else: no I/O waits on a GPU;
  3. a CPU task commits the unit as annotations/<name>@<version>/<source>/part-NNNNN.parquet (one row
     per catalog row, same order) and returns a small record, the only thing the driver sees.
Units commit in whatever order they finish.
Each annotation part records the hash of its catalog part's keys; a catalog part that changed since
(re-ingested) makes the annotation part stale, which is refused unless --overwrite redoes it.

Identity of an annotator's outputs is name@version plus its configuration fields; resource fields
(num_gpus, num_cpus, batch_size, concurrency) can change between runs freely.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from onegen.annotators.base import Annotator, decode_batch
from onegen.core.errors import UserError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.jobs.annotate_units import annotate_unit, stateless
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.runtime.units import (
    ACTOR_ARGS,
    NODE_META,
    UNIT_COLUMN,
    collect_records,
    committed_by,
    record_table,
    run_unit_tasks,
    split_units,
    unit_dataset,
    unit_of,
)
from onegen.pipelines.sources.catalog_images import resolve_images

RESOURCE_FIELDS = ("num_gpus", "num_cpus", "batch_size", "concurrency")
CATALOG_KEYS_META = "onegen.catalog_keys_sha256"


class MissingRequirement(UserError):
    """An annotator needs another annotator's outputs that are not there yet."""


class AnnotationFailed(RuntimeError):
    """A unit failed for a reason that is not bad input (a bug, CUDA, OOM on one row, too many errors):
    nothing of it was committed; the message names the annotator, the part and the first error."""

    def __init__(self, message: str):  # one argument, so the error survives Ray's pickling
        super().__init__(message)


@dataclass(frozen=True)
class PartTask:
    """One catalog part to annotate: where it is, where its output goes, what to join in."""

    index: int
    catalog_path: str
    output_path: str
    rows: int
    keys_sha256: str
    joins: tuple[tuple[str, str], ...]  # (annotator name, path of its part for this catalog part)
    retry_keys: tuple[str, ...] = ()  # --retry-errors: only these rows (status "error") are annotated again


@dataclass
class AnnotateSummary:
    annotator: str
    parts: int
    parts_done_before: int
    statuses: dict[str, int]


def annotator_identity(annotator: Annotator) -> dict:
    fields = {k: v for k, v in asdict(annotator).items() if k not in RESOURCE_FIELDS}
    conditions = [asdict(spec) for spec in annotator.conditions]
    return {"name": annotator.name, "version": annotator.version, "class": type(annotator).__name__,
            "config": fields, "conditions": conditions}


def keys_sha256(path: str) -> tuple[int, str]:
    keys = files.read_table(path, ["key"]).column("key").to_pylist()
    return len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()


def plan_parts(root: str, annotator: Annotator, overwrite: bool, retry_errors: bool = False
               ) -> tuple[list[PartTask], int]:
    """Pending part tasks and how many parts were already done; refuses stale parts unless overwrite.

    With `retry_errors`, a done part that holds rows of status "error" is a task for those rows only."""
    layout = DatasetLayout(root)
    stores = {name: layout.find_store(name) for name in annotator.requires}
    missing = [name for name, found in stores.items() if found is None]
    if missing:
        raise MissingRequirement(f"{annotator.name} needs {', '.join(missing)}: run `onegen annotate --annotators {','.join(missing)}` first")
    optional = {name: layout.find_store(name) for name in annotator.optional_requires}
    stores.update({name: found for name, found in optional.items() if found})
    tasks, done, stale = [], 0, []
    for index, (source, path) in enumerate(layout.catalog_parts()):
        part = path.rsplit("/", 1)[-1]
        output = layout.store_part(annotator.store_name, path)
        rows, sha = keys_sha256(path)
        retry: tuple[str, ...] = ()
        if files.exists(output):
            if files.read_metadata(output).get(CATALOG_KEYS_META) == sha:
                retry = error_keys(output) if retry_errors else ()
                if not retry:
                    done += 1
                    continue
            elif not overwrite:
                stale.append(f"{source}/{part}")
                continue
        joins = tuple((name, layout.store_part(found, path)) for name, found in stores.items())
        absent = [name for name, joined in joins if name in annotator.requires and not files.exists(joined)]
        if absent:
            raise MissingRequirement(f"{annotator.name} needs {', '.join(absent)} for {source}/{part}: run those annotators first")
        tasks.append(PartTask(index, path, output, len(retry) or rows, sha,
                              tuple((n, j) for n, j in joins if files.exists(j)), retry))
    if stale:
        raise job_state.JobConflict(
            f"{annotator.store_name}: {len(stale)} catalog part(s) changed since they were annotated "
            f"({', '.join(stale[:3])}); pass --overwrite to annotate them again"
        )
    return tasks, done


def error_keys(part: str) -> tuple[str, ...]:
    """Keys of the rows of an annotation part whose status is "error"."""
    table = files.read_table(part, ["key", "status"])
    return tuple(k for k, s in zip(table.column("key").to_pylist(), table.column("status").to_pylist(), strict=True)
                 if s == "error")


def read_unit_rows(batch: pa.Table) -> pa.Table:
    """Stage 1 (CPU task, one unit per call): its catalog rows + joined columns + `_unit`."""
    unit = unit_of(batch)
    table = resolve_images(files.read_table(unit["catalog_path"]))
    keys = table.column("key")
    for name, path in unit["joins"]:
        joined = files.read_table(path)
        if joined.column("key") != keys:
            raise RuntimeError(f"{path} is not aligned with {unit['catalog_path']}: rerun that annotator with --overwrite")
        for column in joined.column_names:
            if column != "key":
                table = table.append_column(f"{name}.{column}", joined.column(column))
    if unit.get("retry_keys"):
        table = table.filter(pc.is_in(table.column("key"), pa.array(unit["retry_keys"], pa.string())))
    return table.append_column(UNIT_COLUMN, pa.array([unit["index"]] * table.num_rows, pa.int64()))


def commit_units(table: pa.Table, annotators: tuple[Annotator, ...], plan: dict[int, dict],
                 max_error_rate: float) -> pa.Table:
    """Stage 3 (CPU task): commit every unit in this block, one part per annotator; their records.

    `plan[unit]` = {"rows": n, "path": catalog part, "retry": bool, "outputs": {position: (output path,
    catalog keys sha256)}}. A unit whose rows are more than `max_error_rate` "error" commits nothing and
    fails the job (AnnotationFailed). A retry unit replaces its rows, by key, in the existing part."""
    records = []
    for unit, rows in split_units(table, {u: p["rows"] for u, p in plan.items()}):
        statuses, parts = {}, []
        for position, (path, keys_sha) in plan[unit]["outputs"].items():
            prefix = f"{position}::"
            own = rows.select([c for c in rows.column_names if c.startswith(prefix)])
            own = own.rename_columns([c[len(prefix):] for c in own.column_names]).cast(annotators[position].schema())
            check_error_rate(annotators[position], plan[unit]["path"], own, max_error_rate)
            if plan[unit]["retry"]:
                own = merge_retried(files.read_table(path), own)
            parts.append((path, own, keys_sha))
            statuses[annotators[position].store_name] = _count(own.column("status").to_pylist())
        for path, own, keys_sha in parts:  # only once every annotator's rows passed the breaker
            files.commit_table(path, own, {CATALOG_KEYS_META: keys_sha, NODE_META: committed_by()})
        records.append({"unit": unit, "rows": rows.num_rows, "statuses": statuses})
    return record_table(records)


def check_error_rate(annotator: Annotator, part: str, rows: pa.Table, max_error_rate: float) -> None:
    """The error-rate breaker: too many rows of status "error" means the annotator, not the data, failed."""
    errors = [e for s, e in zip(rows.column("status").to_pylist(), rows.column("error").to_pylist(), strict=True)
              if s == "error"]
    if rows.num_rows and len(errors) > max_error_rate * rows.num_rows:
        common, count = max(_count([(e or "").splitlines()[0][:200] if e else "" for e in errors]).items(),
                            key=lambda item: item[1])
        raise AnnotationFailed(f"{annotator.store_name} on {part}: {len(errors)} of {rows.num_rows} rows failed "
                               f"(more than --max-error-rate {max_error_rate:g}); most common ({count}x): {common}")


def merge_retried(existing: pa.Table, retried: pa.Table) -> pa.Table:
    """`existing` with the rows of `retried` put in place of the rows with the same key (order kept)."""
    new = {row["key"]: row for row in retried.to_pylist()}
    return pa.Table.from_pylist([new.get(row["key"], row) for row in existing.to_pylist()], schema=existing.schema)


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


class AnnotatorActor:
    """Stage 2: one or more annotators over each batch: rows are decoded once and every annotator's
    output columns come back prefixed "<position>::"; carries `_unit` through. Does no I/O."""

    def __init__(self, annotators: tuple[Annotator, ...], parts: dict[int, str]):
        self.annotators = annotators
        self.parts = parts
        self.decode_images = any(a.decode_images for a in annotators)
        self.kinds = {kind for a in annotators for kind in a.kinds}
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
        keys, kinds, rows = decode_batch(batch.drop_columns([UNIT_COLUMN]).to_pydict(), self.decode_images, self.kinds)
        table = pa.table({UNIT_COLUMN: units})
        for position, annotator in enumerate(self.annotators):
            try:
                outputs = annotator.annotate_rows(keys, kinds, rows)
            except Exception as error:  # not bad input (base.Annotator): this unit fails, loudly
                part = self.parts.get(units[0].as_py(), "?")
                raise AnnotationFailed(f"{annotator.store_name} on {part}: {type(error).__name__}: {error}") from error
            columns = pa.Table.from_pydict(outputs, schema=annotator.schema())
            for name in columns.column_names:
                table = table.append_column(f"{position}::{name}", columns.column(name))
        return table


def fusable(annotator: Annotator) -> bool:
    """CPU annotators that read nothing but the catalog share one pass (one read, one decode per row)."""
    return (annotator.num_gpus == 0 and annotator.decode_images and not annotator.requires
            and not annotator.optional_requires and getattr(annotator, "backend", "hf") != "vllm")


def group_annotators(annotators: list[Annotator]) -> list[tuple[Annotator, ...]]:
    """Consecutive fusable annotators form one group; every other annotator runs alone."""
    groups: list[tuple[Annotator, ...]] = []
    for annotator in annotators:
        if groups and fusable(annotator) and all(fusable(a) for a in groups[-1]):
            groups[-1] = (*groups[-1], annotator)
        else:
            groups.append((annotator,))
    return groups


def build_annotation_dataset(units: list[dict], annotators: tuple[Annotator, ...], max_error_rate: float = 0.2):
    """The lazy Ray Dataset that annotates and commits `units`; its rows are unit records."""
    import ray
    from ray.data import ActorPoolStrategy

    plan = {u["index"]: {"rows": u["rows"], "path": u["catalog_path"], "retry": bool(u.get("retry_keys")),
                         "outputs": {int(k): tuple(v) for k, v in u["outputs"].items()}} for u in units}
    reads = [{k: u.get(k) for k in ("index", "catalog_path", "joins", "retry_keys")} for u in units]
    if len(annotators) == 1 and getattr(annotators[0], "backend", "hf") == "vllm":
        from onegen.pipelines.jobs.vllm_annotate import vllm_annotation_dataset

        annotated = vllm_annotation_dataset(reads, annotators[0], read_unit_rows)
    else:
        dataset = unit_dataset(reads).map_batches(read_unit_rows, batch_size=1, batch_format="pyarrow",
                                                  num_cpus=0.25)
        concurrency = max(a.concurrency for a in annotators)
        if all(a.num_gpus == 0 for a in annotators):
            # CPU annotators: one actor per core of the cluster (one actor would use one core), at most
            # one per unit; a fixed size, since Ray's pool autoscaler needs several tasks in flight per actor
            cores = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else concurrency
            pool = ActorPoolStrategy(size=max(concurrency, min(cores, len(units))), max_tasks_in_flight_per_actor=1)
        else:  # GPU actors: exactly as many as asked for
            pool = ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1)
        # one unit in flight per actor: a unit queued behind a slow one would be held back by it, and a
        # unit is a whole part (hundreds of rows), so the gap between two tasks costs nothing
        with warnings.catch_warnings():  # Ray names no other way to bound actor restarts yet
            warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
            annotated = dataset.map_batches(
                AnnotatorActor,
                fn_constructor_args=(tuple(annotators), {u["index"]: u["catalog_path"] for u in units}),
                compute=pool,
                batch_size=min(a.batch_size for a in annotators),
                batch_format="pyarrow",
                num_gpus=max(a.num_gpus for a in annotators),
                num_cpus=max(a.num_cpus for a in annotators),
                udf_modifying_row_count=False,
                **ACTOR_ARGS,
            )
    return annotated.map_batches(commit_units, fn_args=(tuple(annotators), plan, max_error_rate), batch_size=None,
                                 batch_format="pyarrow", num_cpus=0.25)


def prepare_store(root: str, annotator: Annotator, overwrite: bool, ray_config: RayConfig,
                  retry_errors: bool = False) -> tuple[list[PartTask], int, int]:
    """Checks, job record and plan for one annotator: (parts to annotate, parts done before, parts in all).

    Parts of empty catalog parts are committed here (nothing to run)."""
    if getattr(annotator, "backend", "hf") == "vllm":
        from onegen.annotators.vlm import require_vllm

        try:
            require_vllm()
        except ImportError as missing:
            raise MissingRequirement(f"{annotator.store_name}: {missing}") from None
    if not (ray_config.address or os.environ.get("RAY_ADDRESS")):
        annotator.preflight()  # local job: the driver sees the same disk as the actors
    layout = DatasetLayout(root)
    output_root = layout.store_dir(annotator.store_name)
    record = {"job": "annotate", **annotator_identity(annotator)}
    hint = f"Bump {type(annotator).__name__}.version for new outputs, or pass --overwrite to redo {annotator.store_name}."
    changed = job_state.check_and_record(layout.store_record(annotator.store_name), record, overwrite, hint)
    if changed or overwrite:  # --overwrite redoes the store, changed configuration or not
        for _, path in layout.catalog_parts():
            files.remove(files.join(output_root, path.rsplit("/", 2)[-2]))
    files.clean_temporaries(output_root)
    tasks, done = plan_parts(root, annotator, overwrite, retry_errors and not overwrite)
    for task in tasks:
        if task.rows == 0:
            files.commit_table(task.output_path, annotator.schema().empty_table(), {CATALOG_KEYS_META: task.keys_sha256})
    return [t for t in tasks if t.rows > 0], done, len(tasks) + done


def run_annotators(root: str, annotators: list[Annotator], overwrite: bool, ray_config: RayConfig,
                   retry_errors: bool = False, max_error_rate: float = 0.2) -> list[AnnotateSummary]:
    """Annotate with every annotator, fusable ones together in one pass; a summary per annotator.

    `retry_errors` re-annotates only the rows of status "error" (each annotator alone); a unit with more
    than `max_error_rate` of its rows "error" fails the job (AnnotationFailed) and commits nothing."""
    layout = DatasetLayout(root)
    summaries = []
    groups = [(a,) for a in annotators] if retry_errors else group_annotators(annotators)
    for group in groups:
        plans = [prepare_store(root, annotator, overwrite, ray_config, retry_errors) for annotator in group]
        units: dict[int, dict] = {}  # part index -> its unit (one output per annotator position)
        for position, (tasks, _, _) in enumerate(plans):
            for task in tasks:
                unit = units.setdefault(task.index, {"index": task.index, "catalog_path": task.catalog_path,
                                                     "joins": task.joins, "rows": task.rows, "outputs": {},
                                                     "retry_keys": task.retry_keys})
                unit["outputs"][position] = (task.output_path, task.keys_sha256)
        if units:
            init_ray(ray_config)
            require_gpus(group)
            names = ",".join(a.store_name for a in group)
            ordered = [units[i] for i in sorted(units)]
            if stateless(group):  # nothing to keep warm: one plain task per unit (pipelines/jobs/annotate_units.py)
                run_unit_tasks(annotate_unit, ordered, (group, max_error_rate), 0.5,
                               f"annotate {names}", ray_config.progress_bars)
            else:
                collect_records(build_annotation_dataset(ordered, group, max_error_rate), len(ordered),
                                f"annotate {names}", ray_config.progress_bars)
        for annotator, (_, done, total) in zip(group, plans, strict=True):
            summaries.append(AnnotateSummary(annotator.store_name, total, done,
                                             status_counts(layout.store_dir(annotator.store_name))))
    return summaries


def require_gpus(annotators: tuple[Annotator, ...]) -> None:
    """Refuse, with one line, actors that ask for more GPUs than the cluster has (Ray would wait forever)."""
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    for annotator in annotators:
        if annotator.num_gpus > have:
            raise MissingRequirement(
                f"{annotator.name} asks for {annotator.num_gpus:g} GPU per actor but the Ray cluster has {have:g}: "
                f"pass --set {annotator.name}.num_gpus=0 to run it on CPU")


def status_counts(output_root: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in files.list_files(output_root, ".parquet"):
        for status in files.read_table(path, ["status"]).column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
    return counts
