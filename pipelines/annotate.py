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

from onegen.annotators.base import Annotator, decode_batch
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
    """Actor running one or more annotators over each batch: rows are decoded once and every annotator's
    output columns come back prefixed "<position>::"; carries `_part` through."""

    def __init__(self, annotators: tuple[Annotator, ...]):
        self.annotators = annotators
        self.decode_images = any(a.decode_images for a in annotators)
        self.kinds = {kind for a in annotators for kind in a.kinds}
        for annotator in annotators:
            annotator.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = batch.column(PART_COLUMN)
        keys, kinds, rows = decode_batch(batch.drop_columns([PART_COLUMN]).to_pydict(), self.decode_images, self.kinds)
        table = pa.table({PART_COLUMN: parts})
        for position, annotator in enumerate(self.annotators):
            columns = pa.Table.from_pydict(annotator.annotate_rows(keys, kinds, rows), schema=annotator.schema())
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


def build_annotation_dataset(tasks: list[PartTask], annotators: tuple[Annotator, ...]):
    """The lazy Ray Dataset that annotates `tasks` (exposed so tests can inspect the plan)."""
    import ray
    from ray.data import ActorPoolStrategy

    if len(annotators) == 1 and getattr(annotators[0], "backend", "hf") == "vllm":
        from onegen.pipelines.vllm_annotate import vllm_annotation_dataset

        return vllm_annotation_dataset([asdict(task) for task in tasks], annotators[0], read_part_rows)
    items = [{"task": json.dumps(asdict(task))} for task in tasks]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    dataset = dataset.map_batches(read_part_rows, batch_size=1, num_cpus=0.25)
    concurrency = max(a.concurrency for a in annotators)
    if all(a.num_gpus == 0 for a in annotators):
        # CPU annotators: a pool that grows to the cluster's cores (one actor would use one core)
        cores = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else concurrency
        pool = ActorPoolStrategy(min_size=concurrency, max_size=max(concurrency, cores))
    else:
        pool = ActorPoolStrategy(size=concurrency)  # GPU actors: exactly as many as asked for
    return dataset.map_batches(
        AnnotatorActor,
        fn_constructor_args=(tuple(annotators),),
        compute=pool,
        batch_size=min(a.batch_size for a in annotators),
        batch_format="pyarrow",
        num_gpus=max(a.num_gpus for a in annotators),
        num_cpus=max(a.num_cpus for a in annotators),
        udf_modifying_row_count=False,
    )


def prepare_store(root: str, annotator: Annotator, overwrite: bool, ray_config: RayConfig
                  ) -> tuple[list[PartTask], int, int]:
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
    output_root = store_dir(root, annotator.store_name)
    record = {"job": "annotate", **annotator_identity(annotator)}
    hint = f"Bump {type(annotator).__name__}.version for new outputs, or pass --overwrite to redo {annotator.store_name}."
    if job_state.check_and_record(store.join(output_root, "_job.json"), record, overwrite, hint):
        for _, path in catalog_parts(root):
            store.remove(store.join(output_root, path.rsplit("/", 2)[-2]))
    store.clean_temporaries(output_root)
    tasks, done = plan_parts(root, annotator, overwrite)
    for task in tasks:
        if task.rows == 0:
            store.commit_table(task.output_path, annotator.schema().empty_table(), {CATALOG_KEYS_META: task.keys_sha256})
    return [t for t in tasks if t.rows > 0], done, len(tasks) + done


def run_annotators(root: str, annotators: list[Annotator], overwrite: bool, ray_config: RayConfig) -> list[AnnotateSummary]:
    """Annotate with every annotator, fusable ones together in one pass; a summary per annotator."""
    summaries = []
    for group in group_annotators(annotators):
        plans = [prepare_store(root, annotator, overwrite, ray_config) for annotator in group]
        outputs: dict[int, dict[int, PartTask]] = {}  # part index -> annotator position -> its task
        for position, (tasks, _, _) in enumerate(plans):
            for task in tasks:
                outputs.setdefault(task.index, {})[position] = task
        if outputs:
            init_ray(ray_config)
            parts = [next(iter(by_position.values())) for _, by_position in sorted(outputs.items())]

            def commit(index: int, table: pa.Table, group=group, outputs=outputs) -> None:
                for position, task in outputs[index].items():
                    prefix = f"{position}::"
                    own = table.select([c for c in table.column_names if c.startswith(prefix)])
                    own = own.rename_columns([c[len(prefix):] for c in own.column_names])
                    store.commit_table(task.output_path, own.cast(group[position].schema()),
                                       {CATALOG_KEYS_META: task.keys_sha256})

            names = ",".join(a.store_name for a in group)
            commit_stream(build_annotation_dataset(parts, group).iter_batches(batch_format="pyarrow", batch_size=None),
                          {t.index: t.rows for t in parts}, commit, f"annotate {names}", ray_config.progress_bars)
        for annotator, (_, done, total) in zip(group, plans, strict=True):
            output_root = store_dir(root, annotator.store_name)
            summaries.append(AnnotateSummary(annotator.store_name, total, done, status_counts(output_root)))
    return summaries


def status_counts(output_root: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in store.list_files(output_root, ".parquet"):
        for status in store.read_table(path, ["status"]).column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
    return counts
