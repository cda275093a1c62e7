"""`onegen annotate DIR --annotators a,b`: the one Ray Data runner for every annotator.

For each annotator, catalog parts without an annotation part are read (with the stored columns of
the annotators it `requires`, as "<name>.<column>"), mapped through the annotator on an actor pool
(`ActorPoolStrategy`, the annotator's num_gpus / num_cpus / batch_size / concurrency), and committed
as annotations/<name>@<version>/<source>/part-NNNNN.parquet: one row per catalog row, same order.
Each annotation part records the hash of its catalog part's keys; a catalog part that changed since
(re-ingested) makes the annotation part stale, which is refused unless --overwrite redoes it.

Identity of an annotator's outputs is name@version plus its configuration fields; resource fields
(num_gpus, num_cpus, batch_size, concurrency) can change between runs freely.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import pyarrow as pa

from onegen.annotators.base import Annotator
from onegen.manifests import store
from onegen.pipelines import job_state
from onegen.pipelines.part_stream import PART_COLUMN, commit_stream
from onegen.pipelines.ray_setup import RayConfig, init_ray

RESOURCE_FIELDS = ("num_gpus", "num_cpus", "batch_size", "concurrency")
CATALOG_KEYS_META = "onegen.catalog_keys_sha256"


class MissingRequirement(Exception):
    """An annotator needs another annotator's outputs that are not there yet."""


@dataclass(frozen=True)
class PartTask:
    """One catalog part to annotate: where it is, where its output goes, what to join in."""

    index: int
    catalog_path: str
    output_path: str
    rows: int
    keys_sha256: str
    joins: tuple[tuple[str, str], ...]  # (annotator name, path of its part for this catalog part)


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


def store_dir(root: str, annotator_name_at_version: str) -> str:
    return store.join(root, "annotations", annotator_name_at_version)


def find_store(root: str, name: str) -> str | None:
    """The `<name>@<version>` folder to read `name` from: the highest version present, or None."""
    fs, base = store.filesystem(store.join(root, "annotations"))
    if not fs.exists(base):
        return None
    versions = [p.rsplit("/", 1)[-1] for p in fs.ls(base, detail=False) if p.rsplit("/", 1)[-1].startswith(name + "@")]
    if not versions:
        return None
    return max(versions, key=lambda v: [int(x) if x.isdigit() else x for x in v.split("@", 1)[1].split(".")])


def catalog_parts(root: str) -> list[tuple[str, str]]:
    """(source, part path) of every committed catalog part, sorted."""
    catalog = store.join(root, "catalog")
    return [(path.rsplit("/", 2)[-2], path) for path in store.list_files(catalog, ".parquet")]


def keys_sha256(path: str) -> tuple[int, str]:
    keys = store.read_table(path, ["key"]).column("key").to_pylist()
    return len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()


def plan_parts(root: str, annotator: Annotator, overwrite: bool) -> tuple[list[PartTask], int]:
    """Pending part tasks and how many parts were already done; refuses stale parts unless overwrite."""
    output_root = store_dir(root, annotator.store_name)
    stores = {name: find_store(root, name) for name in annotator.requires}
    missing = [name for name, found in stores.items() if found is None]
    if missing:
        raise MissingRequirement(f"{annotator.name} needs {', '.join(missing)}: run `onegen annotate --annotators {','.join(missing)}` first")
    optional = {name: find_store(root, name) for name in annotator.optional_requires}
    stores.update({name: found for name, found in optional.items() if found})
    tasks, done, stale = [], 0, []
    for index, (source, path) in enumerate(catalog_parts(root)):
        part = path.rsplit("/", 1)[-1]
        output = store.join(output_root, source, part)
        rows, sha = keys_sha256(path)
        if store.exists(output):
            if store.read_metadata(output).get(CATALOG_KEYS_META) == sha:
                done += 1
                continue
            if not overwrite:
                stale.append(f"{source}/{part}")
                continue
        joins = tuple((name, store.join(store_dir(root, found), source, part)) for name, found in stores.items())
        absent = [name for name, joined in joins if name in annotator.requires and not store.exists(joined)]
        if absent:
            raise MissingRequirement(f"{annotator.name} needs {', '.join(absent)} for {source}/{part}: run those annotators first")
        tasks.append(PartTask(index, path, output, rows, sha, tuple((n, j) for n, j in joins if store.exists(j))))
    if stale:
        raise job_state.JobConflict(
            f"{annotator.store_name}: {len(stale)} catalog part(s) changed since they were annotated "
            f"({', '.join(stale[:3])}); pass --overwrite to annotate them again"
        )
    return tasks, done


