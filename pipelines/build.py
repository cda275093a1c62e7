"""`onegen build DIR --out SHARDS`: catalog + annotations -> WebDataset shards + manifests.

Every task is its own stream of shards (`{prefix}-{task}-{n:06d}.tar`), so a trainer mixes tasks by
choosing shards (`onegen manifest select --task`). The candidate order is fixed: catalog parts in
path order, rows in part order, which gives each candidate an ordinal (part index << 32 | row).
Samples are made on Ray workers (one part at a time: read the catalog part and the aligned annotation
parts, build members, hash nothing twice) and streamed in order to the driver, which appends them to
the task's ShardWriter; shards are cut by count and bytes deterministically.

Resume: for each task, the committed shards are a prefix 0..n-1 (the driver commits in order); the
largest ordinal in shard n-1's manifest and skipped table is where that task restarts. Tar or
skipped files without their manifest are debris of a killed run and are deleted. The job record
(build.json) fixes the configuration and an input fingerprint (catalog part keys + annotation store
records): a changed shard size, task set or input is refused unless --overwrite. Building again into
a new folder (or with --overwrite) re-shards from the stored annotations without running any model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import pyarrow as pa

from onegen.annotators.base import ConditionSpec
from onegen.manifests import store
from onegen.manifests.shard_index import write_shard_index
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.pipelines import job_state
from onegen.pipelines.annotate import catalog_parts, find_store, keys_sha256, store_dir
from onegen.pipelines.faceid_samples import FACES_STORE, FaceidConfig, faceid_samples
from onegen.pipelines.multiview_samples import MultiviewConfig, multiview_samples
from onegen.pipelines.ray_setup import RayConfig, init_ray
from onegen.pipelines.samples import CAPTION_STORE, TEXT2IMAGE, TaskSource, candidates, choose_caption

ORDINAL_SHIFT = 32  # ordinal = part << 32 | row << 8 | sample of that row
ROW_SHIFT = 8
MULTIVIEW, FACEID = "multiview", "faceid"
CAMERAS_STORE = "cameras"
DONE_MARKER = "_SUCCESS.json"
SAMPLE_FIELDS = ("key", "prompt", "source", "n_views", "source_keys", "annotators", "width", "height")


class BuildInputError(Exception):
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


def available_tasks(root: str) -> dict[str, TaskSource]:
    """Tasks the stored annotations can make, from each store's recorded conditions."""
    tasks = {TEXT2IMAGE: TaskSource(TEXT2IMAGE)}
    fs, base = store.filesystem(store.join(root, "annotations"))
    names = {p.rsplit("/", 1)[-1].split("@", 1)[0] for p in fs.ls(base, detail=False)} if fs.exists(base) else set()
    for name in sorted(names):
        found = find_store(root, name)
        record = store.read_json(store.join(store_dir(root, found), "_job.json")) or {}
        for spec in record.get("conditions", []):
            tasks[spec["task"]] = TaskSource(spec["task"], found, ConditionSpec(**spec))
        if name == CAMERAS_STORE:
            tasks[MULTIVIEW] = TaskSource(MULTIVIEW, found)
        if name == FACES_STORE:
            tasks[FACEID] = TaskSource(FACEID, found)
    return tasks


def choose_tasks(root: str, wanted: tuple[str, ...]) -> list[TaskSource]:
    available = available_tasks(root)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise BuildInputError(f"unknown or unannotated task(s) {unknown}; available here: {sorted(available)}")
    return [available[t] for t in (wanted or sorted(available))]


