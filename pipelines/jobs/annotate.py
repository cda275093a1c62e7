"""`onegen annotate DIR --annotators a,b`: the one Ray runner for every annotator.

Each annotator's store is a unit job (`AnnotateJob`, the contract of pipelines/runtime/unit_job.py): its
units are the catalog parts (`PartUnit`, typed, pickled to the workers as planned), a part is done when
its marker annotations/<name>@<version>/_units/<source>/part-NNNNN.json holds the hash of its catalog
part's keys. Consecutive CPU annotators that read only the catalog share one pass: their pending units
of the same catalog part become one `GroupUnit` (read and decoded once). Three stages run on the
workers, streaming (pipelines/jobs/annotate_work.py):
  1. a CPU task reads a unit's catalog part (images read back from the source for by-reference
     rows), with the stored columns of the annotators it `requires` as "<name>.<column>";
  2. the annotator's actor pool (`ActorPoolStrategy`, its num_gpus / num_cpus / batch_size /
     concurrency) runs the model, and nothing else: no I/O waits on a GPU;
  3. a CPU task commits the unit as annotations/<name>@<version>/<source>/part-NNNNN.parquet (one row
     per catalog row, same order), then its marker, and returns a small record, the only thing the
     driver sees.
Stateless annotators run the same steps as one plain task per unit. Units commit in whatever order
they finish. A catalog part that changed since it was annotated (re-ingested: its keys hash differs
from the marker's) makes the annotation part stale, which is refused unless --overwrite redoes it.

Identity of an annotator's outputs is name@version plus its configuration fields; resource fields
(num_gpus, num_cpus, batch_size, concurrency) can change between runs freely.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass, replace

from onegen.annotators.base import Annotator
from onegen.core.errors import UserError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.jobs.annotate_work import (
    CATALOG_KEYS_META,
    AnnotationFailed,
    AnnotatorActor,
    GroupUnit,
    PartUnit,
    annotate_unit,
    commit_units,
    group_unit,
    part_record,
    read_unit_rows,
    stateless,
)
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.runtime.unit_job import (
    COMPLETION_META,
    COMPLETION_STAMP,
    UnitJob,
    finish_unit,
    pending_units,
)
from onegen.pipelines.runtime.units import ACTOR_ARGS, collect_records, run_unit_tasks, unit_dataset

__all__ = ["AnnotationFailed", "AnnotateJob", "MissingRequirement", "PartUnit", "run_annotators"]
RESOURCE_FIELDS = ("num_gpus", "num_cpus", "batch_size", "concurrency")
STATELESS_CPUS = 0.5  # per stateless unit task


class MissingRequirement(UserError):
    """An annotator needs another annotator's outputs that are not there yet."""


@dataclass
class AnnotateSummary:
    annotator: str
    parts: int
    parts_done_before: int
    statuses: dict[str, int]


POLICY_FIELDS = ("sources", "store")  # recorded only when set: stores made before they existed stay unchanged


def annotator_identity(annotator: Annotator) -> dict:
    fields = {k: v for k, v in asdict(annotator).items()
              if k not in RESOURCE_FIELDS and not (k in POLICY_FIELDS and not v)}
    conditions = [asdict(spec) for spec in annotator.conditions]
    return {"name": annotator.name, "version": annotator.version, "class": type(annotator).__name__,
            "config": fields, "conditions": conditions}


def keys_sha256(path: str) -> tuple[int, str]:
    keys = files.read_table(path, ["key"]).column("key").to_pylist()
    return len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()


def error_keys(part: str) -> tuple[str, ...]:
    """Keys of the rows of an annotation part whose status is "error"."""
    table = files.read_table(part, ["key", "status"])
    return tuple(k for k, s in zip(table.column("key").to_pylist(), table.column("status").to_pylist(), strict=True)
                 if s == "error")


