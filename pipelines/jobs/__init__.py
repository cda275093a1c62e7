"""onegen.pipelines.jobs: the Ray jobs (ingest, annotate, build, dedup) and their configurations.

Each job plans units on the driver and has workers read, compute and commit them
(pipelines/runtime/units.py); the driver reads back one small record per unit.
"""
