"""The unit-job contract (pipelines/runtime/unit_job.py): one completion rule, a unit planned done is
skipped, `--plan` counts what the job then runs, and folders made before the marker rule still resume."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from onegen.manifests import files
from onegen.pipelines.cli.main import main
from onegen.pipelines.runtime import unit_job
from onegen.pipelines.runtime.unit_job import COMPLETION_META, UnitJob, finish_unit, progress, run_job
from tests.conftest import TEST_RAY, write_photo_folder

pytestmark = pytest.mark.timeout(600)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


@dataclass(frozen=True)
class ToyUnit:
    number: int
    rows: int
    input: str

    @property
    def name(self) -> str:
        return f"toy-{self.number}"


class ToyJob(UnitJob[ToyUnit]):
    """Writes one file per unit; its units' inputs come from `inputs` (a changed input: a stale marker)."""

    description = "toy"
    num_cpus = 0.5

    def __init__(self, out: str, inputs: list[str]):
        self.out, self.inputs = out, inputs

    def plan(self) -> list[ToyUnit]:
        return [ToyUnit(n, 10 * (n + 1), text) for n, text in enumerate(self.inputs)]

    def marker(self, unit: ToyUnit) -> str:
        return files.join(self.out, "_units", f"{unit.name}.json")

    def run_unit(self, unit: ToyUnit) -> dict:
        files.commit_json(files.join(self.out, f"{unit.name}.json"), {"input": unit.input})
        return {"unit": unit.name, "rows": unit.rows}

    def summarise(self, units, done, ran):
        return {"done": sorted(done), "ran": sorted(r["unit"] for r in ran)}


def test_the_one_rule_marker_with_the_same_input_is_done(tmp_path, monkeypatch):
    job = ToyJob(str(tmp_path), ["a", "b", "c"])
    first, second, third = job.plan()
    assert progress(job) == unit_job.Progress(units=3, done=0, rows=60, rows_pending=60)
    record = finish_unit(job, first, {"unit": first.name, "rows": 10})
    assert json.loads((tmp_path / "_units" / "toy-0.json").read_text()) == {
        "unit": "toy-0", "input": "a", "record": record}
    finish_unit(job, third, {"unit": third.name, "rows": 30})
    assert [job.is_done(u) for u in job.plan()] == [True, False, True]
    assert progress(job) == unit_job.Progress(units=3, done=2, rows=60, rows_pending=20)
    stale = ToyJob(str(tmp_path), ["a", "b", "changed"])  # the third unit's input changed since its marker
    assert [stale.is_done(u) for u in stale.plan()] == [True, False, False]
    # nothing pending: run_job summarises from the markers' records and never starts Ray
    finish_unit(job, second, {"unit": second.name, "rows": 20})
    started: list = []
    monkeypatch.setattr(unit_job, "init_ray", started.append)
    assert run_job(job, TEST_RAY) == {"done": ["toy-0", "toy-1", "toy-2"], "ran": []}
    assert started == []


def test_a_unit_planned_done_is_skipped(tmp_path, ray_local):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    job = ToyJob(str(tmp_path), ["a", "b", "c", "d"])
    units = job.plan()
    finish_unit(job, units[1], {"unit": units[1].name, "rows": 20})
    finish_unit(job, units[3], {"unit": "toy-3", "rows": 40})
    assert run_job(job, ray_local) == {"done": ["toy-1", "toy-3"], "ran": ["toy-0", "toy-2"]}
    assert sorted(p.name for p in tmp_path.glob("toy-*.json")) == ["toy-0.json", "toy-2.json"]  # 1, 3 never ran
    assert all(job.is_done(u) for u in job.plan())  # the workers wrote the markers of what they ran


def _spy_units(monkeypatch) -> list:
    """Every unit a job hands to Ray tasks (ingest, build, stateless annotators)."""
    from onegen.pipelines.jobs import annotate, ingest

    sent: list = []

    def spy(fn, units, *args, original, **kwargs):
        sent.extend(unit for entry in units for unit in (entry if isinstance(entry, list) else [entry]))
        return original(fn, units, *args, **kwargs)

    for module in (unit_job, annotate, ingest):  # ingest's tasks may run bundles of parts
        monkeypatch.setattr(module, "run_unit_tasks", lambda *a, original=module.run_unit_tasks, **k: spy(
            *a, original=original, **k))
    return sent


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text('root = "data"\nshards = "shards"\n[[sources]]\npath = "photos"\nrows_per_part = 3\n'
                    '[[annotators]]\nname = "canny"\n[build]\ntasks = ["text2image", "canny2image"]\n'
                    'samples_per_shard = 3\nrows_per_unit = 3\n')
    return path


def test_plan_counts_what_the_jobs_then_run(tmp_path, ray_local, monkeypatch):
    """Kill-like holes (markers removed) in every stage: `--plan`'s done / pending counts per stage are
    exactly the units each job then runs."""
    from onegen.pipelines.recipe.parse import load_recipe
    from onegen.pipelines.recipe.run import plan_recipe, run_recipe

    write_photo_folder(tmp_path / "photos", count=10)
    recipe = load_recipe(str(_recipe(tmp_path)))
    run_recipe(recipe, TEST_RAY, echo=lambda line: None)
    data, shards = tmp_path / "data", tmp_path / "shards"
    for marker in (data / "catalog" / "photos" / "_units" / "part-00001.json",
                   data / "annotations" / "canny@1" / "_units" / "photos" / "part-00002.json",
                   data / "annotations" / "canny@1" / "_units" / "photos" / "part-00003.json",
                   shards / "_units" / "unit-00000.json"):
        marker.unlink()
    (shards / "_SUCCESS.json").unlink()
    plans = {p.stage: p for p in plan_recipe(recipe)}
    assert (plans["ingest photos"].parts, plans["ingest photos"].parts_done) == (4, 3)
    assert (plans["annotate canny@1"].parts, plans["annotate canny@1"].parts_done) == (4, 2)
    assert plans["build"].state == "waiting"  # an earlier stage has work
    sent = _spy_units(monkeypatch)
    run_recipe(recipe, TEST_RAY, echo=lambda line: None)
    names = [u.name if hasattr(u, "name") else f"photos/part-{u.index:05d}" for u in sent]
    assert names == ["part-00001", "photos/part-00002", "photos/part-00003", "unit-00000"]
    assert all(p.state == "done" for p in plan_recipe(recipe))


def _to_previous_version(data: Path, shards: Path) -> None:
    """Turn folders made now into what the version before the marker rule left: no `_units`, no
    completion stamp in parts, build unit records at units/unit-NNNNN.json."""
    for markers in list(data.rglob("_units")):
        shutil.rmtree(markers)
    for path in sorted((shards / "_units").glob("*.json")):
        (shards / "units").mkdir(exist_ok=True)
        (shards / "units" / path.name).write_text(json.dumps(json.loads(path.read_text())["record"]))
        path.unlink()
    for part in [*(data / "catalog").rglob("part-*.parquet"), *(data / "annotations").rglob("part-*.parquet")]:
        table = pq.read_table(part)
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if k.decode() != COMPLETION_META}
        pq.write_table(table.replace_schema_metadata(meta), part)


def test_folders_made_before_the_marker_rule_still_resume(tmp_path, ray_local, monkeypatch):
    from onegen.pipelines.recipe.parse import load_recipe
    from onegen.pipelines.recipe.run import plan_recipe, run_recipe

    write_photo_folder(tmp_path / "photos", count=7)
    recipe = load_recipe(str(_recipe(tmp_path)))
    run_recipe(recipe, TEST_RAY, echo=lambda line: None)
    data, shards = tmp_path / "data", tmp_path / "shards"
    _to_previous_version(data, shards)
    assert not list(data.rglob("_units/**/*.json")) and list((shards / "units").glob("*.json"))
    assert all(p.state == "done" for p in plan_recipe(recipe)), [p.line() for p in plan_recipe(recipe)]
    sent = _spy_units(monkeypatch)
    run_recipe(recipe, TEST_RAY, echo=lambda line: None)
    assert sent == []  # nothing is redone
    # a part of the previous version whose catalog part is gone is not done: only that one runs again
    (data / "annotations" / "canny@1" / "photos" / "part-00001.parquet").unlink()
    assert [p.parts_done for p in plan_recipe(recipe) if p.stage == "annotate canny@1"] == [2]
    assert main(["annotate", str(data), "--annotators", "canny", *RAY]) == 0
    assert [getattr(u, "index", None) for u in sent] == [1]
