"""`onegen run RECIPE.toml [--plan] [--redo]`: every stage of a recipe (pipelines/recipe/parse.py), in one Ray.

Stages, in order: one ingest per source, the annotators (consecutive CPU annotators share a pass),
the dedup job when `[build] dedup` names one, the build, and train.json (the recipe's training mixture for `onegen
train --config`). Each stage is the job itself, resumable on its own: a rerun skips committed parts
and build units, so a killed run rerun with the same recipe finishes what is left.

`plan_recipe` says per stage what is done and what is pending (parts, rows) from the stores' own
records and markers (ingest's source_listing parts + catalog parts, annotate.plan_parts, build's cut_units + unit
markers) and starts no Ray. States: done, pending, changed (the stage's recorded configuration or
input differs from the recipe's: the job would refuse to resume), waiting (it needs an earlier
stage's outputs first).

A changed recipe: `onegen run` refuses, before anything starts, naming every changed stage and what
changed; `--redo` redoes exactly the changed stages (those jobs get overwrite; the others resume as they are)
and what depends on them: the build, whose input fingerprint holds the annotation records, is rebuilt
from the stored annotations, and a re-ingested source makes every annotator redo its store (its parts
are stale). No unchanged annotator runs again otherwise. Refusing by default keeps days of GPU work from being thrown away by
a typo in a recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from onegen.annotators.base import Annotator
from onegen.core.errors import PathError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, ShardLayout, part_name
from onegen.pipelines.hygiene.build_hygiene import dedup_table
from onegen.pipelines.jobs.annotate import MissingRequirement, annotator_identity, keys_sha256, plan_parts
from onegen.pipelines.jobs.build import BuildConfig, BuildInputError, cut_units
from onegen.pipelines.jobs.build import job_record as build_record
from onegen.pipelines.jobs.dedup import DONE_MARKER as DEDUP_DONE
from onegen.pipelines.jobs.ingest import IngestConfig, list_source
from onegen.pipelines.jobs.ingest import job_record as ingest_record
from onegen.pipelines.recipe.parse import Recipe, RecipeError, bundled_recipe, train_fields
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.sources.listing import Listing, list_parts

TRAIN_FILE = "train.json"


@dataclass
class StagePlan:
    """One stage's state: `parts` units in all (ingest/annotation parts, build units), `parts_done` of them
    committed; `rows` catalog rows (items for ingest) in all, `rows_pending` of them still to do."""

    stage: str
    state: str  # done | pending | changed | waiting
    parts: int
    parts_done: int
    rows: int
    rows_pending: int
    detail: str = ""
    unit: str = "parts"  # what `parts` counts: "parts", or "units" (build units)

    def line(self) -> str:
        counts = f"{self.parts_done}/{self.parts} {self.unit} done, {self.rows_pending} of {self.rows} rows pending"
        return f"{self.stage:<24} {self.state:<8} {counts}" + (f" ({self.detail})" if self.detail else "")


def plan_ingest(config: IngestConfig, listing: Listing | None = None) -> StagePlan:
    """Done / pending parts of one source, from `listing` or else a listing made here (streamed,
    nothing written); reads nothing else of the source."""
    listing = listing or list_parts(config.source, config.rows_per_part)
    parts = listing.part_sizes
    layout, source = DatasetLayout(config.out), config.source.source_name
    changes = job_state.recorded_changes(layout.ingest_record(source), ingest_record(config, listing))
    done = set() if changes else {p.rsplit("/", 1)[-1] for p in files.list_files(layout.catalog_dir(source), ".parquet")}
    pending = [i for i in range(len(parts)) if part_name(i) not in done]
    state = "changed" if changes else ("pending" if pending else "done")
    return StagePlan(f"ingest {source}", state, len(parts), len(parts) - len(pending), listing.items,
                     sum(parts[i] for i in pending), "; ".join(changes or []))


def plan_annotator(root: str, annotator: Annotator, upstream_pending: int) -> StagePlan:
    """Done / pending catalog parts of one annotator; `upstream_pending` = catalog rows not ingested yet."""
    layout = DatasetLayout(root)
    name = annotator.store_name
    changes = job_state.recorded_changes(layout.store_record(name), {"job": "annotate", **annotator_identity(annotator)})
    catalog = [(path, keys_sha256(path)[0]) for _, path in layout.catalog_parts()]
    rows = sum(count for _, count in catalog)
    detail = "; ".join(changes or [])
    if changes:
        return StagePlan(f"annotate {name}", "changed", len(catalog), 0, rows + upstream_pending, rows + upstream_pending,
                         detail)
    try:
        tasks, done = plan_parts(root, annotator, overwrite=True)
        pending_rows = sum(task.rows for task in tasks)
    except MissingRequirement as missing:  # its inputs come from an earlier stage of this run
        tasks, done, pending_rows, detail = catalog, 0, rows, str(missing)
    state = "waiting" if detail else ("pending" if tasks or upstream_pending else "done")
    if upstream_pending and not detail:
        detail = f"{upstream_pending} more rows after ingest"
    return StagePlan(f"annotate {name}", state, len(catalog), done, rows + upstream_pending,
                     pending_rows + upstream_pending, detail)


def plan_build(config: BuildConfig, upstream: list[StagePlan]) -> StagePlan:
    """Done / pending build units; waiting while an earlier stage is not done."""
    unfinished = [p.stage for p in upstream if p.state != "done"]
    if unfinished:
        return StagePlan("build", "waiting", 0, 0, 0, 0, f"after {', '.join(unfinished)}", "units")
    try:
        _, _, parts, record = build_record(config)
    except (BuildInputError, PathError) as error:  # its inputs come from an earlier stage of this run
        return StagePlan("build", "waiting", 0, 0, 0, 0, str(error), "units")
    shards = ShardLayout(config.out)
    changes = job_state.recorded_changes(shards.record(), record)
    units = cut_units(parts, config.unit_rows)
    finished = files.exists(shards.done_marker()) and not changes
    done = [u for n, u in enumerate(units) if not changes and files.exists(shards.unit_marker(n))]
    rows = sum(count for _, _, count in parts)
    pending_rows = 0 if finished else rows - sum(parts[i][2] for u in done for i in u)
    state = "changed" if changes else ("done" if finished else "pending")
    return StagePlan("build", state, len(units), len(done), rows, pending_rows, "; ".join(changes or []), "units")


def plan_dedup(recipe: Recipe, upstream: list[StagePlan]) -> StagePlan | None:
    """The dedup table `[build] dedup` reads (None when dedup is off): done when its marker exists and
    every stage before it is done (a changed catalog or hash store makes the job run again)."""
    table = dedup_table(recipe.root, recipe.build.hygiene)
    if table is None:
        return None
    name = f"dedup {recipe.build.hygiene.dedup}"
    unfinished = [p.stage for p in upstream if p.state != "done"]
    if unfinished:
        return StagePlan(name, "waiting", 1, 0, 0, 0, f"after {', '.join(unfinished)}")
    done = files.exists(files.join(table, DEDUP_DONE))
    return StagePlan(name, "done" if done else "pending", 1, int(done), 0, 0, table)


def run_dedup(recipe: Recipe, ray_config: RayConfig) -> dict:
    """Run the dedup job the build's hygiene names (`onegen dedup`): pHash or semantic."""
    hygiene = recipe.build.hygiene
    if hygiene.dedup == "phash":
        from onegen.pipelines.hygiene.dedup_groups import DedupConfig
        from onegen.pipelines.jobs.dedup import DedupJobConfig, run_phash_dedup

        return run_phash_dedup(DedupJobConfig(recipe.root, DedupConfig(hygiene.max_distance)), ray_config)
    from onegen.pipelines.hygiene.semdedup import SemDedupConfig
    from onegen.pipelines.jobs.semdedup import run_semantic_dedup

    return run_semantic_dedup(recipe.root, SemDedupConfig(threshold=hygiene.semantic_threshold), ray_config)


