"""`onegen build DIR --out SHARDS`: catalog + annotations -> WebDataset shards + manifests, on workers.

Every task is its own stream of shards, so a trainer mixes tasks by choosing shards
(`onegen manifest select --task`). The catalog parts, in path order, are cut into **build units** of
consecutive parts holding at least `rows_per_unit` catalog rows (default 4 x samples_per_shard). A
unit is built and committed by one Ray task (pipelines/runtime/units.py): it reads its catalog parts and the
aligned annotation parts, makes every task's candidates in a fixed order (part, row, sample; the
ordinal is part << 32 | row << 8 | sample), and streams them into its own numbered shards per task,
`{prefix}-{task}-{unit:05d}-{n:06d}.tar` (manifests/layout.py), cut by count and bytes; skips go to
the skipped tables with their reason. The unit's record, units/unit-NNNNN.json, is written last and
is the only thing that reaches the driver. At the end the driver writes the wids index and the stats
(`_SUCCESS.json`) from the manifests.

Resume: a unit with a record is done; any other unit is built again whole (its shards come out byte
for byte the same, so what a killed run left of it is simply replaced). The job record (build.json)
fixes the configuration and an input fingerprint (catalog part keys + annotation store records): a
changed shard size, unit size, task set or input is refused unless --overwrite. Building again into a
new folder (or with --overwrite) re-shards from the stored annotations without running any model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from onegen.annotators.base import ConditionSpec
from onegen.core import tasks as task_table
from onegen.core.errors import UserError
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
from onegen.pipelines.hygiene.task_selection import PoseSelection, person_area_reason
from onegen.pipelines.jobs.annotate import keys_sha256
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.runtime.units import record_table, run_unit_tasks
from onegen.pipelines.samples.common import CAPTION_STORE, TEXT2IMAGE, TaskSource, candidates, choose_caption
from onegen.pipelines.samples.faceid import FACES_STORE, FaceidConfig, faceid_samples
from onegen.pipelines.samples.multiview import MultiviewConfig, multiview_samples
from onegen.pipelines.sources.catalog_images import ERROR_COLUMN, resolve_images

ORDINAL_SHIFT = 32  # ordinal = part << 32 | row << 8 | sample of that row
ROW_SHIFT = 8
MULTIVIEW, FACEID = "multiview", "faceid"
CAMERAS_STORE = "cameras"
LAYOUT_VERSION = 2  # 2: shards named per build unit; folders built by version 1 are refused, not mixed
ROWS_PER_UNIT_FACTOR = 4
BUILD_CPUS = 1.0  # per build unit task, as ingest (docs/decisions.md, "Ray")


class BuildInputError(UserError):
    """The catalog / annotations cannot make the asked-for shards (missing store, unknown task)."""


@dataclass(frozen=True)
class BuildConfig:
    root: str
    out: str
    tasks: tuple[str, ...] = ()  # empty: every task the stores can make
    samples_per_shard: int = 1000
    max_shard_bytes: int = 1 << 30
    prefix: str = "onegen"
    caption_mode: str = "original"  # original | dense | random
    overwrite: bool = False
    multiview: MultiviewConfig = MultiviewConfig()
    faceid: FaceidConfig = FaceidConfig()
    rows_per_unit: int = 0  # catalog rows a build unit gathers at least; 0: 4 x samples_per_shard
    hygiene: HygieneConfig = HygieneConfig()  # filters, dedup, pose / ID selection (none by default)

    @property
    def unit_rows(self) -> int:
        return self.rows_per_unit or ROWS_PER_UNIT_FACTOR * self.samples_per_shard


def available_tasks(root: str) -> dict[str, TaskSource]:
    """Tasks the stored annotations can make: each store's recorded conditions, and the scene / subject
    tasks of the task table (core/tasks.py) whose store exists. A condition token without a row
    in the table is refused (the trainer could not place its shards in a family)."""
    tasks = {TEXT2IMAGE: TaskSource(TEXT2IMAGE)}
    layout = DatasetLayout(root)
    for name in sorted({s.split("@", 1)[0] for s in layout.store_names()}):
        found = layout.find_store(name)
        record = files.read_json(layout.store_record(found)) or {}
        specs = record.get("conditions", [])
        unknown = task_table.unknown_condition_tasks([spec["task"] for spec in specs])
        if unknown:
            raise BuildInputError(f"{found} declares task(s) {unknown} with no row in the task table "
                                  "(onegen/pipelines/tasks.py ROWS): add one (token, family, views, annotator)")
        for spec in specs:
            tasks[spec["task"]] = TaskSource(spec["task"], found, ConditionSpec(**spec))
        for token in task_table.scene_and_subject_tasks(name):
            tasks[token] = TaskSource(token, found)
    return tasks


def choose_tasks(root: str, wanted: tuple[str, ...]) -> list[TaskSource]:
    available = available_tasks(root)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise BuildInputError(f"unknown or unannotated task(s) {unknown}; available here: {sorted(available)}")
    return [available[t] for t in (wanted or sorted(available))]


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


def part_candidates(part: dict, tasks: list[TaskSource], config: dict) -> list[tuple[str, str, int, Sample | str]]:
    """(task, catalog key, ordinal, Sample or skip reason) of one catalog part, in ordinal order."""
    catalog = resolve_images(files.read_table(part["catalog_path"])).to_pylist()
    joined = {name: files.read_table(path).to_pylist() for name, path in part["joins"]}
    wanted = {t.task: t for t in tasks}
    mode = config["caption_mode"]
    hygiene = _hygiene(config)
    filters = parse_filters(hygiene.filters)
    duplicates = _duplicates(config, part, hygiene)
    out, subjects = [], {}
    for index, row in enumerate(catalog):
        annotations = {name: table[index] for name, table in joined.items()}
        for name, annotation in annotations.items():
            if annotation["key"] != row["key"]:
                raise RuntimeError(f"{name} part for {part['catalog_path']} is not aligned with the catalog")
        ordinal = (part["part_index"] << ORDINAL_SHIFT) | (index << ROW_SHIFT)
        # a by-reference source that changed, a duplicate, a failed filter: every candidate says why
        reason = row[ERROR_COLUMN].split(":", 1)[0] if row.get(ERROR_COLUMN) else None
        if reason is None and row["kind"] == "image":
            reason = row_skip_reason(row["key"], annotations, duplicates, filters)
        if reason:
            out += [(t.task, row["key"], ordinal, reason) for t in tasks if _makes(t, row["kind"])]
        elif row["kind"] == "image":
            image_sha = _catalog_image_sha256(row)
            for task, result in candidates(row, ordinal, annotations, tasks, mode):
                if task == "pose2image" and not isinstance(result, str):
                    result = person_area_reason(annotations.get("pose"), row["width"], row["height"],
                                                hygiene.pose) or result
                if not isinstance(result, str):
                    result.member_sha256 = [image_sha if data is row["image"] else hashlib.sha256(data).hexdigest()
                                            for _, data in result.members]
                out.append((task, row["key"], ordinal, result))
        elif row["kind"] == "scene" and MULTIVIEW in wanted:
            caption = choose_caption(row, annotations, mode)
            results = multiview_samples(row, annotations.get(CAMERAS_STORE), caption,
                                        MultiviewConfig(**config["multiview"]), ordinal)
            out += [(MULTIVIEW, row["key"], ordinal + i, result) for i, result in enumerate(results)]
        elif row["kind"] == "subject_image" and FACEID in wanted:
            subjects.setdefault(row["subject"], []).append((index, ordinal, choose_caption(row, annotations, mode)))
    for members in subjects.values():
        faces = [joined[FACES_STORE][i] if FACES_STORE in joined else None for i, _, _ in members]
        keys = [catalog[i]["key"] for i, _, _ in members]
        excluded = faceid_exclusions(keys, [{n: t[i] for n, t in joined.items()} for i, _, _ in members],
                                     duplicates, filters, hygiene)
        results = faceid_samples([catalog[i] for i, _, _ in members], faces, [c for _, _, c in members],
                                 [o for _, o, _ in members], wanted[FACEID].store, FaceidConfig(**config["faceid"]),
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


def _hygiene(config: dict) -> HygieneConfig:
    raw = dict(config["hygiene"])
    return HygieneConfig(**{**raw, "filters": tuple(raw["filters"]), "pose": PoseSelection(**raw["pose"])})


def _duplicates(config: dict, part: dict, hygiene: HygieneConfig) -> dict[str, str]:
    """{key: representative} of this catalog part's duplicates (empty when dedup is off)."""
    if not hygiene.dedup:
        return {}
    source, part_file = part["catalog_path"].rsplit("/", 2)[-2:]
    return unit_duplicates(config["root"], hygiene, source, part_file, keys_sha256(part["catalog_path"])[1])


