"""`onegen ingest SOURCE --out DIR`: raw items -> catalog/<source>/ parts + rejects/<source>/ parts.

The listing of the source (sorted by uri) is cut into parts of `rows_per_part` items; part i always
holds the same items, so a rerun of the same job skips committed parts and redoes the rest. A part is
a unit of the unit-job contract (`IngestJob`, pipelines/runtime/unit_job.py): one Ray task reads its
items (one pass per file, tar or row group), validates and normalises them, and commits the part
itself: rejects/<source>/part-NNNNN.parquet, then catalog/<source>/part-NNNNN.parquet, then the unit's
marker catalog/<source>/_units/part-NNNNN.json (a rejects file without its catalog file is debris;
a catalog part without its marker is made again). The driver only plans parts and reads back one
small record per part, in whatever order parts finish; the summary adds up records, never data files.
Parts that are slices of one Parquet row group (a URL table listed from its footers) run several to a
task, one after another (`bundle_parts`), each still committed and marked on its own.

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial

from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, part_name
from onegen.pipelines.jobs.ingest_output import PartOutput
from onegen.pipelines.jobs.settings import IngestConfig
from onegen.pipelines.runtime import job_state
from onegen.pipelines.runtime.ray_setup import RayConfig
from onegen.pipelines.runtime.unit_job import COMPLETION_META, UnitJob, run_job, run_units_in_turn
from onegen.pipelines.runtime.units import run_unit_tasks
from onegen.pipelines.sources.catalog_images import REF_COLUMN, make_ref
from onegen.pipelines.sources.image_checks import ImageLimits, NormalisedImage, Rejected, normalise_image
from onegen.pipelines.sources.kinds import SCENE_KINDS, SceneReader, read_items
from onegen.pipelines.sources.listing import Listing, list_parts, read_part
from onegen.pipelines.sources.scene_views import view_photo_rows
from onegen.pipelines.sources.settings import SourceSpec
from onegen.pipelines.sources.table import expand_ranges, source_columns
from onegen.pipelines.sources.url_fetch import Checked, FetchFailed

RECORDED_WHEN_SET = ("max_views", "min_viewpoint_quality", "captions", "caption_key", "caption_text", "ids",
                     "views_as_photos")  # SourceSpec fields added later


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
    """`iter_ingest_rows` as a list."""
    return list(iter_ingest_rows(spec, limits, items, images))


def iter_ingest_rows(spec: SourceSpec, limits: ImageLimits, items: list[dict],
                     images: str = "copy") -> Iterator[dict]:
    """One output row per item, in item order, each as soon as it is read: catalog columns, or a reject
    (reject_reason set). Never raises for data. (With `--views-as-photos`, an accepted scene is a row per
    view.)

    With `images == "reference"`, rows whose bytes are kept as they are get `image_ref` instead of `image`."""
    if items and items[0]["kind"] in SCENE_KINDS:
        reader = SceneReader(spec, items)  # one reader per part: a CO3D category's annotations parsed once
        for item in items:
            scene = scene_catalog_row(spec, limits, item, reader)
            if not spec.views_as_photos or scene["reject_reason"]:  # a rejected scene stays one reject
                yield scene
            else:
                yield from view_photo_rows(scene, limits, make_key)
        return
    source = spec.source_name
    kind = "subject_image" if items and items[0]["kind"] == "subjects" else "image"
    for item, data in read_items(spec, items, partial(checked_image, limits=limits)):
        checked = None
        if isinstance(data, Checked):  # a URL body validated in its fetching thread (url_fetch.fetch_urls)
            data, checked = data.data, data.result
        row = {"source": source, "uri": item["uri"], "key": None, "caption_original": item.get("caption")}
        if isinstance(data, FetchFailed):  # a URL that gave no body: its own reason, the URL in the detail
            yield {**row, "reject_reason": data.reason, "reject_error": f"{item.get('target')}: {data.detail}"}
            continue
        if isinstance(data, Exception):
            yield {**row, "reject_reason": "read_error", "reject_error": f"{type(data).__name__}: {data}"}
            continue
        content_sha = hashlib.sha256(data).hexdigest()
        row.update(key=make_key(source, item["uri"], content_sha), sha256=content_sha)
        image = checked if checked is not None else checked_image(data, limits)
        if isinstance(image, Rejected):
            yield {**row, "reject_reason": image.reason, "reject_error": image.detail}
            continue
        meta = {"original_bytes": len(data), "reencoded": image.reencoded, **(item.get("meta") or {})}
        ref = make_ref(item) if images == "reference" and not image.reencoded else None
        yield {**row, "kind": kind, "image": None if ref else image.data, "image_format": image.image_format,
               REF_COLUMN: json.dumps(ref, sort_keys=True) if ref else None,
               "width": image.width, "height": image.height, "meta": json.dumps(meta),
               "subject": item.get("group") or None, "reject_reason": None, "reject_error": None}


def checked_image(data: bytes, limits: ImageLimits) -> NormalisedImage | Rejected:
    """`normalise_image`, with a data problem returned as its Rejected rather than raised (what a fetching
    thread may run: url_fetch.fetch_urls `check`)."""
    try:
        return normalise_image(data, limits)
    except Rejected as rejected:
        return rejected


def scene_catalog_row(spec: SourceSpec, limits: ImageLimits, item: dict, reader: SceneReader) -> dict:
    """A multiview scene -> one catalog row (views kept as they are, each checked to decode), read by
    the part's `reader`."""
    source = spec.source_name
    base = {"source": source, "uri": item["uri"], "key": None, "caption_original": item.get("caption")}
    try:
        row = reader.read(item)
        if item.get("meta"):  # what the listing knows of the scene (a joined caption's key)
            row["meta"] = json.dumps({**json.loads(row["meta"]), **item["meta"]})
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