class AnnotateJob(UnitJob[PartUnit]):
    """One annotator's store over every catalog part (the unit-job contract).

    `overwrite` redoes the store (and lets `plan` count stale parts as pending instead of refusing them);
    `retry_errors` plans, for each done part holding rows of status "error", a unit of those rows only."""

    num_cpus = STATELESS_CPUS

    def __init__(self, root: str, annotator: Annotator, overwrite: bool = False, retry_errors: bool = False,
                 max_error_rate: float = 0.2):
        self.root, self.annotator, self.max_error_rate = root, annotator, max_error_rate
        self.overwrite, self.retry_errors = overwrite, retry_errors and not overwrite

    @property
    def description(self) -> str:
        return f"annotate {self.annotator.store_name}"

    def _record(self) -> dict:
        return {"job": "annotate", **annotator_identity(self.annotator)}

    def changes(self) -> list[str] | None:
        return job_state.recorded_changes(DatasetLayout(self.root).store_record(self.annotator.store_name),
                                          self._record())

    def require_backend(self) -> None:
        """Refuse, before anything is loaded, a vLLM annotator where vllm is not installed."""
        if getattr(self.annotator, "backend", "hf") == "vllm":
            from onegen.annotators.vlm import require_vllm

            try:
                require_vllm()
            except ImportError as missing:
                raise MissingRequirement(f"{self.annotator.store_name}: {missing}") from None

    def prepare(self) -> None:
        """Write the job record, clear the store on --overwrite or a changed configuration."""
        annotator, layout = self.annotator, DatasetLayout(self.root)
        self.require_backend()
        output_root = layout.store_dir(annotator.store_name)
        hint = f"Bump {type(annotator).__name__}.version for new outputs, or pass --overwrite to redo {annotator.store_name}."
        changed = job_state.check_and_record(layout.store_record(annotator.store_name), self._record(),
                                             self.overwrite, hint)
        if changed or self.overwrite:  # --overwrite redoes the store, changed configuration or not
            for _, path in layout.catalog_parts():
                files.remove(files.join(output_root, path.rsplit("/", 2)[-2]))
            files.remove(layout.store_markers(annotator.store_name))
        files.clean_temporaries(output_root)

    def plan(self) -> list[PartUnit]:
        """One unit per catalog part; refuses stale parts unless overwrite, and missing requirements."""
        annotator, layout = self.annotator, DatasetLayout(self.root)
        stores = {name: layout.find_store(name) for name in annotator.requires}
        missing = [name for name, found in stores.items() if found is None]
        if missing:
            raise MissingRequirement(f"{annotator.name} needs {', '.join(missing)}: run `onegen annotate --annotators {','.join(missing)}` first")
        optional = {name: layout.find_store(name) for name in annotator.optional_requires}
        stores.update({name: found for name, found in optional.items() if found})
        units, stale = [], []
        for index, (_, path) in enumerate(layout.catalog_parts()):
            rows, sha = keys_sha256(path)
            unit = PartUnit(index, path, layout.store_part(annotator.store_name, path), rows, sha, ())
            if self._is_stale(unit):
                stale.append(unit.name)
            joins = tuple((name, layout.store_part(found, path)) for name, found in stores.items())
            absent = [name for name, joined in joins if name in annotator.requires and not files.exists(joined)]
            if absent:
                raise MissingRequirement(f"{annotator.name} needs {', '.join(absent)} for {unit.name}: run those annotators first")
            unit = replace(unit, joins=tuple((n, j) for n, j in joins if files.exists(j)))
            units.append(self._retry(unit) if self.retry_errors else unit)
        if stale and not self.overwrite:
            raise job_state.JobConflict(
                f"{annotator.store_name}: {len(stale)} catalog part(s) changed since they were annotated "
                f"({', '.join(stale[:3])}); pass --overwrite to annotate them again")
        return units

    def _is_stale(self, unit: PartUnit) -> bool:
        """Annotated, but from another version of the catalog part (its keys hash differs)."""
        found = files.read_json(self.marker(unit))
        if found is not None:
            return found.get("input") != unit.input
        return (files.exists(unit.output_path) and COMPLETION_META not in (meta := files.read_metadata(unit.output_path))
                and meta.get(CATALOG_KEYS_META) != unit.input)

    def _retry(self, unit: PartUnit) -> PartUnit:
        """`unit` narrowed to its rows of status "error" when it is done and has any."""
        record = self.record_of(unit)
        if record is None or not record["statuses"].get("error"):
            return unit
        keys = error_keys(unit.output_path)
        return replace(unit, rows=len(keys), retry_keys=keys) if keys else unit

    def marker(self, unit: PartUnit) -> str:
        return DatasetLayout(self.root).store_marker(self.annotator.store_name, unit.catalog_path)

    def record_of(self, unit: PartUnit) -> dict | None:
        """A retry unit is pending by definition: it exists because its part's record counts errors."""
        return None if unit.retry_keys else super().record_of(unit)

    def previous_record(self, unit: PartUnit) -> dict | None:
        """An annotation part committed before the marker rule (no completion stamp) holding the catalog
        part's keys hash was its own marker."""
        if not files.exists(unit.output_path):
            return None
        meta = files.read_metadata(unit.output_path)
        if COMPLETION_META in meta or meta.get(CATALOG_KEYS_META) != unit.input:
            return None
        return part_record(unit, files.read_table(unit.output_path, ["status"]))

    def run_unit(self, unit: PartUnit) -> dict:
        """Worker: read, annotate and commit one part with this annotator alone (no marker); its record."""
        from onegen.pipelines.jobs.annotate_work import annotate_rows, commit_parts

        group = group_unit([unit])
        [(_, record)] = commit_parts(annotate_rows(group, (self.annotator,)), group, (self.annotator,),
                                     self.max_error_rate)
        return record

    def run_pending(self, units: list[PartUnit], ray_config: RayConfig) -> list[dict]:
        return run_groups((self,), {u.index: group_unit([u]) for u in units}, ray_config)[0]

    def summarise(self, units: list[PartUnit], done: dict[str, dict], ran: list[dict]) -> AnnotateSummary:
        """Parts and status counts of the whole store, from the unit records alone."""
        statuses: dict[str, int] = {}
        latest = {**done, **{r["part"]: r for r in ran}}  # a retried part's record replaces its old one
        for record in latest.values():
            for status, times in record["statuses"].items():
                statuses[status] = statuses.get(status, 0) + times
        before = sum(1 for u in units if u.name in done)
        return AnnotateSummary(self.annotator.store_name, len(units), before, statuses)


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


