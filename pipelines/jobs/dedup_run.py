"""`onegen dedup` and a recipe's dedup stage: the method's job, run into the table the build reads.

    run_dedup(root, "phash", DedupConfig(max_distance=4), SemDedupConfig(), ray_config)   # -> its counts
    build_dedup_job(root, hygiene)   # the job whose table a build reads (a recipe's dedup stage)

`dedup_tables.dedup_table` (pipelines/hygiene) tells the methods apart and names each one's table; this is
the one place that picks the job writing it: pHash (pipelines/jobs/dedup.py, from the `phash` store) or
semantic (pipelines/jobs/semdedup.py, from the `clip` store). The CLI and `onegen run` both call it, so a
method, its setting and its table cannot disagree between them and the build.
"""

from __future__ import annotations

from onegen.pipelines.hygiene.build_hygiene import HygieneConfig, dedup_table
from onegen.pipelines.hygiene.dedup_tables import DEDUP_METHODS, PHASH
from onegen.pipelines.hygiene.settings import DedupConfig, SemDedupConfig
from onegen.pipelines.jobs.dedup import DedupJobConfig, DedupTableJob, PhashDedupJob
from onegen.pipelines.jobs.semdedup import SemanticDedupJob
from onegen.pipelines.runtime.ray_setup import RayConfig
from onegen.pipelines.runtime.unit_job import run_job


def dedup_job(root: str, method: str, phash: DedupConfig, semantic: SemDedupConfig) -> DedupTableJob:
    """The job writing the `method` table: pHash (from the `phash` store) or semantic (from `clip`).
    ValueError for anything else ("" is no method: a caller's bug, the CLI and recipes validate it)."""
    if method not in DEDUP_METHODS:
        raise ValueError(f"dedup_job needs a dedup method, one of {DEDUP_METHODS}; got {method!r}")
    if method == PHASH:
        return PhashDedupJob(DedupJobConfig(root, phash))
    return SemanticDedupJob(root, semantic)


def build_dedup_job(root: str, config: HygieneConfig) -> DedupTableJob | None:
    """The job writing the table a build with `config` reads, or None when dedup is off."""
    if dedup_table(root, config) is None:
        return None
    return dedup_job(root, config.dedup, DedupConfig(config.max_distance),
                     SemDedupConfig(threshold=config.semantic_threshold))


def run_dedup(root: str, method: str, phash: DedupConfig, semantic: SemDedupConfig, ray_config: RayConfig) -> dict:
    """Run the `method` dedup job; returns the counts its table's marker holds (`onegen dedup`)."""
    return run_job(dedup_job(root, method, phash, semantic), ray_config)
