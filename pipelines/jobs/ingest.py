"""`onegen ingest SOURCE --out DIR`: raw items -> catalog/<source>/ parts + rejects/<source>/ parts.

The listing of the source (sorted by uri) is cut into parts of `rows_per_part` items; part i always
holds the same items, so a rerun of the same job skips committed parts and redoes the rest. A part is
a unit of work (pipelines/runtime/units.py): one Ray task reads its items (one pass per file, tar or row
group), validates and normalises them, and commits the part itself as two files:
rejects/<source>/part-NNNNN.parquet first, then catalog/<source>/part-NNNNN.parquet, which is the
part's commit marker (a rejects file without its catalog file is debris). The driver only plans parts
and reads back one small record per part, in whatever order parts finish.

`--images copy` (default) stores the catalog's image bytes in the catalog; `--images reference` keeps,
for items whose bytes would be kept as they are, a locator into the source instead (see
pipelines/sources/catalog_images.py). Copy is the default because a copied catalog does not depend on the
source staying where and as it is (scratch folders, re-uploaded buckets); reference is for sources in
durable storage, where copying would double the bytes.

Keys: "<source>-<20 hex of sha256(source, uri, content sha256)>": stable across runs, no dots, and
distinct for identical pictures at different uris (both are kept; the content hash is in `sha256`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, part_name
from onegen.manifests.schemas import CATALOG_SCHEMA, REJECTS_SCHEMA
from onegen.pipelines.jobs.settings import IngestConfig
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray
from onegen.pipelines.runtime.units import NODE_META, committed_by, record_table, run_unit_tasks
from onegen.pipelines.sources.catalog_images import REF_COLUMN, make_ref
from onegen.pipelines.sources.image_checks import ImageLimits, Rejected, normalise_image
from onegen.pipelines.sources.kinds import SourceSpec, read_items
from onegen.pipelines.sources.listing import Listing, list_parts, read_part

REJECT_COLUMNS = ("reject_reason", "reject_error")


@dataclass
class IngestSummary:
    source: str
    items: int
    parts: int
    parts_done_before: int
    catalog_rows: int
    rejects: dict[str, int]


def make_key(source: str, uri: str, content_sha256: str) -> str:
    digest = hashlib.sha256(f"{source}\0{uri}\0{content_sha256}".encode()).hexdigest()
    return f"{source}-{digest[:20]}"


def ingest_rows(spec: SourceSpec, limits: ImageLimits, items: list[dict], images: str = "copy") -> list[dict]:
    """One output row per item: catalog columns, or a reject (reject_reason set). Never raises for data.

    With `images == "reference"`, rows whose bytes are kept as they are get `image_ref` instead of `image`."""
    if items and items[0]["kind"] == "scenes":
        return [scene_catalog_row(spec, limits, item) for item in items]
    source = spec.source_name
    kind = "subject_image" if items and items[0]["kind"] == "subjects" else "image"
    rows = []
    for item, data in read_items(spec, items):
        row = {"source": source, "uri": item["uri"], "key": None, "caption_original": item.get("caption")}
        if isinstance(data, Exception):
            rows.append({**row, "reject_reason": "read_error", "reject_error": f"{type(data).__name__}: {data}"})
            continue
        content_sha = hashlib.sha256(data).hexdigest()
        row.update(key=make_key(source, item["uri"], content_sha), sha256=content_sha)
        try:
            image = normalise_image(data, limits)
        except Rejected as rejected:
            rows.append({**row, "reject_reason": rejected.reason, "reject_error": rejected.detail})
            continue
        meta = {"original_bytes": len(data), "reencoded": image.reencoded}
        ref = make_ref(item) if images == "reference" and not image.reencoded else None
        rows.append(
            {**row, "kind": kind, "image": None if ref else image.data, "image_format": image.image_format,
             REF_COLUMN: json.dumps(ref, sort_keys=True) if ref else None,
             "width": image.width, "height": image.height, "meta": json.dumps(meta),
             "subject": item.get("group") or None, "reject_reason": None, "reject_error": None}
        )
    return rows


def scene_catalog_row(spec: SourceSpec, limits: ImageLimits, item: dict) -> dict:
    """A multiview scene folder -> one catalog row (views kept as they are, each checked to decode)."""
    from onegen.pipelines.sources.scene_cameras import read_co3d, read_colmap, read_transforms_json

    source = spec.source_name
    base = {"source": source, "uri": item["uri"], "key": None, "caption_original": item.get("caption")}
    try:
        if item["reader"] == "co3d":
            row = read_co3d(item["path"], item["root"], item["sequence"], source=source)
        else:
            reader = read_transforms_json if item["reader"] == "nerfstudio" else read_colmap
            row = reader(item["path"], source=source)
        for index, view in enumerate(row["view_images"]):
            try:
                normalise_image(view, limits)
            except Rejected as rejected:
                raise Rejected(rejected.reason, f"view {index}: {rejected.detail}") from None
    except Rejected as rejected:
        return {**base, "reject_reason": rejected.reason, "reject_error": rejected.detail}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        return {**base, "reject_reason": "bad_scene", "reject_error": f"{type(error).__name__}: {error}"}
    return {**row, **base, "key": make_key(source, item["uri"], row["sha256"]), "kind": "scene",
            "reject_reason": None, "reject_error": None}


def ingest_part(unit: dict, spec: SourceSpec, limits: ImageLimits, images: str, out: str) -> pa.Table:
    """Ray task, one part per call: read + validate its items, commit rejects then catalog; its record."""
    rows = ingest_rows(spec, limits, read_part(unit["listing"], unit["index"]), images)
    table = pa.Table.from_pylist(rows, schema=_row_schema())
    catalog_rows, rejects = _commit_part(DatasetLayout(out), spec.source_name, unit["index"], table)
    return record_table([{"part": unit["index"], "catalog_rows": catalog_rows, "rejects": rejects}])


def _row_schema() -> pa.Schema:
    extra = [pa.field(name, pa.string()) for name in REJECT_COLUMNS]
    relaxed = [pa.field(f.name, f.type) for f in CATALOG_SCHEMA]  # keys are null for unreadable items
    return pa.schema(relaxed + extra)


def list_source(config: IngestConfig) -> Listing:
    """The source's listing cut into parts, streamed into the spill file the workers read their parts
    from (pipelines/sources/listing.py): what a run of `config` ingests."""
    spill = DatasetLayout(config.out).ingest_listing(config.source.source_name)
    return list_parts(config.source, config.rows_per_part, spill)


def run_ingest(config: IngestConfig, ray_config: RayConfig, listing: Listing | None = None) -> IngestSummary:
    """Ingest `config.source`; `listing` is `list_source(config)` when the caller already made it (a
    recipe run plans from it), so a source is listed once per run."""
    spec, layout = config.source, DatasetLayout(config.out)
    source = spec.source_name
    listing = listing or list_source(config)
    if listing.spill != layout.ingest_listing(source):
        raise ValueError(f"ingest {source}: the listing was spilled to {listing.spill!r}, not this job's own")
    record = job_record(config, listing)
    catalog, rejects = layout.catalog_dir(source), layout.rejects_dir(source)
    hint = "Pass --overwrite to re-ingest this source from scratch, or --name to ingest it as another source."
    if job_state.check_and_record(layout.ingest_record(source), record, config.overwrite, hint):
        files.remove(catalog)
        files.remove(rejects)
    _clean_debris(catalog, rejects)
    done = {p.rsplit("/", 1)[-1] for p in files.list_files(catalog, ".parquet")}
    parts = len(listing.part_sizes)
    units = [{"index": i, "listing": listing.spill} for i in range(parts) if part_name(i) not in done]
    records = []
    if units:
        init_ray(ray_config)
        records = run_unit_tasks(ingest_part, units, (spec, config.limits, config.images, config.out),
                                 config.num_cpus, f"ingest {source}", ray_config.progress_bars)
    return summarise(layout, source, listing.items, parts, parts - len(units), records)


def job_record(config: IngestConfig, listing: Listing) -> dict:
    """What jobs/ingest-<source>.json holds for `config` over the source's `listing`."""
    record = {"job": "ingest", "source": asdict(config.source), "limits": asdict(config.limits),
              "rows_per_part": config.rows_per_part, "input": listing.fingerprint, "items": listing.items}
    if config.images != "copy":  # recorded only when not the default, so older records stay valid
        record["images"] = config.images
    return record


