"""`onegen dedup` and a recipe's dedup stage: the method's job, run into the table the build reads.

    run_dedup(root, HygieneConfig(dedup="phash", max_distance=4), ray_config)   # -> the job's counts

`dedup_tables.dedup_table` (pipelines/hygiene) tells the methods apart and names each one's table; this is
the one place that picks the job writing it: pHash (pipelines/jobs/dedup.py, from the `phash` store) or
semantic (pipelines/jobs/semdedup.py, from the `clip` store). The CLI and `onegen run` both call it, so a
method, its setting and its table cannot disagree between them and the build.
"""

from __future__ import annotations

from onegen.pipelines.hygiene.build_hygiene import HygieneConfig, dedup_table
from onegen.pipelines.hygiene.dedup_groups import DedupConfig
from onegen.pipelines.hygiene.dedup_tables import PHASH
from onegen.pipelines.hygiene.semdedup import SemDedupConfig
from onegen.pipelines.jobs.dedup import DedupJobConfig, DedupTableJob, PhashDedupJob
from onegen.pipelines.jobs.semdedup import SemanticDedupJob
from onegen.pipelines.runtime.ray_setup import RayConfig
from onegen.pipelines.runtime.unit_job import run_job


def dedup_job(root: str, config: HygieneConfig) -> DedupTableJob | None:
    """The job writing the table `config.dedup` names (pHash or semantic), or None when dedup is off."""
    if dedup_table(root, config) is None:
        return None
    if config.dedup == PHASH:
        return PhashDedupJob(DedupJobConfig(root, DedupConfig(config.max_distance)))
    return SemanticDedupJob(root, SemDedupConfig(threshold=config.semantic_threshold))


def run_dedup(root: str, config: HygieneConfig, ray_config: RayConfig) -> dict:
    """Run the dedup job of `config.dedup` with its setting; returns the counts its table's marker holds.
    ValueError when dedup is off (a caller's bug: the CLI and recipes validate it)."""
    job = dedup_job(root, config)
    if job is None:
        raise ValueError("run_dedup needs a dedup method (config.dedup is empty)")
    return run_job(job, ray_config)