def input_fingerprint(root: str, stores: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """Hash of catalog part keys + store records; also checks every part is annotated by each store."""
    digest = hashlib.sha256()
    parts = catalog_parts(root)
    for source, path in parts:
        digest.update(f"{path}:{keys_sha256(path)[1]}\n".encode())
        for found in stores:
            if not store.exists(store.join(store_dir(root, found), source, path.rsplit("/", 1)[-1])):
                name = found.split("@", 1)[0]
                raise BuildInputError(f"{found} has not annotated {source}/{path.rsplit('/', 1)[-1]}: run `onegen annotate --annotators {name}` first")
    for found in stores:
        digest.update(json.dumps(store.read_json(store.join(store_dir(root, found), "_job.json")), sort_keys=True).encode())
    return digest.hexdigest(), parts


def make_part_samples(batch: dict) -> pa.Table:
    """map_batches(batch_size=1): one part job (JSON) -> candidate rows (samples and skips) in order."""
    (job_json,) = batch["job"]
    job = json.loads(job_json)
    catalog = store.read_table(job["catalog_path"]).to_pylist()
    joined = {name: store.read_table(path).to_pylist() for name, path in job["joins"]}
    tasks = [TaskSource(t["task"], t["store"], ConditionSpec(**t["condition"]) if t["condition"] else None)
             for t in job["tasks"]]
    wanted = {t.task: t for t in tasks}
    mode = job["caption_mode"]
    rows, subjects = [], {}
    for index, row in enumerate(catalog):
        annotations = {name: table[index] for name, table in joined.items()}
        for name, annotation in annotations.items():
            if annotation["key"] != row["key"]:
                raise RuntimeError(f"{name} part for {job['catalog_path']} is not aligned with the catalog")
        ordinal = (job["part_index"] << ORDINAL_SHIFT) | (index << ROW_SHIFT)
        if row["kind"] == "image":
            for task, result in candidates(row, ordinal, annotations, tasks, mode):
                rows.append(_candidate_row(task, row["key"], ordinal, result))
        elif row["kind"] == "scene" and MULTIVIEW in wanted:
            config = MultiviewConfig(**job["multiview"])
            caption = choose_caption(row, annotations, mode)
            for i, result in enumerate(multiview_samples(row, annotations.get(CAMERAS_STORE), caption, config, ordinal)):
                rows.append(_candidate_row(MULTIVIEW, row["key"], ordinal + i, result))
        elif row["kind"] == "subject_image" and FACEID in wanted:
            subjects.setdefault(row["subject"], []).append((index, ordinal, choose_caption(row, annotations, mode)))
    for members in subjects.values():
        faces = [joined[FACES_STORE][i] if FACES_STORE in joined else None for i, _, _ in members]
        results = faceid_samples([catalog[i] for i, _, _ in members], faces, [c for _, _, c in members],
                                 [o for _, o, _ in members], wanted[FACEID].store, FaceidConfig(**job["faceid"]))
        for position, result in results:
            index, ordinal, _ = members[position]
            rows.append(_candidate_row(FACEID, catalog[index]["key"], ordinal, result))
    rows.sort(key=lambda r: r["ordinal"])  # each task's stream must be in ordinal order (resume)
    return pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)


CANDIDATE_SCHEMA = pa.schema(
    [("task", pa.string()), ("catalog_key", pa.string()), ("ordinal", pa.int64()), ("skip_reason", pa.string()),
     ("key", pa.string()), ("prompt", pa.string()), ("source", pa.string()), ("n_views", pa.int32()),
     ("source_keys", pa.list_(pa.string())), ("annotators", pa.list_(pa.string())), ("width", pa.int32()),
     ("height", pa.int32()), ("member_names", pa.list_(pa.string())), ("member_data", pa.list_(pa.binary())),
     ("member_sha256", pa.list_(pa.string()))]
)


def _candidate_row(task: str, catalog_key: str, ordinal: int, result: Sample | str) -> dict:
    row = {"task": task, "catalog_key": catalog_key, "ordinal": ordinal}
    if isinstance(result, str):
        return {**row, "skip_reason": result}
    fields = {name: getattr(result, name) for name in SAMPLE_FIELDS}
    # hashed here, on the Ray workers, so the driver that writes the tars only copies bytes
    return {**row, **fields, "skip_reason": None, "member_names": [n for n, _ in result.members],
            "member_data": [d for _, d in result.members],
            "member_sha256": [hashlib.sha256(d).hexdigest() for _, d in result.members]}


def resume_point(out: str, prefix: str, task: str) -> tuple[int, int]:
    """(next shard index, last ordinal already covered) for one task; deletes uncommitted debris."""
    stem = f"{prefix}-{task}-"
    manifests = [p for p in store.list_files(store.join(out, "manifests"), ".parquet") if p.rsplit("/", 1)[-1].startswith(stem)]
    names = sorted(p.rsplit("/", 1)[-1][: -len(".parquet")] for p in manifests)
    expected = [f"{stem}{i:06d}" for i in range(len(names))]
    if names != expected:
        raise RuntimeError(f"shards of {task} are not a contiguous prefix ({names[:3]}...): rebuild with --overwrite")
    committed = set(names)
    for folder, suffix in (("", ".tar"), ("skipped", ".parquet")):
        for path in store.list_files(store.join(out, folder) if folder else out, suffix):
            name = path.rsplit("/", 1)[-1][: -len(suffix)]
            if name.startswith(stem) and "-tail-" not in name and name not in committed:
                store.remove(path)
    if not names:
        return 0, -1
    last = names[-1]
    ordinals = store.read_table(store.join(out, "manifests", f"{last}.parquet"), ["ordinal"]).column("ordinal").to_pylist()
    skipped_path = store.join(out, "skipped", f"{last}.parquet")
    if store.exists(skipped_path):
        ordinals += store.read_table(skipped_path, ["ordinal"]).column("ordinal").to_pylist()
    return len(names), max(ordinals)