def plan_train(recipe: Recipe, build: StagePlan) -> StagePlan:
    path = files.join(recipe.shards, TRAIN_FILE)
    existing = files.read_json(path)
    state = "done" if existing == recipe.train and build.state == "done" else (
        "changed" if existing is not None and existing != recipe.train else "pending")
    return StagePlan(TRAIN_FILE, state, 1, int(state == "done"), 0, 0, path)


def require_sources(recipe: Recipe) -> None:
    """Raise RecipeError for a source path of `recipe` that does not exist, saying where relative paths
    resolve and how to point them elsewhere (`--dir`); for the bundled demo recipe, that `onegen demo`
    writes its inputs."""
    missing = [s.source.path for s in recipe.sources if not files.exists(s.source.path)]
    if not missing:
        return
    hint = f"relative paths of {recipe.path} resolve against {recipe.base}: pass --dir DIR to resolve them against DIR"
    if os.path.realpath(recipe.path) == os.path.realpath(bundled_recipe("demo")):
        hint += (f"; this is the demo's recipe, whose inputs `onegen demo --out DIR` writes (DIR/inputs/...), "
                 f"then `onegen run {recipe.path} --dir DIR`")
    raise RecipeError(f"source path does not exist: {missing[0]} ({hint})")


def plan_recipe(recipe: Recipe, listings: list[Listing] | None = None) -> list[StagePlan]:
    """Every stage's plan, from the stores alone (and the sources' `listings` when given, one per
    source): no Ray is started, no model is loaded. A missing source path is a RecipeError (`require_sources`)."""
    if listings is None:
        require_sources(recipe)
    plans = [plan_ingest(source, listing)
             for source, listing in zip(recipe.sources, listings or [None] * len(recipe.sources), strict=True)]
    not_ingested = sum(p.rows_pending for p in plans)
    plans += [plan_annotator(recipe.root, annotator, not_ingested) for annotator in recipe.annotators]
    dedup = plan_dedup(recipe, plans)
    plans += [dedup] if dedup else []
    build = plan_build(recipe.build, plans)
    return [*plans, build, plan_train(recipe, build)]


