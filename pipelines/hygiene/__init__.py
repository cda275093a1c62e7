"""onegen.pipelines.hygiene: dataset hygiene applied at build time.

Near-duplicate groups, semantic dedup, score filters and the paper's task-specific selection (pose
size, safe ID photos). Pure code; the dedup jobs that write the tables live in pipelines/jobs.
"""
