"""Reading shard manifests: stats over a shards folder, and shard selection for training."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from onegen.core.source_columns import SOURCE_COLUMN_PREFIX
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, ShardLayout
from onegen.manifests.shard_index import shard_bytes


def read_manifests(out: str, columns: list[str] | None = None) -> pa.Table:
    paths = ShardLayout(out).manifest_paths()
    tables = [files.read_table(p, columns) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


def count_manifest_rows(out: str, columns: list[str]) -> Counter:
    """Samples per value tuple of `columns` over every shard manifest, counted one manifest at a time
    (Arrow group-by): what a summary needs, without holding a row per sample."""
    counts: Counter = Counter()
    for path in ShardLayout(out).manifest_paths():
        table = files.read_table(path, columns)
        if table.num_rows == 0:
            continue
        grouped = table.group_by(columns).aggregate([([], "count_all")]).to_pydict()
        for values in zip(*(grouped[c] for c in columns), grouped["count_all"], strict=True):
            counts[values[:-1] if len(columns) > 1 else values[0]] += values[-1]
    return counts


def select_shards(out: str, tasks: list[str] | None = None, sources: list[str] | None = None) -> list[str]:
    """Paths of the shards holding at least one sample of the given tasks and sources."""
    table = read_manifests(out, ["shard", "task", "source"])
    if table.num_rows == 0:
        return []
    rows = table.to_pylist()
    chosen = sorted({r["shard"] for r in rows if (not tasks or r["task"] in tasks) and (not sources or r["source"] in sources)})
    return [files.join(out, shard) for shard in chosen]


def reason_key(reason: str) -> str:
    """A skip reason as stats count it: reasons that carry a value or a key (`filtered:aesthetic=4.1<5`,
    `duplicate_of:<key>`) by their family (`filtered:aesthetic`, `duplicate_of`); the others as they are."""
    if reason.startswith("filtered:"):
        return reason.split("=", 1)[0]
    if reason.startswith("duplicate_of:"):
        return "duplicate_of"
    return reason


def shard_stats(out: str) -> dict:
    """Samples per task and per source, bytes, skipped candidates per reason, and — through the
    build record's catalog root — ingest rejects per reason and annotation statuses per store."""
    counts = count_manifest_rows(out, ["task", "source", "shard"])
    skipped = Counter()
    for path in files.list_files(ShardLayout(out).skipped_dir(), ".parquet"):
        for row in files.read_table(path, ["task", "reason"]).to_pylist():
            skipped[f"{row['task']}: {reason_key(row['reason'])}"] += 1
    stats = {
        "samples": sum(counts.values()),
        "shards": len({shard for _, _, shard in counts}),
        "bytes": shard_bytes(out),  # tar file sizes, as build reports them
        "samples_per_task": dict(sorted(sum_by(counts, 0).items())),
        "samples_per_source": dict(sorted(sum_by(counts, 1).items())),
        "skipped_per_reason": dict(sorted(skipped.items())),
    }
    record = files.read_json(ShardLayout(out).record()) or {}
    if record.get("root"):
        stats.update(catalog_stats(record["root"]))
    return stats


def sum_by(counts: Counter, position: int) -> Counter:
    """Counts keyed by tuples (count_manifest_rows) summed by the value at `position` of the key."""
    summed: Counter = Counter()
    for values, n in counts.items():
        summed[values[position]] += n
    return summed


def catalog_stats(root: str) -> dict:
    """Ingest rejects per reason and annotation statuses per store under a dataset root."""
    rejects = Counter()
    layout = DatasetLayout(root)
    for path in files.list_files(layout.rejects(), ".parquet"):
        rejects.update(files.read_table(path, ["reason"]).column("reason").to_pylist())
    annotations: dict[str, dict[str, int]] = {}
    errors: dict[str, dict[str, dict]] = {}
    nsfw: dict[str, str] = {}
    for name in layout.store_names():
        counts, checked = Counter(), 0
        is_faces = name.startswith("faces@")
        for path in files.list_files(layout.store_dir(name), ".parquet"):
            # only the small columns: annotation parts also hold images and maps
            table = files.read_table(path, ["key", "status", "error"] + (["nsfw_checked"] if is_faces else []))
            counts.update(table.column("status").to_pylist())
            _add_errors(errors.setdefault(name, {}), table)
            if is_faces:
                checked += sum(bool(v) for v in table.column("nsfw_checked").to_pylist())
        annotations[name] = dict(sorted(counts.items()))
        if is_faces:
            nsfw[name] = f"on: {checked} images checked" if checked else "off: no NSFW classifier configured"
    catalog_rows = sum(files.count_rows(p) for p in files.list_files(layout.catalog(), ".parquet"))
    stats = {"catalog_rows": catalog_rows, "rejects_per_reason": dict(sorted(rejects.items())),
             "source_columns": source_column_stats(layout),
             "annotation_statuses": annotations,
             "annotation_errors": {name: dict(sorted(found.items())) for name, found in errors.items() if found}}
    if nsfw:
        stats["nsfw_filter"] = nsfw
    return stats


ERROR_EXAMPLES = 3
def source_column_stats(layout: DatasetLayout) -> dict[str, dict[str, dict]]:
    """{catalog source: {its own column (no prefix): {type, rows, nulls, min, max}}} from the catalog parts'
    Parquet footers (row-group statistics; no row is read): what `build --filter 'source.<column>...'` and a
    source policy's `dense = "source.<column>"` can use. min / max are kept for numbers only."""
    parts: dict[str, list[str]] = {}
    for source, path in layout.catalog_parts():
        parts.setdefault(source, []).append(path)
    found = {}
    for source, paths in parts.items():
        columns = {}
        for name, entry in files.column_statistics(paths, SOURCE_COLUMN_PREFIX).items():
            numeric = all(isinstance(entry[k], (int, float)) for k in ("min", "max"))
            columns[name[len(SOURCE_COLUMN_PREFIX):]] = {**entry, **({} if numeric else {"min": None, "max": None})}
        if columns:
            found[source] = columns
    return found


def _add_errors(found: dict[str, dict], table) -> None:
    """Count rows of status "error" by their error text (first line), with a few example keys each
    (what `onegen annotate --retry-errors` would redo)."""
    for key, status, error in zip(table.column("key").to_pylist(), table.column("status").to_pylist(),
                                  table.column("error").to_pylist(), strict=True):
        if status != "error":
            continue
        reason = ((error or "").strip().splitlines() or [""])[0][:160]
        entry = found.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < ERROR_EXAMPLES:
            entry["examples"].append(key)