def read_part_rows(batch: dict) -> pa.Table:
    """map_batches(batch_size=1) step: one PartTask (JSON) -> its catalog rows + joined columns + _part."""
    (task_json,) = batch["task"]
    task = json.loads(task_json)
    table = store.read_table(task["catalog_path"])
    keys = table.column("key")
    for name, path in task["joins"]:
        joined = store.read_table(path)
        if joined.column("key") != keys:
            raise RuntimeError(f"{path} is not aligned with {task['catalog_path']}: rerun that annotator with --overwrite")
        for column in joined.column_names:
            if column != "key":
                table = table.append_column(f"{name}.{column}", joined.column(column))
    return table.append_column(PART_COLUMN, pa.array([task["index"]] * table.num_rows, pa.int64()))


class AnnotatorActor:
    """Actor wrapper: set the annotator up once, then map batches; carries `_part` through."""

    def __init__(self, annotator: Annotator):
        self.annotator = annotator
        annotator.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = batch.column(PART_COLUMN)
        columns = self.annotator(batch.drop_columns([PART_COLUMN]).to_pydict())
        table = pa.Table.from_pydict(columns, schema=self.annotator.schema())
        return table.append_column(PART_COLUMN, parts)


def build_annotation_dataset(tasks: list[PartTask], annotator: Annotator):
    """The lazy Ray Dataset that annotates `tasks` (exposed so tests can inspect the plan)."""
    import ray
    from ray.data import ActorPoolStrategy

    if getattr(annotator, "backend", "hf") == "vllm":
        from onegen.pipelines.vllm_annotate import vllm_annotation_dataset

        return vllm_annotation_dataset([asdict(task) for task in tasks], annotator, read_part_rows)
    items = [{"task": json.dumps(asdict(task))} for task in tasks]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    dataset = dataset.map_batches(read_part_rows, batch_size=1, num_cpus=0.25)
    return dataset.map_batches(
        AnnotatorActor,
        fn_constructor_args=(annotator,),
        compute=ActorPoolStrategy(size=annotator.concurrency),
        batch_size=annotator.batch_size,
        batch_format="pyarrow",
        num_gpus=annotator.num_gpus,
        num_cpus=annotator.num_cpus,
        udf_modifying_row_count=False,
    )


def run_annotator(root: str, annotator: Annotator, overwrite: bool, ray_config: RayConfig) -> AnnotateSummary:
    if getattr(annotator, "backend", "hf") == "vllm":
        from onegen.annotators.vlm import require_vllm

        try:
            require_vllm()
        except ImportError as missing:
            raise MissingRequirement(f"{annotator.store_name}: {missing}") from None
    if not (ray_config.address or os.environ.get("RAY_ADDRESS")):
        annotator.preflight()  # local job: the driver sees the same disk as the actors
    output_root = store_dir(root, annotator.store_name)
    record = {"job": "annotate", **annotator_identity(annotator)}
    hint = f"Bump {type(annotator).__name__}.version for new outputs, or pass --overwrite to redo {annotator.store_name}."
    if job_state.check_and_record(store.join(output_root, "_job.json"), record, overwrite, hint):
        for _, path in catalog_parts(root):
            store.remove(store.join(output_root, path.rsplit("/", 2)[-2]))
    store.clean_temporaries(output_root)
    tasks, done = plan_parts(root, annotator, overwrite)
    empty = [t for t in tasks if t.rows == 0]
    for task in empty:  # nothing to run; commit the empty part so the store is complete
        store.commit_table(task.output_path, annotator.schema().empty_table(), {CATALOG_KEYS_META: task.keys_sha256})
    tasks = [t for t in tasks if t.rows > 0]
    if tasks:
        init_ray(ray_config)
        by_index = {t.index: t for t in tasks}

        def commit(index: int, table: pa.Table) -> None:
            task = by_index[index]
            store.commit_table(task.output_path, table, {CATALOG_KEYS_META: task.keys_sha256})

        dataset = build_annotation_dataset(tasks, annotator)
        commit_stream(dataset.iter_batches(batch_format="pyarrow", batch_size=None),
                      {t.index: t.rows for t in tasks}, commit, f"annotate {annotator.store_name}",
                      ray_config.progress_bars)
    return AnnotateSummary(annotator.store_name, len(tasks) + len(empty) + done, done, status_counts(output_root))


def status_counts(output_root: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in store.list_files(output_root, ".parquet"):
        for status in store.read_table(path, ["status"]).column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
    return counts
