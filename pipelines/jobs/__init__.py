"""onegen.pipelines.jobs: the Ray jobs (ingest, annotate, build, dedup) and their configurations.

Each job implements the unit-job contract (pipelines/runtime/unit_job.py): it plans typed units on the
driver, says which are done (one marker rule), and has workers read, compute and commit them
(pipelines/runtime/units.py); the driver reads back one small record per unit.
"""
