"""Every path of a dataset root and of a shards folder, in one place (docs/design.md §2).

A dataset root (`onegen ingest --out ROOT`):

    catalog/<source>/part-NNNNN.parquet             one row per raw item (the part's commit marker)
    rejects/<source>/part-NNNNN.parquet             ingest rejects of that part (committed first)
    jobs/ingest-<source>.json                       the ingest job record
    jobs/ingest-<source>.listing.parquet            its listing, one row group per part (workers read it)
    jobs/<command>.log, jobs/<job>-failure.log      a command's third-party output; a failed job's traceback
    annotations/<name>@<version>/_job.json          the annotate job record (identity of the store)
    annotations/<name>@<version>/<source>/part-NNNNN.parquet   aligned with the catalog part
    dedup/phash-k<distance>/<source>/part-NNNNN.parquet  duplicates of that catalog part (pHash dedup)
    dedup/semantic-t<threshold>/<source>/part-NNNNN.parquet  the same for semantic (CLIP) dedup
    dedup/<table>/_SUCCESS.json                     the dedup table's counts, written last (its done marker)

A shards folder (`onegen build --out SHARDS`):

    build.json                                      the build job record
    {prefix}-{task}-{unit:05d}-{n:06d}.tar          WebDataset tars; a build unit owns its numbered shards
    manifests/<shard>.parquet                       per-shard manifest: the shard's commit marker
    skipped/<shard>.parquet                         candidates skipped while that shard was filled
    skipped/{prefix}-{task}-{unit:05d}-tail.parquet skips after a unit's last shard of that task
                                                    (the shard writer names it: `{stem}-tail`)
    _units/unit-{unit:05d}.json                     a build unit's completion marker (written last)
    units/unit-{unit:05d}.json                      the same, in folders built before the marker rule
    index.json, _SUCCESS.json                       wids shard index, then the stats (the done marker)
    README.md                                       the dataset card (manifests/dataset_card.py)
    train.json                                      a recipe's training mixture (`onegen train --config`)

Any output folder of a command (dataset root, shards folder, training run) keeps the command's log in
`jobs/<command>.log` (`job_log`; core/job_output.py writes it).

Unit completion markers (pipelines/runtime/unit_job.py), one rule for every job: a unit is done when
`<its job's output folder>/_units/<unit>.json` exists and records the unit's input; the worker that
committed the unit writes it last. The output folders: catalog/<source>/ (ingest, unit `part-NNNNN`),
annotations/<store>/ (annotate, unit `<source>/part-NNNNN`), dedup/<table>/ (dedup, unit `table`), the
shards folder (build, unit `unit-NNNNN`). `_units` starts with `_`, so Parquet dataset readers skip it.
Folders made before markers existed hold the previous convention instead (`previous_*` below).

Files starting with `_` are ignored by Parquet dataset readers, so `pq.read_table(store_dir)` works.
Paths are strings joined with "/", so fsspec URLs (s3://, gs://) work the same as local paths.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from onegen.manifests import files

PART_SUFFIX = ".parquet"
JOB_RECORD = "_job.json"
DONE_MARKER = "_SUCCESS.json"
JOBS = "jobs"

UNITS_FOLDER = "_units"


def part_name(index: int) -> str:
    return f"part-{index:05d}{PART_SUFFIX}"


def job_log(folder: str, command: str) -> str:
    """Where `command`'s log goes: `<folder>/jobs/<command>.log`, or a local temporary folder when `folder`
    is a URL (the log is a local file the command's stderr is pointed at)."""
    if "://" in folder and not folder.startswith("file://"):
        return os.path.join(tempfile.gettempdir(), "onegen-logs", f"{command}.log")
    return os.path.join(folder.removeprefix("file://"), JOBS, f"{command}.log")


def split_part(part_path: str) -> tuple[str, str]:
    """(source, part file name) of a catalog / rejects / annotation / dedup part path."""
    source, part = part_path.rsplit("/", 2)[-2:]
    return source, part

def unit_marker(folder: str, unit: str) -> str:
    """The completion marker of unit `unit` of the job whose outputs are under `folder` (the one rule)."""
    return files.join(folder, UNITS_FOLDER, f"{unit}.json")


def unit_markers(folder: str) -> str:
    """The folder holding the completion markers of the job whose outputs are under `folder`."""
    return files.join(folder, UNITS_FOLDER)


def version_key(store_name: str) -> list:
    """Sort key of "<name>@<version>": numeric version components compare as numbers."""
    return [int(x) if x.isdigit() else x for x in store_name.split("@", 1)[1].split(".")]


@dataclass(frozen=True)
class DatasetLayout:
    """The paths under one dataset root."""

    root: str

    # catalog and rejects ---------------------------------------------------------------------------
    def catalog(self) -> str:
        return files.join(self.root, "catalog")

    def catalog_dir(self, source: str) -> str:
        return files.join(self.root, "catalog", source)

    def catalog_part(self, source: str, index: int) -> str:
        return files.join(self.catalog_dir(source), part_name(index))

    def rejects(self) -> str:
        return files.join(self.root, "rejects")

    def rejects_dir(self, source: str) -> str:
        return files.join(self.root, "rejects", source)

    def rejects_part(self, source: str, index: int) -> str:
        return files.join(self.rejects_dir(source), part_name(index))

    def ingest_record(self, source: str) -> str:
        return files.join(self.root, JOBS, f"ingest-{source}.json")

    def ingest_listing(self, source: str) -> str:
        """The source's listing as the last ingest run cut it into parts (pipelines/sources/listing.py)."""
        return files.join(self.root, JOBS, f"ingest-{source}.listing.parquet")

    def failure_log(self, job: str) -> str:
        """The traceback of a job that failed on a worker (`onegen: error: ... (traceback: <this>)`)."""
        return files.join(self.root, JOBS, f"{job}-failure.log")

    def catalog_parts(self) -> list[tuple[str, str]]:
        """(source, part path) of every committed catalog part, sorted by path."""
        return [(split_part(path)[0], path) for path in files.list_files(self.catalog(), PART_SUFFIX)]

    # annotation stores -----------------------------------------------------------------------------
    def annotations(self) -> str:
        return files.join(self.root, "annotations")

    def store_dir(self, store_name: str) -> str:
        """The folder of annotation store "<name>@<version>"."""
        return files.join(self.root, "annotations", store_name)

    def store_record(self, store_name: str) -> str:
        return files.join(self.store_dir(store_name), JOB_RECORD)

    def store_part(self, store_name: str, catalog_part: str) -> str:
        """The annotation part aligned with the catalog part at path `catalog_part`."""
        return files.join(self.store_dir(store_name), *split_part(catalog_part))

    def store_names(self) -> list[str]:
        """Every "<name>@<version>" folder under annotations/, sorted."""
        fs, base = files.filesystem(self.annotations())
        if not fs.exists(base):
            return []
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(base, detail=False) if "@" in p.rsplit("/", 1)[-1])

    def find_store(self, name: str) -> str | None:
        """The `<name>@<version>` store to read `name` from: the highest version present, or None."""
        versions = [s for s in self.store_names() if s.split("@", 1)[0] == name]
        return max(versions, key=version_key) if versions else None

    # dedup tables (written by pipelines/jobs/dedup.py and semdedup.py, read by pipelines/hygiene) -------
    def dedup(self) -> str:
        return files.join(self.root, "dedup")

    def phash_dedup(self, max_distance: int) -> str:
        """The pHash dedup table of Hamming distance `max_distance`."""
        return files.join(self.dedup(), f"phash-k{max_distance}")

    def semantic_dedup(self, threshold: float) -> str:
        """The semantic (CLIP cosine) dedup table of `threshold`."""
        return files.join(self.dedup(), f"semantic-t{threshold:g}")

    @staticmethod
    def dedup_part(table: str, catalog_part: str) -> str:
        """The dedup table's part for the catalog part at path `catalog_part` (same source and file name)."""
        return files.join(table, *split_part(catalog_part))

    @staticmethod
    def dedup_done(table: str) -> str:
        """The dedup table's done marker (its counts, committed last)."""
        return files.join(table, DONE_MARKER)

    # unit completion markers (pipelines/runtime/unit_job.py) ---------------------------------------
    def ingest_marker(self, source: str, index: int) -> str:
        """Ingest part `index` of `source` is done."""
        return unit_marker(self.catalog_dir(source), part_name(index).removesuffix(PART_SUFFIX))

    def store_marker(self, store_name: str, catalog_part: str) -> str:
        """Store "<name>@<version>" has annotated the catalog part at path `catalog_part`."""
        source, part = split_part(catalog_part)
        return unit_marker(self.store_dir(store_name), f"{source}/{part.removesuffix(PART_SUFFIX)}")

    def store_markers(self, store_name: str) -> str:
        return unit_markers(self.store_dir(store_name))

    @staticmethod
    def dedup_marker(table_dir: str) -> str:
        """The dedup table at `table_dir` (one unit: the whole table) is done."""
        return unit_marker(table_dir, "table")


