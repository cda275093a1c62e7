"""`dedup/` tables: near-duplicate removal over every source as a Ray job (issue 13; rule in dedup_groups).

Job shape (`run_phash_dedup`), workers do the work and commit, the driver plans and gets counts:
1. one `bucket_part` task per catalog part reads the small catalog columns (key, kind, source, subject, width,
   height, sha256) and the aligned `phash@1` part, and cuts its rows into `partitions` tables: one row per
   (band, band value) of each hashed row, and one per sha256, partitioned by a hash of the bucket, so every
   bucket lands whole in one partition;
2. one `partition_edges` task per partition compares hashes only within its buckets (each pair once, in the
   first band it shares) and returns the duplicate edges (global row ids = part index << 32 | row) plus the
   key, area and exemption group of the rows on those edges;
3. one `resolve_and_write` task joins the edges into groups, picks representatives and commits one Parquet per
   catalog part, `<root>/dedup/phash-k<k>/<source>/part-NNNNN.parquet` (columns below; every part gets a
   file, empty when it has no duplicate), then `_SUCCESS.json` (config, counts), which readers check, then
   the unit marker `_units/table.json` last. Its memory is O(rows on duplicate edges), not O(catalog).

The job is one unit of the unit-job contract (`PhashDedupJob`, pipelines/runtime/unit_job.py): the whole
table, since its groups span every catalog part. The unit's input is a hash of the job record and, per
catalog part, the aligned hash part and the catalog keys hash it was made from, so a rerun over the same
stores is done at once and a changed catalog or hash store makes the table again. Tables made before the
marker rule have no marker and are made again once.

Dedup table columns: pipelines/hygiene/dedup_tables.py; paths: `DatasetLayout.phash_dedup` and `dedup_part`.

Build units call `dedup_tables.read_part_duplicates(table, catalog_part, catalog_keys_sha256)` -> {key:
representative} for their own catalog part, and skip those keys with `duplicate_reason(representative)`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from onegen.core.errors import PathError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.hygiene.dedup_groups import (
    band_layout,
    band_values,
    close_pairs,
    components,
    duplicate_reason,
    representatives,
    star_edges,
)
from onegen.pipelines.hygiene.dedup_tables import CATALOG_KEYS_META
from onegen.pipelines.jobs.settings import DedupJobConfig
from onegen.pipelines.runtime.unit_job import UnitJob, finish_unit, run_job

PHASH_STORE = "phash"
PART_SHIFT = 32
SHA_BAND = -1  # the `band` of sha256 bucket rows
CATALOG_COLUMNS = ["key", "kind", "source", "subject", "width", "height", "sha256"]
DEDUP_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False),
                          pa.field("representative", pa.string(), nullable=False),
                          pa.field("reason", pa.string(), nullable=False)])
BUCKET_SCHEMA = pa.schema([("band", pa.int8()), ("value", pa.uint64()), ("sha256", pa.string()), ("row_id", pa.int64()),
                           ("key", pa.string()), ("area", pa.int64()), ("exempt", pa.string())])
EDGE_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])
NODE_SCHEMA = pa.schema([("row_id", pa.int64()), ("key", pa.string()), ("area", pa.int64()), ("exempt", pa.string())])


@dataclass(frozen=True)
class DedupPart:
    index: int
    source: str
    catalog_path: str
    annotation_path: str  # the aligned part of the phash (or clip) store


def exemption_group(kind: str, source: str, subject: str | None) -> str:
    """The group whose members are never removed because of each other: an ID subject ("" for none)."""
    return f"subject:{source}/{subject}" if kind == "subject_image" and subject else ""


# --- step 1: one catalog part -> bucket partitions ----------------------------------------------------------
def bucket_part(part: DedupPart, max_distance: int, partitions: int) -> tuple[list[pa.Table], str]:
    """(one BUCKET_SCHEMA table per partition, the part's catalog keys sha256) for one catalog part."""
    catalog = files.read_table(part.catalog_path, CATALOG_COLUMNS)
    hashes = files.read_table(part.annotation_path, ["key", "status", "phash"])
    if hashes.column("key") != catalog.column("key"):
        raise RuntimeError(f"{part.annotation_path} is not aligned with {part.catalog_path}: rerun `onegen annotate --annotators phash`")
    keys = catalog.column("key").to_pylist()
    kinds, sources, subjects = (catalog.column(c).to_pylist() for c in ("kind", "source", "subject"))
    area = (np.asarray(catalog.column("width").fill_null(0), np.int64) * np.asarray(catalog.column("height").fill_null(0), np.int64))
    exempt = np.array([exemption_group(k, s, sub) for k, s, sub in zip(kinds, sources, subjects, strict=True)], dtype=object)
    row_id = (np.int64(part.index) << PART_SHIFT) | np.arange(len(keys), dtype=np.int64)
    key_array = np.array(keys, dtype=object)
    ok = np.array([s == "ok" for s in hashes.column("status").to_pylist()], dtype=bool)
    ok &= np.asarray(hashes.column("phash").is_valid())
    values = np.asarray(hashes.column("phash").fill_null(0), np.int64).view(np.uint64)[ok]
    tables: list[list[pa.Table]] = [[] for _ in range(partitions)]
    for band, (shift, width) in enumerate(band_layout(max_distance)):
        bucket = band_values(values, shift, width)
        target = ((bucket * np.uint64(0x9E3779B97F4A7C15) + np.uint64(band)) >> np.uint64(33)) % np.uint64(partitions)
        columns = {"band": np.full(len(values), band, np.int8), "value": values, "sha256": None, "row_id": row_id[ok],
                   "key": key_array[ok], "area": area[ok], "exempt": exempt[ok]}
        _scatter(columns, target.astype(np.int64), tables)
    hashable = np.array([k != "scene" for k in kinds], dtype=bool)
    sha = np.array(catalog.column("sha256").to_pylist(), dtype=object)[hashable]
    target = np.array([int(s[:8], 16) % partitions for s in sha], dtype=np.int64)
    columns = {"band": np.full(len(sha), SHA_BAND, np.int8), "value": np.zeros(len(sha), np.uint64), "sha256": sha,
               "row_id": row_id[hashable], "key": key_array[hashable], "area": area[hashable], "exempt": exempt[hashable]}
    _scatter(columns, target, tables)
    keys_sha = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    return [pa.concat_tables(t) if t else BUCKET_SCHEMA.empty_table() for t in tables], keys_sha


def _scatter(columns: dict, target: np.ndarray, tables: list[list[pa.Table]]) -> None:
    for partition in np.unique(target).tolist():
        rows = target == partition
        data = {name: (pa.nulls(int(rows.sum()), pa.string()) if values is None else values[rows])
                for name, values in columns.items()}
        tables[partition].append(pa.table(data, schema=BUCKET_SCHEMA))


# --- step 2: one partition of buckets -> duplicate edges -----------------------------------------------------
def partition_edges(max_distance: int, *tables: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(EDGE_SCHEMA edges, NODE_SCHEMA rows on them) of the buckets in one partition."""
    table = pa.concat_tables([t for t in tables if t.num_rows] or [BUCKET_SCHEMA.empty_table()])
    band = np.asarray(table.column("band"))
    row_id = np.asarray(table.column("row_id"))
    layout = band_layout(max_distance)
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for current in np.unique(band).tolist():
        rows = np.flatnonzero(band == current)
        if current == SHA_BAND:
            same_a, same_b, _, _ = star_edges(np.array(table.column("sha256").take(rows).to_pylist(), dtype=str))
            found_a.append(row_id[rows[same_a]])
            found_b.append(row_id[rows[same_b]])
            continue
        values = np.asarray(table.column("value").take(rows))
        same_a, same_b, first, distinct = star_edges(values)  # identical hashes: one node
        if current == 0:  # identical hashes share every bucket; join them once, in band 0
            found_a.append(row_id[rows[same_a]])
            found_b.append(row_id[rows[same_b]])
        near_a, near_b = close_pairs(distinct, layout, max_distance, bands=[current])
        found_a.append(row_id[rows[first[near_a]]])
        found_b.append(row_id[rows[first[near_b]]])
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    on_edges = np.isin(row_id, np.concatenate([a, b]))
    nodes = table.filter(pa.array(on_edges)).select(["row_id", "key", "area", "exempt"])
    return pa.table({"a": a, "b": b}, schema=EDGE_SCHEMA), nodes.cast(NODE_SCHEMA)


# --- step 3: edges -> groups -> committed dedup parts --------------------------------------------------------
def resolve_duplicates(edges: list[pa.Table], nodes: list[pa.Table]) -> dict[int, tuple[str, str]]:
    """{row id: (duplicate key, representative key)} from every partition's edges and nodes."""
    node_table = pa.concat_tables(nodes) if nodes else NODE_SCHEMA.empty_table()
    ids, first = np.unique(np.asarray(node_table.column("row_id")), return_index=True)
    keys = np.array(node_table.column("key").take(pa.array(first)).to_pylist(), dtype=str)
    areas = np.asarray(node_table.column("area").take(pa.array(first)), np.int64)
    exempt = np.array(node_table.column("exempt").take(pa.array(first)).to_pylist(), dtype=str)
    edge_table = pa.concat_tables(edges) if edges else EDGE_SCHEMA.empty_table()
    a = np.searchsorted(ids, np.asarray(edge_table.column("a")))
    b = np.searchsorted(ids, np.asarray(edge_table.column("b")))
    found = representatives(components(len(ids), a, b), keys, areas, exempt)
    by_key = dict(zip(keys.tolist(), ids.tolist(), strict=True))
    return {by_key[key]: (key, rep) for key, rep in found.items()}


def write_dedup(out: str, parts: list[DedupPart], keys_sha: list[str], duplicates: dict[int, tuple[str, str]],
                record: dict) -> dict:
    """Commit one dedup Parquet per catalog part, then the done marker; returns the counts."""
    per_part: dict[int, list[tuple[str, str]]] = {}
    for row_id, pair in sorted(duplicates.items()):
        per_part.setdefault(row_id >> PART_SHIFT, []).append(pair)
    files.remove(DatasetLayout.dedup_done(out))
    for part, sha in zip(parts, keys_sha, strict=True):
        pairs = per_part.get(part.index, [])
        table = pa.table({"key": [k for k, _ in pairs], "representative": [r for _, r in pairs],
                          "reason": [duplicate_reason(r) for _, r in pairs]}, schema=DEDUP_SCHEMA)
        files.commit_table(DatasetLayout.dedup_part(out, part.catalog_path), table, {CATALOG_KEYS_META: sha})
    stats = {**record, "parts": len(parts), "duplicates": len(duplicates)}
    files.commit_json(DatasetLayout.dedup_done(out), stats)
    return stats


# --- the job ----------------------------------------------------------------------------------------------
def plan_dedup_parts(root: str, store_name: str = PHASH_STORE) -> list[DedupPart]:
    """Every catalog part with its aligned part of `store_name`; refuses parts that store has not done."""
    layout = DatasetLayout(root)
    found = layout.find_store(store_name)
    if found is None:
        raise PathError(f"no {store_name} annotations under {root}: run `onegen annotate --annotators {store_name}` first")
    parts = []
    for index, (source, path) in enumerate(layout.catalog_parts()):
        annotation_path = layout.store_part(found, path)
        if not files.exists(annotation_path):
            raise PathError(f"{found} has not annotated {source}/{path.rsplit('/', 1)[-1]}: run the {store_name} annotator first")
        parts.append(DedupPart(index, source, path, annotation_path))
    return parts


@dataclass(frozen=True)
class DedupUnit:
    """A whole dedup table: its parts, where it goes, and the fingerprint of what it is made from."""

    out: str
    parts: tuple[DedupPart, ...]
    input: str
    rows: int = 0  # the driver does not count catalog rows for dedup (a pass over stored hashes)

    @property
    def name(self) -> str:
        return "table"


def dedup_input(record: dict, parts: list[DedupPart]) -> str:
    """The table's input: the job record, and each aligned hash part with the catalog keys hash it was
    made from (Parquet footers only)."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for part in parts:
        made_from = files.read_metadata(part.annotation_path).get(CATALOG_KEYS_META, "")
        digest.update(f"{part.catalog_path}:{part.annotation_path}:{made_from}\n".encode())
    return digest.hexdigest()


class DedupTableJob(UnitJob[DedupUnit]):
    """What the pHash and the semantic dedup jobs share: one unit, its marker, its summary (the counts)."""

    store_name = PHASH_STORE

    def __init__(self, root: str, out: str, record: dict):
        self.root, self.out, self.record = root, out, record

    @property
    def description(self) -> str:
        return f"dedup {self.record['method']}"

    def plan(self) -> list[DedupUnit]:
        parts = plan_dedup_parts(self.root, self.store_name)
        return [DedupUnit(self.out, tuple(parts), dedup_input(self.record, parts))]

    def marker(self, unit: DedupUnit) -> str:
        return DatasetLayout.dedup_marker(unit.out)

    def summarise(self, units: list[DedupUnit], done: dict[str, dict], ran: list[dict]) -> dict:
        return ran[0] if ran else done[units[0].name]


class PhashDedupJob(DedupTableJob):
    """The pHash dedup table (module docstring): three steps on Ray, the last one commits."""

    def __init__(self, config: DedupJobConfig):
        record = {"job": "dedup", "method": "phash", "dedup": asdict(config.dedup), "partitions": config.partitions}
        super().__init__(config.root, DatasetLayout(config.root).phash_dedup(config.dedup.max_distance), record)
        self.config = config

    def run_unit(self, unit: DedupUnit) -> dict:
        """The three steps in this process (what `run_pending` spreads over Ray tasks)."""
        k, count = self.config.dedup.max_distance, self.config.partitions
        outputs = [bucket_part(part, k, count) for part in unit.parts]
        edges = [partition_edges(k, *[tables[p] for tables, _ in outputs]) for p in range(count)]
        found = resolve_duplicates([e for e, _ in edges], [n for _, n in edges])
        return write_dedup(unit.out, list(unit.parts), [sha for _, sha in outputs], found, self.record)

    def run_pending(self, units: list[DedupUnit], ray_config) -> list[dict]:
        """A task per catalog part, per partition, and one resolve task that commits and marks the table."""
        import ray

        [unit] = units
        parts, k, count = list(unit.parts), self.config.dedup.max_distance, self.config.partitions

        def bucket_outputs(part: DedupPart) -> tuple:
            tables, keys_sha = bucket_part(part, k, count)
            return (*tables, keys_sha)

        def resolve(*values) -> dict:  # n part key hashes, then every partition's edges, then its nodes
            keys_sha, tables = list(values[: len(parts)]), values[len(parts) :]
            edges, nodes = list(tables[:count]), list(tables[count:])
            stats = write_dedup(unit.out, parts, keys_sha, resolve_duplicates(edges, nodes), self.record)
            return finish_unit(self, unit, stats)

        bucketed = [ray.remote(num_cpus=0.5, num_returns=count + 1)(bucket_outputs).remote(part) for part in parts]
        edges_task = ray.remote(num_cpus=0.5, num_returns=2)(partition_edges)
        results = [edges_task.remote(k, *[refs[p] for refs in bucketed]) for p in range(count)]
        resolved = ray.remote(num_cpus=0.5)(resolve).remote(
            *[refs[count] for refs in bucketed], *[e for e, _ in results], *[n for _, n in results])
        return [ray.get(resolved)]


def run_phash_dedup(config: DedupJobConfig, ray_config) -> dict:
    """The pHash dedup table (module doc); its counts. Done already when made from the same stores."""
    return run_job(PhashDedupJob(config), ray_config)
