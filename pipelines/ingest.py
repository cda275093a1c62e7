"""`onegen ingest SOURCE --out DIR`: raw items -> catalog/<source>/ parts + rejects/<source>/ parts.

The listing of the source (sorted by uri) is cut into parts of `rows_per_part` items; part i always
holds the same items, so a rerun of the same job skips committed parts and redoes the rest. Each
item is read, validated and normalised on a Ray worker (`ingest_rows`), and the driver commits a
part as two files: rejects/<source>/part-NNNNN.parquet first, then catalog/<source>/part-NNNNN.parquet,
which is the part's commit marker (a rejects file without its catalog file is debris).

Keys: "<source>-<20 hex of sha256(source, uri, content sha256)>": stable across runs, no dots, and
distinct for identical pictures at different uris (both are kept; the content hash is in `sha256`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from onegen.manifests import store
from onegen.manifests.schemas import CATALOG_SCHEMA, REJECTS_SCHEMA
from onegen.pipelines import job_state
from onegen.pipelines.image_checks import ImageLimits, Rejected, normalise_image
from onegen.pipelines.part_stream import PART_COLUMN, commit_stream
from onegen.pipelines.ray_setup import RayConfig, init_ray
from onegen.pipelines.sources import SourceSpec, fingerprint, list_items, read_items

REJECT_COLUMNS = ("reject_reason", "reject_error")


@dataclass(frozen=True)
class IngestConfig:
    source: SourceSpec
    out: str
    limits: ImageLimits = field(default_factory=ImageLimits)
    rows_per_part: int = 256
    batch_size: int = 16
    num_cpus: float = 0.5  # per ingest task; fractional so reads and decodes share cores
    overwrite: bool = False


@dataclass
class IngestSummary:
    source: str
    items: int
    parts: int
    parts_done_before: int
    catalog_rows: int
    rejects: dict[str, int]


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def catalog_dir(out: str, source: str) -> str:
    return store.join(out, "catalog", source)


def rejects_dir(out: str, source: str) -> str:
    return store.join(out, "rejects", source)


def make_key(source: str, uri: str, content_sha256: str) -> str:
    digest = hashlib.sha256(f"{source}\0{uri}\0{content_sha256}".encode()).hexdigest()
    return f"{source}-{digest[:20]}"


def ingest_rows(spec: SourceSpec, limits: ImageLimits, items: list[dict]) -> list[dict]:
    """One output row per item: catalog columns, or a reject (reject_reason set). Never raises for data."""
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
        rows.append(
            {**row, "kind": kind, "image": image.data, "image_format": image.image_format,
             "width": image.width, "height": image.height, "meta": json.dumps(meta),
             "subject": item.get("group") or None, "reject_reason": None, "reject_error": None}
        )
    return rows


def scene_catalog_row(spec: SourceSpec, limits: ImageLimits, item: dict) -> dict:
    """A multiview scene folder -> one catalog row (views kept as they are, each checked to decode)."""
    from onegen.pipelines.camera_readers import read_co3d, read_colmap, read_transforms_json

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


def ingest_batch(batch: pa.Table, spec: SourceSpec, limits: ImageLimits) -> pa.Table:
    """Ray Data map_batches task: item refs (JSON) -> catalog/reject rows, `_part` carried through."""
    items = [json.loads(text) for text in batch.column("item").to_pylist()]
    rows = ingest_rows(spec, limits, items)
    for row, part in zip(rows, batch.column(PART_COLUMN).to_pylist(), strict=True):
        row[PART_COLUMN] = part
    return pa.Table.from_pylist(rows, schema=_stream_schema())


def _stream_schema() -> pa.Schema:
    extra = [pa.field(name, pa.string()) for name in REJECT_COLUMNS] + [pa.field(PART_COLUMN, pa.int64())]
    relaxed = [pa.field(f.name, f.type) for f in CATALOG_SCHEMA]  # keys are null for unreadable items
    return pa.schema(relaxed + extra)


def run_ingest(config: IngestConfig, ray_config: RayConfig) -> IngestSummary:
    spec, out = config.source, config.out
    source = spec.source_name
    items = list_items(spec)
    record = {"job": "ingest", "source": asdict(spec), "limits": asdict(config.limits),
              "rows_per_part": config.rows_per_part, "input": fingerprint(items), "items": len(items)}
    catalog, rejects = catalog_dir(out, source), rejects_dir(out, source)
    hint = "Pass --overwrite to re-ingest this source from scratch, or --name to ingest it as another source."
    if job_state.check_and_record(store.join(out, "jobs", f"ingest-{source}.json"), record, config.overwrite, hint):
        store.remove(catalog)
        store.remove(rejects)
    _clean_debris(catalog, rejects)
    parts = cut_parts(items, config.rows_per_part)
    done = {p.rsplit("/", 1)[-1] for p in store.list_files(catalog, ".parquet")}
    pending = {i: part for i, part in enumerate(parts) if part_name(i) not in done}
    if pending:
        init_ray(ray_config)
        import ray

        rows = [{PART_COLUMN: i, "item": json.dumps(item)} for i, part in pending.items() for item in part]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // config.batch_size, 200)))
        dataset = dataset.map_batches(
            ingest_batch, fn_args=(spec, config.limits), batch_size=config.batch_size,
            batch_format="pyarrow", num_cpus=config.num_cpus, udf_modifying_row_count=False,
        )

        def commit(index: int, table: pa.Table) -> None:
            _commit_part(catalog, rejects, index, table)

        expected = {i: len(part) for i, part in pending.items()}
        commit_stream(dataset.iter_batches(batch_format="pyarrow", batch_size=None), expected, commit,
                      f"ingest {source}", ray_config.progress_bars)
    return summarise(out, source, len(items), len(parts), len(parts) - len(pending))


def cut_parts(items: list[dict], rows_per_part: int) -> list[list[dict]]:
    """Consecutive parts of at most `rows_per_part` items; items sharing a `group` (an ID subject) stay
    in one part, which may then be larger."""
    parts: list[list[dict]] = []
    for item in items:
        same_group = parts and item.get("group") and parts[-1][-1].get("group") == item.get("group")
        if parts and (len(parts[-1]) < rows_per_part or same_group):
            parts[-1].append(item)
        else:
            parts.append([item])
    return parts


def _commit_part(catalog: str, rejects: str, index: int, table: pa.Table) -> None:
    is_reject = table.column("reject_reason").is_valid()
    rejected = table.filter(is_reject)
    accepted = table.filter(pa.compute.invert(is_reject))
    reject_rows = pa.table(
        {"source": rejected["source"], "uri": rejected["uri"], "key": rejected["key"],
         "reason": rejected["reject_reason"], "error": rejected["reject_error"],
         "stage": pa.array(["ingest"] * rejected.num_rows, pa.string())},
        schema=REJECTS_SCHEMA,
    )
    store.commit_table(store.join(rejects, part_name(index)), reject_rows)
    catalog_rows = accepted.drop_columns(list(REJECT_COLUMNS)).select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)
    store.commit_table(store.join(catalog, part_name(index)), catalog_rows)


def _clean_debris(catalog: str, rejects: str) -> None:
    """Remove temp files of killed runs and rejects parts whose catalog part never committed."""
    store.clean_temporaries(catalog)
    store.clean_temporaries(rejects)
    committed = {p.rsplit("/", 1)[-1] for p in store.list_files(catalog, ".parquet")}
    for path in store.list_files(rejects, ".parquet"):
        if path.rsplit("/", 1)[-1] not in committed:
            store.remove(path)


def summarise(out: str, source: str, items: int, parts: int, done_before: int) -> IngestSummary:
    catalog_rows = sum(store.read_table(p, ["key"]).num_rows for p in store.list_files(catalog_dir(out, source), ".parquet"))
    reasons: dict[str, int] = {}
    for path in store.list_files(rejects_dir(out, source), ".parquet"):
        for reason in store.read_table(path, ["reason"]).column("reason").to_pylist():
            reasons[reason] = reasons.get(reason, 0) + 1
    return IngestSummary(source, items, parts, done_before, catalog_rows, reasons)