def _makes(task: TaskSource, kind: str) -> bool:
    """Whether rows of `kind` are candidates of `task` at all."""
    return {"scene": task.task == MULTIVIEW, "subject_image": task.task == FACEID}.get(
        kind, task.task not in (MULTIVIEW, FACEID))


def build_unit(unit: dict, config: dict):
    """Ray task, one build unit per call: its shards for every task, then its record (the marker)."""
    tasks = [TaskSource(t["task"], t["store"], ConditionSpec(**t["condition"]) if t["condition"] else None)
             for t in config["tasks"]]
    layout = ShardLayout(config["out"])
    writers = {t.task: ShardWriter(config["out"], config["prefix"], t.task, config["samples_per_shard"],
                                   config["max_shard_bytes"],
                                   stem=layout.shard_stem(config["prefix"], t.task, unit["unit"]))
               for t in tasks}
    for part in unit["parts"]:
        for task, catalog_key, ordinal, result in part_candidates(part, tasks, config):
            if isinstance(result, str):
                writers[task].skip(catalog_key, result, ordinal)
            else:
                writers[task].add(result)
    for writer in writers.values():
        writer.finish()
    record = {"unit": unit["unit"], "parts": [p["catalog_path"] for p in unit["parts"]],
              "tasks": {task: {"shards": len(w.written), "samples": sum(s.nsamples for s in w.written),
                               "bytes": sum(s.filesize for s in w.written)} for task, w in writers.items()}}
    files.commit_json(layout.unit_marker(unit["unit"]), record)
    return record_table([record])


