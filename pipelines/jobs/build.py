"""`onegen build DIR --out SHARDS`: catalog + annotations -> WebDataset shards + manifests, on workers.

Every task is its own stream of shards, so a trainer mixes tasks by choosing shards
(`onegen manifest select --task`). The catalog parts, in path order, are cut into **build units** of
consecutive parts holding at least `rows_per_unit` catalog rows (default 4 x samples_per_shard). A
unit (`BuildUnit`, the unit-job contract of pipelines/runtime/unit_job.py) is built and committed by
one Ray task, which gets the `BuildJob` (its `BuildConfig` and chosen tasks, typed) and the unit as
planned: it reads its catalog parts and the aligned annotation parts, makes every task's candidates in
a fixed order (part, row, sample; the ordinal is part << 32 | row << 8 | sample), and streams them into
its own numbered shards per task, `{prefix}-{task}-{unit:05d}-{n:06d}.tar` (manifests/layout.py), cut
by count and bytes; skips go to the skipped tables with their reason. The unit's marker,
_units/unit-NNNNN.json holding its record, is written last; the record is the only thing that
reaches the driver. At the end the driver writes the wids index and the stats (`_SUCCESS.json`) from
the manifests.

Resume: a unit with a marker is done (folders built before the marker rule: units/unit-NNNNN.json);
any other unit is built again whole (its shards come out byte for byte the same, so what a killed run
left of it is simply replaced). The job record (build.json)
fixes the configuration and an input fingerprint (catalog part keys + annotation store records): a
changed shard size, unit size, task set or input is refused unless --overwrite. Building again into a
new folder (or with --overwrite) re-shards from the stored annotations without running any model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass

from onegen.annotators.base import ConditionSpec
from onegen.core import tasks as task_table
from onegen.core.errors import UserError
from onegen.core.source_columns import SOURCE_COLUMN_PREFIX
from onegen.core.tasks import FACEID, MULTIVIEW, POSE2IMAGE, TEXT2IMAGE
from onegen.manifests import files
from onegen.manifests.dataset_card import write_dataset_card
from onegen.manifests.layout import DatasetLayout, ShardLayout
from onegen.manifests.shard_index import write_shard_index
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.pipelines.hygiene.build_hygiene import (
    HygieneConfig,
    check_hygiene_inputs,
    faceid_exclusions,
    hygiene_stores,
    parse_filters,
    row_skip_reason,
    unit_duplicates,
)
from onegen.pipelines.hygiene.filters import SOURCE_STORE, reads_source, source_fields
from onegen.pipelines.hygiene.task_selection import POSE_STORE, person_area_reason
from onegen.pipelines.jobs.annotate import keys_sha256
from onegen.pipelines.jobs.settings import BuildConfig
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig
from onegen.pipelines.runtime.unit_job import UnitJob, run_job
from onegen.pipelines.samples.common import CAPTION_STORE, TaskSource, candidates, choose_caption
from onegen.pipelines.samples.faceid import FACES_STORE, faceid_samples
from onegen.pipelines.samples.multiview import CAMERAS_STORE, multiview_samples
from onegen.pipelines.samples.policy import (
    EVERY_SOURCE,
    SourcePolicy,
    parse_policies,
    policy_for,
)
from onegen.pipelines.sources.catalog_images import ERROR_COLUMN, resolve_images

ORDINAL_SHIFT = 32  # ordinal = part << 32 | row << 8 | sample of that row
ROW_SHIFT = 8
LAYOUT_VERSION = 2  # 2: shards named per build unit; folders built by version 1 are refused, not mixed
BUILD_CPUS = 1.0  # per build unit task, as ingest (docs/decisions.md, "Ray")


class BuildInputError(UserError):
    """The catalog / annotations cannot make the asked-for shards (missing store, unknown task)."""


def available_tasks(root: str) -> dict[str, list[TaskSource]]:
    """Every way the stored annotations can make each task: each store's recorded conditions, and the scene /
    subject tasks of the task table (core/tasks.py) whose store exists. A task two stores make (depth@1 and
    depth_gt@1) lists both; `source_tasks` picks one per source by policy. A condition token without a row
    in the table is refused (the trainer could not place its shards in a family)."""
    tasks: dict[str, list[TaskSource]] = {TEXT2IMAGE: [TaskSource(TEXT2IMAGE)]}
    layout = DatasetLayout(root)
    for name in sorted({s.split("@", 1)[0] for s in layout.store_names()}):
        found = layout.find_store(name)
        record = files.read_json(layout.store_record(found)) or {}
        specs = record.get("conditions", [])
        unknown = task_table.unknown_condition_tasks([spec["task"] for spec in specs])
        if unknown:
            raise BuildInputError(f"{found} declares task(s) {unknown} with no row in the task table "
                                  "(core/tasks.py ROWS): add one (token, family, views, annotator)")
        for spec in specs:
            tasks.setdefault(spec["task"], []).append(TaskSource(spec["task"], found, ConditionSpec(**spec)))
        for token in task_table.scene_and_subject_tasks(name):
            tasks.setdefault(token, []).append(TaskSource(token, found))
    return tasks


def source_tasks(available: dict[str, list[TaskSource]], wanted: tuple[str, ...], sources: list[str],
                 policies: dict[str, SourcePolicy]) -> dict[str, tuple[TaskSource, ...]]:
    """{catalog source: its tasks, each from one store}: a task two stores make is made, for each source,
    by the store its policy's `stores` names; without one the build is refused with one line naming both
    (never a silent pick). Unknown wanted tasks are refused too."""
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise BuildInputError(f"unknown or unannotated task(s) {unknown}; available here: {sorted(available)}")
    chosen: dict[str, tuple[TaskSource, ...]] = {}
    for source in sources:
        named = policy_for(policies, source).stores
        picks = []
        for task in wanted or sorted(available):
            options = available[task]
            if len(options) > 1:
                options = [o for o in options if o.store.split("@", 1)[0] in named]
                if len(options) != 1:
                    both = " and ".join(o.store for o in available[task])
                    raise BuildInputError(f"two stores make {task}: {both}; source {source!r} names no one of them "
                                          f"(--policy {source}.stores=<store>, or '*.stores=<store>' for every source)")
            picks.append(options[0])
        chosen[source] = tuple(picks)
    return chosen


def check_policies(policies: dict[str, SourcePolicy], sources: list[str], store_names: set[str]) -> None:
    """Refuse a policy naming a source the catalog lacks or a store the dataset lacks: a typo would
    otherwise fall back to the defaults without a word."""
    for source, policy in policies.items():
        if source != EVERY_SOURCE and source not in sources:
            raise BuildInputError(f"--policy names source {source!r}, which the catalog lacks (sources: "
                                  f"{', '.join(sources)})")
        missing = [s for s in policy.stores if s not in store_names]
        if policy.dense and not policy.dense.startswith(SOURCE_COLUMN_PREFIX) and policy.dense not in store_names:
            missing.append(policy.dense)
        if missing:
            raise BuildInputError(f"--policy for {source!r} names store(s) {missing} that this dataset lacks "
                                  f"(stores: {', '.join(sorted(store_names))})")


def input_fingerprint(root: str, stores: list[str]) -> tuple[str, list[tuple[str, str, int]]]:
    """Hash of catalog part keys + store records, and (source, path, rows) of every catalog part;
    also checks every part is annotated by each store."""
    layout = DatasetLayout(root)
    digest = hashlib.sha256()
    parts = []
    for source, path in layout.catalog_parts():
        rows, keys = keys_sha256(path)
        digest.update(f"{path}:{keys}\n".encode())
        parts.append((source, path, rows))
        for found in stores:
            if not files.exists(layout.store_part(found, path)):
                name = found.split("@", 1)[0]
                raise BuildInputError(f"{found} has not annotated {source}/{path.rsplit('/', 1)[-1]}: run `onegen annotate --annotators {name}` first")
    for found in stores:
        digest.update(json.dumps(files.read_json(layout.store_record(found)), sort_keys=True).encode())
    return digest.hexdigest(), parts


def cut_units(parts: list[tuple[str, str, int]], unit_rows: int) -> list[list[int]]:
    """Consecutive catalog part indices, each unit closing once it holds >= `unit_rows` rows."""
    units: list[list[int]] = []
    rows = 0
    for index, (_, _, count) in enumerate(parts):
        if not units or rows >= unit_rows:
            units.append([])
            rows = 0
        units[-1].append(index)
        rows += count
    return units


def part_candidates(part: PartRead, tasks: tuple[TaskSource, ...], config: BuildConfig,
                    policy: SourcePolicy | None = None) -> list[tuple[str, str, int, Sample | str]]:
    """(task, catalog key, ordinal, Sample or skip reason) of one catalog part, in ordinal order; `tasks`
    and `policy` are the part's source's (its caption mode and dense caption; the build's --caption else)."""
    catalog = resolve_images(files.read_table(part.catalog_path)).to_pylist()
    joined = {name: files.read_table(path).to_pylist() for name, path in part.joins}
    wanted = {t.task: t for t in tasks}
    policy = policy or SourcePolicy()
    mode = policy.caption or config.caption_mode
    dense_from = policy.dense or CAPTION_STORE
    hygiene = config.hygiene
    filters = parse_filters(hygiene.filters + policy.filters)  # the build's, then the source's own
    duplicates = _duplicates(config.root, part, hygiene)
    with_source = reads_source(filters)
    out, subjects = [], {}
    for index, row in enumerate(catalog):
        annotations = {name: table[index] for name, table in joined.items()}
        for name, annotation in annotations.items():
            if annotation["key"] != row["key"]:
                raise RuntimeError(f"{name} part for {part.catalog_path} is not aligned with the catalog")
        if with_source:  # `source.<column>` filters read the catalog row's own columns
            annotations[SOURCE_STORE] = source_fields(row)
        ordinal = (part.part_index << ORDINAL_SHIFT) | (index << ROW_SHIFT)
        # a by-reference source that changed, a duplicate, a failed filter: every candidate says why
        reason = row[ERROR_COLUMN].split(":", 1)[0] if row.get(ERROR_COLUMN) else None
        if reason is None and row["kind"] == "image":
            reason = row_skip_reason(row["key"], annotations, duplicates, filters)
        if reason:
            out += [(t.task, row["key"], ordinal, reason) for t in tasks
                    if task_table.made_from_rows(t.task, row["kind"])]
        elif row["kind"] == "image":
            image_sha = _catalog_image_sha256(row)
            for task, result in candidates(row, ordinal, annotations, tasks, mode, dense_from):
                if task == POSE2IMAGE and not isinstance(result, str):
                    result = person_area_reason(annotations.get(POSE_STORE), row["width"], row["height"],
                                                hygiene.pose) or result
                if not isinstance(result, str):
                    result.member_sha256 = [image_sha if data is row["image"] else hashlib.sha256(data).hexdigest()
                                            for _, data in result.members]
                out.append((task, row["key"], ordinal, result))
        elif row["kind"] == "scene" and MULTIVIEW in wanted:
            caption = choose_caption(row, annotations, mode, dense_from)
            results = multiview_samples(row, annotations.get(CAMERAS_STORE), caption,
                                        config.multiview, ordinal)
            out += [(MULTIVIEW, row["key"], ordinal + i, result) for i, result in enumerate(results)]
        elif row["kind"] == "subject_image" and FACEID in wanted:
            subjects.setdefault(row["subject"], []).append((index, ordinal, choose_caption(row, annotations, mode, dense_from)))
    for members in subjects.values():
        faces = [joined[FACES_STORE][i] if FACES_STORE in joined else None for i, _, _ in members]
        keys = [catalog[i]["key"] for i, _, _ in members]
        found = [{**{n: t[i] for n, t in joined.items()},
                  **({SOURCE_STORE: source_fields(catalog[i])} if with_source else {})} for i, _, _ in members]
        excluded = faceid_exclusions(keys, found, duplicates, filters, hygiene)
        results = faceid_samples([catalog[i] for i, _, _ in members], faces, [c for _, _, c in members],
                                 [o for _, o, _ in members], wanted[FACEID].store, config.faceid,
                                 excluded)
        for position, result in results:
            index, ordinal, _ = members[position]
            out.append((FACEID, catalog[index]["key"], ordinal, result))
    out.sort(key=lambda candidate: candidate[2])  # each task's stream in ordinal order
    return out


def _catalog_image_sha256(row: dict) -> str:
    """sha256 of the row's catalog image bytes, hashed once per row rather than once per task. Bytes
    ingest kept as they were (`reencoded` false in meta; by-reference bytes were just checked against
    it) are the original, whose hash the catalog already holds: not hashed again. If stored bytes
    had rotted since, `onegen manifest verify` finds them disagreeing with the manifest."""
    if row.get("sha256") and json.loads(row.get("meta") or "{}").get("reencoded") is False:
        return row["sha256"]
    return hashlib.sha256(row["image"]).hexdigest()


def _duplicates(root: str, part: PartRead, hygiene: HygieneConfig) -> dict[str, str]:
    """{key: representative} of this catalog part's duplicates (empty when dedup is off)."""
    if not hygiene.dedup:
        return {}
    return unit_duplicates(root, hygiene, part.catalog_path, keys_sha256(part.catalog_path)[1])


def job_record(config: BuildConfig) -> tuple[list[TaskSource], dict[str, tuple[TaskSource, ...]], list[str],
                                             list[tuple[str, str, int]], dict]:
    """(tasks, each source's tasks, stores read, catalog parts, build.json record) of `config`; reads
    stores, starts nothing. `tasks` holds one TaskSource per task token (the shard streams).

    Raises BuildInputError / PathError (user errors) when the stores cannot make the asked-for shards."""
    layout = DatasetLayout(config.root)
    policies = parse_policies(config.policies)
    sources = sorted({source for source, _ in layout.catalog_parts()})
    store_names = {s.split("@", 1)[0] for s in layout.store_names()}
    check_policies(policies, sources, store_names)
    by_source = source_tasks(available_tasks(config.root), config.tasks, sources, policies)
    tasks = list({t.task: t for picks in by_source.values() for t in picks}.values())
    stores = sorted({t.store for picks in by_source.values() for t in picks if t.store})
    # the sources' own filters are checked, and their stores joined, as the build-wide ones
    every_filter = dataclasses.replace(config.hygiene, filters=config.hygiene.filters + tuple(
        f for p in policies.values() for f in p.filters))
    check_hygiene_inputs(config.root, every_filter)
    dense = [p.dense for p in policies.values() if p.dense and not p.dense.startswith(SOURCE_COLUMN_PREFIX)]
    for name in [CAPTION_STORE, *dense, *hygiene_stores(every_filter)]:
        found = layout.find_store(name)
        if found and found not in stores:
            stores.append(found)
    fingerprint, parts = input_fingerprint(config.root, stores)
    record = {"job": "build", "root": config.root, "tasks": [t.task for t in tasks], "stores": stores,
              "samples_per_shard": config.samples_per_shard, "max_shard_bytes": config.max_shard_bytes,
              "prefix": config.prefix, "caption_mode": config.caption_mode, "input": fingerprint,
              "multiview": asdict(config.multiview), "faceid": asdict(config.faceid),
              "rows_per_unit": config.rows_per_unit, "layout": LAYOUT_VERSION}
    if config.hygiene != HygieneConfig():  # recorded only when used: a threshold change is a changed build
        record["hygiene"] = asdict(config.hygiene)
    if config.policies:  # likewise: folders built without policies keep their record
        record["policies"] = list(config.policies)
    return tasks, by_source, stores, parts, record


@dataclass(frozen=True)
class PartRead:
    """One catalog part of a build unit and the aligned annotation parts it joins."""

    part_index: int  # position among every catalog part (path order): the ordinal's high bits
    catalog_path: str
    joins: tuple[tuple[str, str], ...]  # (annotator name, its part for this catalog part)
    source: str = ""  # the catalog source the part belongs to: its policy and its tasks' stores


@dataclass(frozen=True)
class BuildUnit:
    """Consecutive catalog parts built into their own shards by one task."""

    number: int
    parts: tuple[PartRead, ...]
    rows: int  # catalog rows of its parts
    input: str = ""  # build.json fixes the input (its fingerprint)

    @property
    def name(self) -> str:
        return f"unit-{self.number:05d}"


class BuildJob(UnitJob[BuildUnit]):
    """catalog + annotations -> shards (the unit-job contract). Made by `BuildJob.of(config)`, which
    reads the stores once; workers get this object as it is (config and tasks typed)."""

    description = "build"
    num_cpus = BUILD_CPUS

    def __init__(self, config: BuildConfig, tasks: list[TaskSource], by_source: dict[str, tuple[TaskSource, ...]],
                 stores: list[str], parts: list[tuple[str, str, int]], record: dict):
        self.config, self.tasks, self.stores, self.parts, self.record = config, tuple(tasks), stores, parts, record
        self.by_source = by_source  # each catalog source's tasks, each from the store its policy picks
        self.policies = parse_policies(config.policies)

    @classmethod
    def of(cls, config: BuildConfig) -> BuildJob:
        """Raises BuildInputError / FileNotFoundError when the stores cannot make the asked-for shards."""
        return cls(config, *job_record(config))

    def changes(self) -> list[str] | None:
        return job_state.recorded_changes(ShardLayout(self.config.out).record(), self.record)

    def prepare(self) -> None:
        config, shards = self.config, ShardLayout(self.config.out)
        hint = "Pass --overwrite to rebuild these shards, or build into a new --out folder (no model runs again)."
        if job_state.check_and_record(shards.record(), self.record, config.overwrite, hint):
            for folder in (shards.manifests(), shards.skipped_dir(), shards.units(), shards.unit_markers()):
                files.remove(folder)
            for path in files.list_files(config.out, ".tar") + files.list_files(config.out, ".json"):
                if path != shards.record():
                    files.remove(path)
        files.clean_temporaries(config.out)

    def plan(self) -> list[BuildUnit]:
        layout = DatasetLayout(self.config.root)
        return [BuildUnit(number, tuple(_part_reads(i, self.parts[i], self.stores, layout) for i in indices),
                          sum(self.parts[i][2] for i in indices))
                for number, indices in enumerate(cut_units(self.parts, self.config.unit_rows))]

    def marker(self, unit: BuildUnit) -> str:
        return ShardLayout(self.config.out).unit_marker(unit.number)

    def previous_record(self, unit: BuildUnit) -> dict | None:
        """Folders built before the marker rule hold the unit's bare record at units/unit-NNNNN.json."""
        return files.read_json(ShardLayout(self.config.out).previous_unit_marker(unit.number))

    def run_unit(self, unit: BuildUnit) -> dict:
        """Worker: the unit's shards for every task (tar, skipped, manifest each); its record."""
        config = self.config
        layout = ShardLayout(config.out)
        writers = {t.task: ShardWriter(config.out, config.prefix, t.task, config.samples_per_shard,
                                       config.max_shard_bytes, stem=layout.shard_stem(config.prefix, t.task, unit.number))
                   for t in self.tasks}
        for part in unit.parts:
            for task, catalog_key, ordinal, result in part_candidates(part, self.by_source[part.source], config,
                                                                       policy_for(self.policies, part.source)):
                if isinstance(result, str):
                    writers[task].skip(catalog_key, result, ordinal)
                else:
                    writers[task].add(result)
        for writer in writers.values():
            writer.finish()
        return {"unit": unit.number, "parts": [p.catalog_path for p in unit.parts],
                "tasks": {task: {"shards": len(w.written), "samples": sum(s.nsamples for s in w.written),
                                 "bytes": sum(s.filesize for s in w.written)} for task, w in writers.items()}}

    def summarise(self, units: list[BuildUnit], done: dict[str, dict], ran: list[dict]) -> dict:
        """The stats; a finished folder's as recorded, else the index and stats written now."""
        finished = ShardLayout(self.config.out).done_marker()
        if not ran and files.exists(finished):
            return files.read_json(finished)
        return _finish(self.config)


def run_build(config: BuildConfig, ray_config: RayConfig) -> dict:
    return run_job(BuildJob.of(config), ray_config)


def _part_reads(index: int, part: tuple[str, str, int], stores: list[str], layout: DatasetLayout) -> PartRead:
    source, path, _ = part
    return PartRead(index, path, tuple((found.split("@", 1)[0], layout.store_part(found, path)) for found in stores),
                    source)


def _finish(config: BuildConfig) -> dict:
    """Write the wids shard index (from the manifests) and the done marker; return the stats."""
    shards = write_shard_index(config.out, config.prefix)
    write_dataset_card(config.out, config.prefix)  # README.md: HF dataset-card configs, one per task
    per_task: dict[str, int] = {}
    for shard in shards:
        per_task[shard["task"]] = per_task.get(shard["task"], 0) + shard["nsamples"]
    stats = {"shards": len(shards), "samples": sum(per_task.values()), "samples_per_task": per_task,
             "bytes": sum(s["filesize"] for s in shards)}
    files.commit_json(ShardLayout(config.out).done_marker(), stats)
    return stats