def list_source(config: IngestConfig) -> Listing:
    """The source's listing cut into parts, streamed into the spill file the workers read their parts
    from (pipelines/sources/listing.py): what a run of `config` ingests."""
    spill = DatasetLayout(config.out).ingest_listing(config.source.source_name)
    return list_parts(config.source, config.rows_per_part, spill)


@dataclass(frozen=True)
class IngestUnit:
    """One part of the source's listing: the worker reads its items from row group `index` of `listing`."""

    index: int
    listing: str  # the spill file (pipelines/sources/listing.py)
    rows: int  # items in the part
    input: str = ""  # the job record fixes the listing (its fingerprint)
    group: str = ""  # the Parquet row group this part is one slice of ("" when none: listing.part_groups)

    @property
    def name(self) -> str:
        return part_name(self.index).removesuffix(".parquet")


class IngestJob(UnitJob[IngestUnit]):
    """`config.source` -> catalog/<source>/ parts (the unit-job contract, pipelines/runtime/unit_job.py)."""

    def __init__(self, config: IngestConfig, listing: Listing):
        self.config, self.listing = config, listing
        self.num_cpus = config.num_cpus

    @property
    def description(self) -> str:
        return f"ingest {self.config.source.source_name}"

    def _layout(self) -> DatasetLayout:
        return DatasetLayout(self.config.out)

    def changes(self) -> list[str] | None:
        return job_state.recorded_changes(self._layout().ingest_record(self.config.source.source_name),
                                          job_record(self.config, self.listing))

    def prepare(self) -> None:
        layout, source = self._layout(), self.config.source.source_name
        if self.listing.spill != layout.ingest_listing(source):
            raise ValueError(f"ingest {source}: the listing was spilled to {self.listing.spill!r}, not this job's own")
        catalog, rejects = layout.catalog_dir(source), layout.rejects_dir(source)
        hint = "Pass --overwrite to re-ingest this source from scratch, or --name to ingest it as another source."
        if job_state.check_and_record(layout.ingest_record(source), job_record(self.config, self.listing),
                                      self.config.overwrite, hint):
            files.remove(catalog)
            files.remove(rejects)
        _clean_debris(catalog, rejects)

    def plan(self) -> list[IngestUnit]:
        spill = self.listing.spill or self._layout().ingest_listing(self.config.source.source_name)
        groups = self.listing.part_groups or ("",) * len(self.listing.part_sizes)
        return [IngestUnit(i, spill, rows, group=group)
                for i, (rows, group) in enumerate(zip(self.listing.part_sizes, groups, strict=True))]

    def run_pending(self, units: list[IngestUnit], ray_config: RayConfig) -> list[dict]:
        """The parts that are slices of one row group run in tasks of several, one part after another,
        so the group is read once per task rather than once per part (a URL table published with
        1M-row groups); every part still commits and marks itself, so a kill loses only the part running."""
        import ray

        slots = max(1, int(ray.cluster_resources().get("CPU", 1) / self.num_cpus))
        bundles = bundle_parts(units, slots)
        return run_unit_tasks(run_units_in_turn, bundles, (self,), self.num_cpus, self.description,
                              ray_config.progress_bars, total=len(units))

    def marker(self, unit: IngestUnit) -> str:
        return self._layout().ingest_marker(self.config.source.source_name, unit.index)

    def previous_record(self, unit: IngestUnit) -> dict | None:
        """A catalog part committed before the marker rule (no completion stamp) was its own marker."""
        layout, source = self._layout(), self.config.source.source_name
        part = layout.catalog_part(source, unit.index)
        if not files.exists(part) or COMPLETION_META in files.read_metadata(part):
            return None
        reasons: dict[str, int] = {}
        if files.exists(layout.rejects_part(source, unit.index)):
            for reason in files.read_table(layout.rejects_part(source, unit.index), ["reason"]).column("reason").to_pylist():
                reasons[reason] = reasons.get(reason, 0) + 1
        return {"part": unit.index, "catalog_rows": files.count_rows(part), "rejects": reasons}

    def run_unit(self, unit: IngestUnit) -> dict:
        """Worker: read + validate the part's items, commit rejects then catalog; its record."""
        config = self.config
        items = expand_ranges(config.source, read_part(unit.listing, unit.index))  # a URL table's rows
        # a table's rows (one per item) keep the source row's own columns, namespaced
        fields = source_columns(items) if items and items[0]["kind"] == "table" else None
        output = PartOutput(self._layout(), config.source.source_name, unit.index, fields)
        try:
            for row in iter_ingest_rows(config.source, config.limits, items, config.images):
                output.add(row)
        except BaseException:
            output.abort()  # a bug, not bad input: nothing of the part is committed
            raise
        catalog_rows, rejects = output.commit()
        return {"part": unit.index, "catalog_rows": catalog_rows, "rejects": rejects}

    def summarise(self, units: list[IngestUnit], done: dict[str, dict], ran: list[dict]) -> IngestSummary:
        """Totals of every committed part, from the unit records alone (no data file is read)."""
        records = [*done.values(), *ran]
        reasons: dict[str, int] = {}
        for record in records:
            for reason, count in record["rejects"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        return IngestSummary(self.config.source.source_name, self.listing.items, len(units), len(done),
                             sum(r["catalog_rows"] for r in records), dict(sorted(reasons.items())))


def run_ingest(config: IngestConfig, ray_config: RayConfig, listing: Listing | None = None) -> IngestSummary:
    """Ingest `config.source`; `listing` is `list_source(config)` when the caller already made it (a
    recipe run plans from it), so a source is listed once per run."""
    return run_job(IngestJob(config, listing or list_source(config)), ray_config)


def job_record(config: IngestConfig, listing: Listing) -> dict:
    """What jobs/ingest-<source>.json holds for `config` over the source's `listing`."""
    # how URLs are fetched changes no row that is kept, so it is not part of the job's identity; the
    # published-source fields are recorded only when set, so records made before them stay valid
    defaults = asdict(SourceSpec(config.source.path))
    source = {k: v for k, v in asdict(config.source).items()
              if not k.startswith("fetch_") and (k not in RECORDED_WHEN_SET or v != defaults[k])}
    record = {"job": "ingest", "source": source, "limits": asdict(config.limits),
              "rows_per_part": config.rows_per_part, "input": listing.fingerprint, "items": listing.items}
    if config.images != "copy":  # recorded only when not the default, so older records stay valid
        record["images"] = config.images
    return record


MAX_PARTS_PER_TASK = 256  # a task reads its row group once per this many parts (64K rows of 256)


def bundle_parts(units: list[IngestUnit], slots: int) -> list[list[IngestUnit]]:
    """Consecutive units of one row group (`group`) in bundles, each run as one task: as few bundles as
    keep `slots` tasks busy twice over, at most MAX_PARTS_PER_TASK parts each; any other unit alone."""
    sliced = sum(1 for unit in units if unit.group)
    size = max(1, min(MAX_PARTS_PER_TASK, -(-sliced // (2 * slots))))
    bundles: list[list[IngestUnit]] = []
    for unit in units:
        last = bundles[-1] if bundles else None
        if last and unit.group and last[-1].group == unit.group and len(last) < size:
            last.append(unit)
        else:
            bundles.append([unit])
    return bundles


def _clean_debris(catalog: str, rejects: str) -> None:
    """Remove temp files of killed runs and rejects parts whose catalog part never committed."""
    files.clean_temporaries(catalog)
    files.clean_temporaries(rejects)
    committed = {p.rsplit("/", 1)[-1] for p in files.list_files(catalog, ".parquet")}
    for path in files.list_files(rejects, ".parquet"):
        if path.rsplit("/", 1)[-1] not in committed:
            files.remove(path)