def _commit_part(layout: DatasetLayout, source: str, index: int, table: pa.Table) -> tuple[int, dict[str, int]]:
    """Commit one part: the rejects file, then the catalog file (the marker). (catalog rows, rejects)."""
    is_reject = table.column("reject_reason").is_valid()
    rejected = table.filter(is_reject)
    accepted = table.filter(pc.invert(is_reject))
    reject_rows = pa.table(
        {"source": rejected["source"], "uri": rejected["uri"], "key": rejected["key"],
         "reason": rejected["reject_reason"], "error": rejected["reject_error"],
         "stage": pa.array(["ingest"] * rejected.num_rows, pa.string())},
        schema=REJECTS_SCHEMA,
    )
    files.commit_table(layout.rejects_part(source, index), reject_rows)
    catalog_rows = accepted.drop_columns(list(REJECT_COLUMNS)).select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)
    files.commit_table(layout.catalog_part(source, index), catalog_rows, {NODE_META: committed_by()})
    reasons: dict[str, int] = {}
    for reason in rejected.column("reject_reason").to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    return catalog_rows.num_rows, reasons


def _clean_debris(catalog: str, rejects: str) -> None:
    """Remove temp files of killed runs and rejects parts whose catalog part never committed."""
    files.clean_temporaries(catalog)
    files.clean_temporaries(rejects)
    committed = {p.rsplit("/", 1)[-1] for p in files.list_files(catalog, ".parquet")}
    for path in files.list_files(rejects, ".parquet"):
        if path.rsplit("/", 1)[-1] not in committed:
            files.remove(path)


def summarise(layout: DatasetLayout, source: str, items: int, parts: int, done_before: int,
              records: list[dict]) -> IngestSummary:
    """Totals of every committed part: this run's from its unit `records`, earlier runs' from their files."""
    catalog_rows = sum(r["catalog_rows"] for r in records)
    reasons: dict[str, int] = {}
    for record in records:
        for reason, count in record["rejects"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    ran = {part_name(r["part"]) for r in records}
    for path in files.list_files(layout.catalog_dir(source), ".parquet"):
        if path.rsplit("/", 1)[-1] not in ran:
            catalog_rows += files.count_rows(path)
    for path in files.list_files(layout.rejects_dir(source), ".parquet"):
        if path.rsplit("/", 1)[-1] not in ran:
            for reason in files.read_table(path, ["reason"]).column("reason").to_pylist():
                reasons[reason] = reasons.get(reason, 0) + 1
    return IngestSummary(source, items, parts, done_before, catalog_rows, dict(sorted(reasons.items())))
