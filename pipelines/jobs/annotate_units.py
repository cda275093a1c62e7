"""Stateless annotators as plain Ray tasks: one task per unit reads, annotates and commits it.

Annotators that load nothing in `setup()` and need no GPU (canny, blur, low-res, inpainting, ...) gain
nothing from the streaming actor pipeline of pipelines/jobs/annotate.py: there is no model to keep warm and
no GPU to keep fed. Running each unit as one task (`units.run_unit_tasks`) drops the Ray Data
executor, whose scheduling loop costs the driver CPU time for every second the job runs, and the hand
over of every part between three stages. The contract is the same: the worker commits, the driver
gets one record per unit, units finish in any order, a failing unit commits nothing.
"""

from __future__ import annotations

import json

import pyarrow as pa

from onegen.annotators.base import Annotator

_READY: dict[str, object] = {}  # per worker process: annotators set up once, reused by later units


def stateless(annotators: tuple[Annotator, ...]) -> bool:
    """True when no annotator of the group needs a GPU, a model set up in `setup()`, or vLLM."""
    return all(a.num_gpus == 0 and type(a).setup is Annotator.setup and getattr(a, "backend", "hf") != "vllm"
               for a in annotators)


def annotate_unit(unit: dict, annotators: tuple[Annotator, ...], max_error_rate: float) -> pa.Table:
    """Ray task: read one unit's rows, annotate them in batches of the annotators' batch size, commit."""
    from onegen.pipelines.jobs.annotate import AnnotatorActor, commit_units, read_unit_rows

    key = repr(annotators)
    if key not in _READY:
        _READY[key] = AnnotatorActor(annotators, {})
    worker = _READY[key]
    worker.parts[unit["index"]] = unit["catalog_path"]
    read = {k: unit.get(k) for k in ("index", "catalog_path", "joins", "retry_keys")}
    rows = read_unit_rows(pa.table({"unit": [json.dumps(read)]}))
    size = min(a.batch_size for a in annotators)
    pieces = [worker(rows.slice(start, size)) for start in range(0, rows.num_rows, size)]
    table = pa.concat_tables(pieces) if pieces else worker(rows)
    plan = {unit["index"]: {"rows": unit["rows"], "path": unit["catalog_path"], "retry": bool(unit.get("retry_keys")),
                            "outputs": {int(k): tuple(v) for k, v in unit["outputs"].items()}}}
    return commit_units(table, annotators, plan, max_error_rate)