@dataclass(frozen=True)
class ShardLayout:
    """The paths under one shards folder."""

    out: str

    def record(self) -> str:
        return files.join(self.out, "build.json")

    def done_marker(self) -> str:
        return files.join(self.out, DONE_MARKER)

    def index(self) -> str:
        return files.join(self.out, "index.json")

    def manifests(self) -> str:
        return files.join(self.out, "manifests")

    def skipped_dir(self) -> str:
        return files.join(self.out, "skipped")

    def units(self) -> str:
        """The build unit records of folders built before the one marker rule (`units/`, read only)."""
        return files.join(self.out, "units")

    def card(self) -> str:
        """The dataset card, README.md (manifests/dataset_card.py)."""
        return files.join(self.out, "README.md")

    def train_config(self) -> str:
        """A recipe's training mixture, train.json, for `onegen train --config` (pipelines/recipe/run.py)."""
        return files.join(self.out, "train.json")

    @staticmethod
    def task_tars(prefix: str, task: str) -> str:
        """Glob of every tar of `task`, relative to the shards folder (the dataset card's data files)."""
        return f"{prefix}-{task}-*.tar"

    @staticmethod
    def shard_of(manifest_path: str) -> str:
        """The shard name of a manifest (or skipped) table path: its file name without `.parquet`."""
        return manifest_path.rsplit("/", 1)[-1].removesuffix(PART_SUFFIX)

    @staticmethod
    def shard_stem(prefix: str, task: str, unit: int) -> str:
        """The name every shard of `task` made by build unit `unit` starts with."""
        return f"{prefix}-{task}-{unit:05d}"

    @staticmethod
    def shard_name(prefix: str, task: str, unit: int, index: int) -> str:
        return f"{ShardLayout.shard_stem(prefix, task, unit)}-{index:06d}"

    def tar(self, shard: str) -> str:
        return files.join(self.out, f"{shard}.tar")

    def manifest(self, shard: str) -> str:
        return files.join(self.manifests(), f"{shard}.parquet")

    def skipped(self, shard: str) -> str:
        return files.join(self.skipped_dir(), f"{shard}.parquet")

    def manifest_paths(self) -> list[str]:
        return files.list_files(self.manifests(), PART_SUFFIX)

    # unit completion markers (pipelines/runtime/unit_job.py) ---------------------------------------
    def unit_marker(self, unit: int) -> str:
        """Build unit `unit` is done."""
        return unit_marker(self.out, f"unit-{unit:05d}")

    def unit_markers(self) -> str:
        return unit_markers(self.out)

    def previous_unit_marker(self, unit: int) -> str:
        """Where folders built before the one marker rule hold build unit `unit`'s record (read only)."""
        return files.join(self.units(), f"unit-{unit:05d}.json")