def run_recipe(recipe: Recipe, ray_config: RayConfig, redo: bool = False,
               echo: Callable[[str], None] = print) -> list[StagePlan]:
    """Run every stage that is not done, in one Ray; returns the plan it started from.

    Raises JobConflict, before any stage starts, when a stage changed and `redo` is False."""
    from onegen.pipelines.jobs.annotate import run_annotators
    from onegen.pipelines.jobs.build import run_build
    from onegen.pipelines.jobs.ingest import run_ingest

    unknown = sorted(set(recipe.train) - train_fields())
    if unknown:
        raise RecipeError(f"recipe: [train] has unknown field(s) {unknown}; fields: {', '.join(sorted(train_fields()))}")
    require_sources(recipe)
    listings = [list_source(source) for source in recipe.sources]  # each source listed once: plan and ingest
    plans = plan_recipe(recipe, listings)
    changed = [p for p in plans if p.state == "changed"]
    if changed and not redo:
        raise job_state.JobConflict(
            "recipe changed since these outputs were made: " + " | ".join(f"{p.stage}: {p.detail}" for p in changed)
            + ". Pass --redo to redo those stages (and the build after them); nothing else runs again")
    if any(p.state != "done" for p in plans[:-1]):
        init_ray(ray_config)  # one Ray for every stage; each job's own init_ray finds it started
    for plan in plans:
        echo(plan.line())
    sources = plans[: len(recipe.sources)]
    annotators = plans[len(recipe.sources) : len(recipe.sources) + len(recipe.annotators)]
    for source, plan, listing in zip(recipe.sources, sources, listings, strict=True):
        summary = run_ingest(dataclasses.replace(source, overwrite=plan.state == "changed"), ray_config, listing)
        echo(f"ingested {summary.source}: {summary.catalog_rows} catalog rows in {summary.parts} parts "
             f"({summary.parts_done_before} already done)")
    reingested = any(p.state == "changed" for p in sources)  # its annotation parts are stale: redo them
    redo_flags = [reingested or p.state == "changed" for p in annotators]
    for start, end in _runs(redo_flags):  # consecutive annotators with the same flag share one call
        for summary in run_annotators(recipe.root, list(recipe.annotators[start:end]), redo_flags[start], ray_config):
            echo(f"annotated {summary.annotator}: {summary.parts} parts ({summary.parts_done_before} already done)")
    dedup = next((p for p in plans if p.stage.startswith("dedup ")), None)
    if dedup is not None and dedup.state != "done":  # the table is made from the stores as they are now
        echo(f"{dedup.stage}: {run_dedup(recipe, ray_config)}")
    stats = run_build(dataclasses.replace(recipe.build, overwrite=bool(changed)), ray_config)
    echo(f"built {stats['samples']} samples in {stats['shards']} shards at {recipe.shards}: {stats['samples_per_task']}")
    files.commit_json(files.join(recipe.shards, TRAIN_FILE), json.loads(json.dumps(recipe.train)))
    echo(f"training mixture: {files.join(recipe.shards, TRAIN_FILE)} (onegen train --config it)")
    return plans


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of equal consecutive flags."""
    runs: list[tuple[int, int]] = []
    for index, flag in enumerate(flags):
        if runs and flags[runs[-1][0]] == flag:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs
