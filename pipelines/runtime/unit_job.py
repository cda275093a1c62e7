"""The unit-job contract: what ingest, annotate, build and dedup each are, and the one rule for "done".

Why one contract. Every job cuts its work into units that workers read, compute and commit
(pipelines/runtime/units.py, docs/design.md §2 "Who writes"). Before this contract each job had its own unit
shape (JSON dicts, repaired on the far side), its own completion convention (a catalog part, an
annotation part carrying a key hash, units/unit-N.json, _SUCCESS.json) and `onegen run --plan`
re-derived each of them. Now a job is a `UnitJob`:

    plan() -> list[U]        every unit of the job, done or not: typed frozen dataclasses, each with a
                             `name` (unique in the job), `rows` (for progress) and `input` (a
                             fingerprint of what it reads; "" when the job record already fixes it)
    is_done(unit) -> bool    the one completion rule, below; `--plan` and resume both ask it
    run_unit(unit) -> dict   on a worker: read, compute, commit the unit's outputs; its small record
    summarise(...)           on the driver, from records only (this run's, and done units' markers)

and `run_job(job, ray_config)` is the whole driver: prepare (job record, debris), plan, skip what is
done, run the rest, summarise. Workers get the job object itself (its typed configuration) and the
unit objects, pickled by Ray, as img2dataset hands its workers the config object unchanged.

The one completion rule (datatrove's: one marker per finished unit). A unit is done iff its marker
`<job output folder>/_units/<unit name>.json` (paths: manifests/layout.py) exists and holds the
unit's `input`. The worker that committed the unit's outputs writes the marker last (`finish_unit`),
under the commit rule of manifests/files.py, holding {"unit", "input", "record"}: the record the driver
got, so that a summary or `--plan` never reads data files for units done before. An output without its
marker is debris of a killed run: the unit runs again and replaces it (its outputs are deterministic).
A marker holding another input (an annotation part of a catalog part re-ingested since) is stale: not
done; the job decides whether that is refused (annotate) or redone.

Folders made before this rule hold the previous conventions, and still resume: `previous_record(unit)`
reads them (read only; no job writes them any more): an ingest or annotation part without the
`onegen.completion` stamp every part now carries (stamped parts wait for their marker), and a build's
units/unit-N.json. Dedup tables made before have no marker and are made again once (one cheap pass
over stored hashes).

Jobs keep their own Ray mechanics behind `run_pending` (plain tasks by default, `run_unit_tasks`;
annotate's actor pools and dedup's three steps override it): the contract changes what is planned and
how completion is read, not how many tasks or actors run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa

from onegen.manifests import files
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.runtime.units import committed_by, record_table, run_unit_tasks

COMPLETION_META = "onegen.completion"  # Parquet metadata of parts whose completion is their unit marker
COMPLETION_STAMP = {COMPLETION_META: "unit-marker"}


class Unit(Protocol):
    """What the contract reads of a unit (each job's unit is a frozen dataclass with more fields)."""

    @property
    def name(self) -> str: ...

    @property
    def rows(self) -> int: ...

    @property
    def input(self) -> str: ...


U = TypeVar("U", bound=Unit)


class UnitJob(ABC, Generic[U]):
    """One job of units (see the module docstring). Subclasses hold their typed configuration."""

    num_cpus: float = 1.0  # per unit task of the default `run_pending`

    @property
    @abstractmethod
    def description(self) -> str:
        """The job's name in progress bars and messages ("ingest photos")."""

    def changes(self) -> list[str] | None:
        """What differs from the recorded job (None: nothing recorded yet); read only, for `--plan`."""
        return None

    def prepare(self) -> None:
        """Driver, before a run plans: check and write the job record, clear outputs on overwrite, remove
        debris. `--plan` never calls it."""

    @abstractmethod
    def plan(self) -> list[U]:
        """Every unit of the job, done or not, in order; reads records and markers only, writes nothing."""

    @abstractmethod
    def marker(self, unit: U) -> str:
        """The path of `unit`'s completion marker (manifests/layout.py)."""

    def previous_record(self, unit: U) -> dict | None:
        """The record of a unit completed by a version before the marker rule (None: not done that way)."""
        return None

    def record_of(self, unit: U) -> dict | None:
        """The done unit's record, or None when it is not done: the one completion rule."""
        found = read_marker(self.marker(unit))
        if found is not None:
            return found["record"] if found.get("input", "") == unit.input else None
        return self.previous_record(unit)

    def is_done(self, unit: U) -> bool:
        return self.record_of(unit) is not None

    @abstractmethod
    def run_unit(self, unit: U) -> dict:
        """Worker: read, compute and commit `unit`'s outputs (not its marker); return its small record."""

    def run_pending(self, units: list[U], ray_config: RayConfig) -> list[dict]:
        """Run `units` on Ray (one plain task each) and return their records, in any order."""
        return run_unit_tasks(run_one_unit, units, (self,), self.num_cpus, self.description,
                              ray_config.progress_bars)

    @abstractmethod
    def summarise(self, units: list[U], done: dict[str, dict], ran: list[dict]) -> Any:
        """The job's summary from `done` (unit name -> record of units done before) and `ran` (this run's)."""


def read_marker(path: str) -> dict | None:
    """A marker's content ({"unit", "input", "record"}), or None when there is none."""
    return files.read_json(path)


def finish_unit(job: UnitJob, unit: Unit, record: dict) -> dict:
    """Worker, after the unit's outputs are committed: commit its marker (last); the record with its node."""
    record = {**record, "node": committed_by()}
    files.commit_json(job.marker(unit), {"unit": unit.name, "input": unit.input, "record": record})
    return record


def run_one_unit(unit: Unit, job: UnitJob) -> pa.Table:
    """Ray task of the default `run_pending`: run, commit, mark one unit; its record table."""
    return record_table([finish_unit(job, unit, job.run_unit(unit))])


def run_units_in_turn(units: list[Unit], job: UnitJob) -> pa.Table:
    """Ray task running several units one after another (a job whose consecutive units share an input
    worth reading once); each is committed and marked before the next starts, so a kill loses only the
    unit running. Their record table."""
    return record_table([finish_unit(job, unit, job.run_unit(unit)) for unit in units])


@dataclass(frozen=True)
class Progress:
    """What a job has left: units in all and done; rows in all and still to do."""

    units: int
    done: int
    rows: int
    rows_pending: int


def pending_units(job: UnitJob[U]) -> tuple[list[U], dict[str, dict], list[U]]:
    """(every unit, {name: record} of the done ones, the units still to run), by the one rule."""
    units = job.plan()
    done = {}
    for unit in units:
        record = job.record_of(unit)
        if record is not None:
            done[unit.name] = record
    return units, done, [u for u in units if u.name not in done]


def progress(job: UnitJob) -> Progress:
    """The job's progress as `run_job` would find it (read only: `onegen run --plan`)."""
    units, _, pending = pending_units(job)
    return Progress(len(units), len(units) - len(pending), sum(u.rows for u in units), sum(u.rows for u in pending))


def run_job(job: UnitJob, ray_config: RayConfig) -> Any:
    """The driver of every unit job: prepare, plan, run what is not done (Ray starts only then), summarise."""
    job.prepare()
    units, done, pending = pending_units(job)
    ran = []
    if pending:
        init_ray(ray_config)
        ran = job.run_pending(pending, ray_config)
    return job.summarise(units, done, ran)