def build_annotation_dataset(units: dict[int, GroupUnit], jobs: tuple[AnnotateJob, ...], max_error_rate: float = 0.2):
    """The lazy Ray Dataset that annotates and commits `units` (by catalog part index); its rows are unit
    records. Rows carry only the unit's number; every stage gets the typed units once, as an argument."""
    import ray
    from ray.data import ActorPoolStrategy

    annotators = tuple(job.annotator for job in jobs)
    dataset = unit_dataset(sorted(units)).map_batches(read_unit_rows, fn_args=(units,), batch_size=1,
                                                      batch_format="pyarrow", num_cpus=0.25)
    if len(annotators) == 1 and getattr(annotators[0], "backend", "hf") == "vllm":
        from onegen.pipelines.jobs.vllm_annotate import vllm_annotation_dataset

        annotated = vllm_annotation_dataset(dataset, annotators[0])
    else:
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
                fn_constructor_args=(annotators, {n: u.catalog_path for n, u in units.items()}),
                compute=pool,
                batch_size=min(a.batch_size for a in annotators),
                batch_format="pyarrow",
                num_gpus=max(a.num_gpus for a in annotators),
                num_cpus=max(a.num_cpus for a in annotators),
                udf_modifying_row_count=False,
                **ACTOR_ARGS,
            )
    return annotated.map_batches(commit_units, fn_args=(jobs, units, max_error_rate), batch_size=None,
                                 batch_format="pyarrow", num_cpus=0.25)


def run_groups(jobs: tuple[AnnotateJob, ...], units: dict[int, GroupUnit], ray_config: RayConfig) -> list[list[dict]]:
    """Annotate and commit `units` with the annotators of `jobs` in one pass; each job's part records.

    Units of empty catalog parts are committed here (nothing to run); the rest run on Ray: stateless
    annotators as one plain task per unit (pipelines/jobs/annotate_work.py), others through actor pools."""
    annotators = tuple(job.annotator for job in jobs)
    records: list[dict] = []
    for number, unit in list(units.items()):
        if unit.rows == 0:
            for position, part in enumerate(unit.parts):
                if part is not None:
                    files.commit_table(part.output_path, annotators[position].schema().empty_table(),
                                       {CATALOG_KEYS_META: part.input, **COMPLETION_STAMP})
                    record = finish_unit(jobs[position], part, part_record(part, annotators[position].schema().empty_table()))
                    records.append({"parts": {annotators[position].store_name: record}})
            del units[number]
    if units:
        init_ray(ray_config)
        require_gpus(annotators)
        max_error_rate = jobs[0].max_error_rate
        description = "annotate " + ",".join(a.store_name for a in annotators)
        ordered = [units[i] for i in sorted(units)]
        if stateless(annotators):  # nothing to keep warm: one plain task per unit
            records += run_unit_tasks(annotate_unit, ordered, (jobs, max_error_rate), STATELESS_CPUS,
                                      description, ray_config.progress_bars)
        else:
            records += collect_records(build_annotation_dataset(units, jobs, max_error_rate), len(ordered),
                                       description, ray_config.progress_bars)
    return [[r["parts"][a.store_name] for r in records if a.store_name in r["parts"]] for a in annotators]


def run_annotators(root: str, annotators: list[Annotator], overwrite: bool, ray_config: RayConfig,
                   retry_errors: bool = False, max_error_rate: float = 0.2) -> list[AnnotateSummary]:
    """Annotate with every annotator, fusable ones together in one pass; a summary per annotator.

    Each annotator is an `AnnotateJob` (prepare, plan, skip what is done, run, summarise: the steps of
    `unit_job.run_job`), except that the pending units of a group's jobs run together. `retry_errors`
    re-annotates only the rows of status "error" (each annotator alone); a unit with more than
    `max_error_rate` of its rows "error" fails the job (AnnotationFailed) and commits nothing."""
    summaries = []
    groups = [(a,) for a in annotators] if retry_errors else group_annotators(annotators)
    for group in groups:
        jobs = tuple(AnnotateJob(root, a, overwrite, retry_errors, max_error_rate) for a in group)
        plans = []
        for job in jobs:
            job.require_backend()
            if not (ray_config.address or os.environ.get("RAY_ADDRESS")):
                job.annotator.preflight()  # local job: the driver sees the same disk as the actors
            job.prepare()
            plans.append(pending_units(job))
        by_part: dict[int, list[PartUnit | None]] = {}  # catalog part index -> each job's unit there
        for position, (_, _, pending) in enumerate(plans):
            for unit in pending:
                by_part.setdefault(unit.index, [None] * len(jobs))[position] = unit
        ran = run_groups(jobs, {index: group_unit(parts) for index, parts in by_part.items()}, ray_config)
        summaries += [job.summarise(units, done, records)
                      for job, (units, done, _), records in zip(jobs, plans, ran, strict=True)]
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
