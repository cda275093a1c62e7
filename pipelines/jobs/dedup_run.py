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
from onegen.pipelines.jobs.dedup import DedupJobConfig, run_phash_dedup
from onegen.pipelines.jobs.semdedup import run_semantic_dedup
from onegen.pipelines.runtime.ray_setup import RayConfig


def run_dedup(root: str, config: HygieneConfig, ray_config: RayConfig) -> dict:
    """Run the dedup job of `config.dedup` with its setting; returns the counts its table's marker holds.
    ValueError when dedup is off or the method unknown (a caller's bug: the CLI and recipes validate it)."""
    table = dedup_table(root, config)
    if table is None:
        raise ValueError("run_dedup needs a dedup method (config.dedup is empty)")
    if config.dedup == PHASH:
        return run_phash_dedup(DedupJobConfig(root, DedupConfig(config.max_distance)), ray_config)
    return run_semantic_dedup(root, SemDedupConfig(threshold=config.semantic_threshold), ray_config)