def job_record(config: BuildConfig) -> tuple[list[TaskSource], list[str], list[tuple[str, str, int]], dict]:
    """(tasks, stores read, catalog parts, build.json record) of `config`; reads stores, starts nothing.

    Raises BuildInputError / PathError (user errors) when the stores cannot make the asked-for shards."""
    layout = DatasetLayout(config.root)
    tasks = choose_tasks(config.root, config.tasks)
    stores = sorted({t.store for t in tasks if t.store})
    check_hygiene_inputs(config.root, config.hygiene)
    for name in [CAPTION_STORE, *hygiene_stores(config.hygiene)]:
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
    return tasks, stores, parts, record


def run_build(config: BuildConfig, ray_config: RayConfig) -> dict:
    layout, shards = DatasetLayout(config.root), ShardLayout(config.out)
    tasks, stores, parts, record = job_record(config)
    job = {"tasks": [{"task": t.task, "store": t.store, "condition": asdict(t.condition) if t.condition else None}
                     for t in tasks],
           "out": config.out, "prefix": config.prefix, "samples_per_shard": config.samples_per_shard,
           "max_shard_bytes": config.max_shard_bytes, "caption_mode": config.caption_mode,
           "multiview": asdict(config.multiview), "faceid": asdict(config.faceid),
           "root": config.root, "hygiene": asdict(config.hygiene)}
    hint = "Pass --overwrite to rebuild these shards, or build into a new --out folder (no model runs again)."
    if job_state.check_and_record(shards.record(), record, config.overwrite, hint):
        for folder in (shards.manifests(), shards.skipped_dir(), shards.units()):
            files.remove(folder)
        for path in files.list_files(config.out, ".tar") + files.list_files(config.out, ".json"):
            if path != shards.record():
                files.remove(path)
    files.clean_temporaries(config.out)
    if files.exists(shards.done_marker()):
        return files.read_json(shards.done_marker())
    units = []
    for number, indices in enumerate(cut_units(parts, config.unit_rows)):
        if files.exists(shards.unit_marker(number)):
            continue
        units.append({"unit": number, "parts": [_part_reads(i, parts[i][1], stores, layout) for i in indices]})
    if units:
        init_ray(ray_config)
        run_unit_tasks(build_unit, units, (job,), BUILD_CPUS, "build", ray_config.progress_bars)
    return _finish(config)


def _part_reads(index: int, path: str, stores: list[str], layout: DatasetLayout) -> dict:
    joins = [(found.split("@", 1)[0], layout.store_part(found, path)) for found in stores]
    return {"part_index": index, "catalog_path": path, "joins": joins}


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