def run_build(config: BuildConfig, ray_config: RayConfig) -> dict:
    tasks = choose_tasks(config.root, config.tasks)
    stores = sorted({t.store for t in tasks if t.store})
    caption_store = find_store(config.root, CAPTION_STORE)
    if caption_store and caption_store not in stores:
        stores.append(caption_store)
    fingerprint, parts = input_fingerprint(config.root, stores)
    record = {"job": "build", "root": config.root, "tasks": [t.task for t in tasks], "stores": stores,
              "samples_per_shard": config.samples_per_shard, "max_shard_bytes": config.max_shard_bytes,
              "prefix": config.prefix, "caption_mode": config.caption_mode, "input": fingerprint,
              "multiview": asdict(config.multiview), "faceid": asdict(config.faceid)}
    hint = "Pass --overwrite to rebuild these shards, or build into a new --out folder (no model runs again)."
    if job_state.check_and_record(store.join(config.out, "build.json"), record, config.overwrite, hint):
        for folder in ("manifests", "skipped"):
            store.remove(store.join(config.out, folder))
        for path in store.list_files(config.out, ".tar") + store.list_files(config.out, ".json"):
            if not path.endswith("build.json"):
                store.remove(path)
    store.clean_temporaries(config.out)
    if store.exists(store.join(config.out, DONE_MARKER)):
        return store.read_json(store.join(config.out, DONE_MARKER))
    writers, covered = {}, {}
    for task in tasks:
        next_index, covered[task.task] = resume_point(config.out, config.prefix, task.task)
        writers[task.task] = ShardWriter(config.out, config.prefix, task.task, config.samples_per_shard,
                                         config.max_shard_bytes, next_index=next_index)
    first_part = min(max(o, 0) >> ORDINAL_SHIFT for o in covered.values())
    jobs = [_part_job(i, source, path, stores, tasks, config) for i, (source, path) in enumerate(parts) if i >= first_part]
    if jobs:
        init_ray(ray_config)
        _stream_candidates(jobs, writers, covered, ray_config)
    for writer in writers.values():
        writer.finish()
    return _finish(config)


def _part_job(index: int, source: str, path: str, stores: list[str], tasks: list[TaskSource], config: BuildConfig) -> dict:
    part = path.rsplit("/", 1)[-1]
    joins = [(found.split("@", 1)[0], store.join(store_dir(config.root, found), source, part)) for found in stores]
    return {"part_index": index, "catalog_path": path, "joins": joins, "caption_mode": config.caption_mode,
            "multiview": asdict(config.multiview), "faceid": asdict(config.faceid),
            "tasks": [{"task": t.task, "store": t.store, "condition": asdict(t.condition) if t.condition else None}
                      for t in tasks]}


def _stream_candidates(jobs: list[dict], writers: dict[str, ShardWriter], covered: dict[str, int],
                       ray_config: RayConfig) -> None:
    import ray
    from tqdm.auto import tqdm

    dataset = ray.data.from_items([{"job": json.dumps(j)} for j in jobs], override_num_blocks=len(jobs))
    dataset = dataset.map_batches(make_part_samples, batch_size=1, num_cpus=0.5)
    bar = tqdm(desc="build samples", unit="sample", disable=not ray_config.progress_bars)
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            if row["ordinal"] <= covered[row["task"]]:
                continue  # already in a committed shard or skipped table
            writer = writers[row["task"]]
            if row["skip_reason"] is not None:
                writer.skip(row["catalog_key"], row["skip_reason"], row["ordinal"])
                continue
            members = list(zip(row["member_names"], row["member_data"], strict=True))
            writer.add(Sample(task=row["task"], members=members, ordinal=row["ordinal"],
                              member_sha256=row["member_sha256"], **{name: row[name] for name in SAMPLE_FIELDS}))
            bar.update(1)
    bar.close()


def _finish(config: BuildConfig) -> dict:
    """Write the wids shard index (from the manifests) and the done marker; return the stats."""
    shards = write_shard_index(config.out, config.prefix)
    per_task: dict[str, int] = {}
    for shard in shards:
        per_task[shard["task"]] = per_task.get(shard["task"], 0) + shard["nsamples"]
    stats = {"shards": len(shards), "samples": sum(per_task.values()), "samples_per_task": per_task,
             "bytes": sum(s["filesize"] for s in shards)}
    store.commit_json(store.join(config.out, DONE_MARKER), stats)
    return stats
