"""`onegen run RECIPE.toml [--plan] [--redo]`: every stage of a recipe (pipelines/recipe/parse.py), in one Ray.

Stages, in order: one ingest per source, the annotators (consecutive CPU annotators share a pass),
the dedup job when `[build] dedup` names one, the build, and train.json (the recipe's training mixture for `onegen
train --config`). Each stage is the job itself, resumable on its own: a rerun skips committed parts
and build units, so a killed run rerun with the same recipe finishes what is left.

`plan_recipe` says per stage what is done and what is pending (units, rows) by asking each stage's job
its own contract (pipelines/runtime/unit_job.py: `changes()`, `plan()`, `is_done(unit)` through
`unit_job.progress`), so the plan and the run count done units by one rule, and starts no Ray. States:
done, pending, changed (the stage's recorded configuration or input differs from the recipe's: the job
would refuse to resume), waiting (it needs an earlier stage's outputs first).

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
from onegen.manifests.layout import DatasetLayout, ShardLayout
from onegen.pipelines.jobs.annotate import AnnotateJob, MissingRequirement
from onegen.pipelines.jobs.build import BuildConfig, BuildInputError, BuildJob
from onegen.pipelines.jobs.dedup_run import build_dedup_job
from onegen.pipelines.jobs.ingest import IngestConfig, IngestJob, list_source
from onegen.pipelines.recipe.parse import Recipe, RecipeError, bundled_recipe, train_fields
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.runtime.unit_job import UnitJob, progress, run_job
from onegen.pipelines.samples.common import CAPTION_STORE
from onegen.pipelines.samples.policy import parse_policies, policy_for
from onegen.pipelines.sources.listing import Listing, list_parts


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
    job = IngestJob(config, listing or list_parts(config.source, config.rows_per_part))
    return _stage(job.description, job, job.changes())


def plan_annotator(root: str, annotator: Annotator, upstream_pending: int) -> StagePlan:
    """Done / pending catalog parts of one annotator; `upstream_pending` = catalog rows not ingested yet.

    Stale parts (of re-ingested catalog parts) count as pending, as the run with --redo redoes them."""
    job = AnnotateJob(root, annotator, overwrite=True)
    changes = job.changes()
    try:
        plan = _stage(job.description, job, changes)
    except MissingRequirement as missing:  # its inputs come from an earlier stage of this run
        catalog = DatasetLayout(root).catalog_parts()
        return StagePlan(job.description, "waiting", len(catalog), 0, upstream_pending, upstream_pending, str(missing))
    plan.rows += upstream_pending
    plan.rows_pending += upstream_pending
    if plan.state == "done" and upstream_pending:
        plan.state = "pending"
    if upstream_pending and not changes:
        plan.detail = f"{upstream_pending} more rows after ingest"
    return plan


def plan_build(config: BuildConfig, upstream: list[StagePlan]) -> StagePlan:
    """Done / pending build units; waiting while an earlier stage is not done."""
    unfinished = [p.stage for p in upstream if p.state != "done"]
    if unfinished:
        return StagePlan("build", "waiting", 0, 0, 0, 0, f"after {', '.join(unfinished)}", "units")
    try:
        job = BuildJob.of(config)
    except (BuildInputError, PathError) as error:  # its inputs come from an earlier stage of this run
        return StagePlan("build", "waiting", 0, 0, 0, 0, str(error), "units")
    plan = _stage("build", job, job.changes(), "units")
    if plan.state == "done" and not files.exists(ShardLayout(config.out).done_marker()):
        plan.state = "pending"  # every unit built; the index and stats are still to write
    return plan


def dedup_job(recipe: Recipe) -> UnitJob | None:
    """The dedup job whose table `[build] dedup` reads (pHash or semantic), or None when dedup is off."""
    return build_dedup_job(recipe.root, recipe.build.hygiene)


def plan_dedup(recipe: Recipe, upstream: list[StagePlan]) -> StagePlan | None:
    """The dedup table `[build] dedup` reads (None when dedup is off): waiting while an earlier stage is
    not done, else done when its marker holds the stores' present fingerprint."""
    job = dedup_job(recipe)
    if job is None:
        return None
    name = f"dedup {recipe.build.hygiene.dedup}"
    unfinished = [p.stage for p in upstream if p.state != "done"]
    if unfinished:
        return StagePlan(name, "waiting", 1, 0, 0, 0, f"after {', '.join(unfinished)}")
    try:
        plan = _stage(name, job, None)
    except PathError as missing:
        return StagePlan(name, "waiting", 1, 0, 0, 0, str(missing))
    plan.detail = job.out
    return plan


def run_dedup(recipe: Recipe, ray_config: RayConfig) -> dict:
    """Run the dedup job the build's hygiene names (`onegen dedup`): pHash or semantic."""
    return run_job(dedup_job(recipe), ray_config)


def _stage(stage: str, job: UnitJob, changes: list[str] | None, unit: str = "parts") -> StagePlan:
    """A stage's plan from its job's contract: changed when its record differs, else done / pending."""
    found = progress(job)
    if changes:
        return StagePlan(stage, "changed", found.units, 0, found.rows, found.rows, "; ".join(changes), unit)
    state = "pending" if found.done < found.units else "done"
    return StagePlan(stage, state, found.units, found.done, found.rows, found.rows_pending, "", unit)


def plan_train(recipe: Recipe, build: StagePlan) -> StagePlan:
    path = ShardLayout(recipe.shards).train_config()
    existing = files.read_json(path)
    state = "done" if existing == recipe.train and build.state == "done" else (
        "changed" if existing is not None and existing != recipe.train else "pending")
    return StagePlan(path.rsplit("/", 1)[-1], state, 1, int(state == "done"), 0, 0, path)


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


def policy_lines(recipe: Recipe) -> list[str]:
    """Per source, what its rows get (`onegen run --plan`): the annotators that run on it, those whose
    `sources` leave it out, and its build policy (pipelines/samples/policy.py; `*` filled in)."""
    policies = parse_policies(recipe.build.policies)
    lines = []
    for source in recipe.sources:
        name = source.source.source_name
        runs = [a.store_name for a in recipe.annotators if a.runs_on(name)]
        skips = [a.store_name for a in recipe.annotators if not a.runs_on(name)]
        policy = policy_for(policies, name)
        caption = policy.caption or recipe.build.caption_mode
        dense = policy.dense or CAPTION_STORE
        text = f"policy {name}: annotators {', '.join(runs) or 'none'}"
        text += f" (not {', '.join(skips)})" if skips else ""
        text += f"; caption={caption}" + (f" dense={dense}" if caption in ("dense", "random") else "")
        text += f"; stores={','.join(policy.stores)}" if policy.stores else ""
        lines.append(text)
    return lines


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
    path = ShardLayout(recipe.shards).train_config()
    files.commit_json(path, json.loads(json.dumps(recipe.train)))
    echo(f"training mixture: {path} (onegen train --config it)")
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
