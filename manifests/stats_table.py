"""`stats_table(stats)`: the few lines a person reads of a shards folder's stats (`shard_stats`, query.py).

What `onegen manifest stats SHARDS` prints, and what the demo ends with: samples per task, the total
with its shards and bytes, samples per source, then one line each for skipped candidates, the catalog's
rows and ingest rejects, annotation rows that are not "ok" (the largest counts, then `others N`: the
rest summed), and one line per table source with its own columns (`source.<column>`: ranges, nulls). Every number is one of `shard_stats`' own; `onegen manifest stats SHARDS --json` prints them all.
"""

from __future__ import annotations

SHOWN = 4  # counts named on one line; the others are summed into "others N"


def stats_table(stats: dict) -> str:
    """The table of `shard_stats(out)` (module docstring), lines joined by newlines, no trailing one."""
    per_task = stats["samples_per_task"]
    width = max([len("task"), len("all"), *map(len, per_task)])
    lines = [f"{'task':<{width}}  {'samples':>8}"]
    lines += [f"{task:<{width}}  {count:>8}" for task, count in per_task.items()]
    lines.append(f"{'all':<{width}}  {stats['samples']:>8}  in {stats['shards']} shards, "
                 f"{human_bytes(stats['bytes'])} ({stats['bytes']} bytes)")
    if stats["samples_per_source"]:
        lines.append("sources: " + counts_line(stats["samples_per_source"]))
    skipped = stats["skipped_per_reason"]
    if skipped:
        lines.append(f"skipped candidates: {sum(skipped.values())} ({counts_line(skipped)})")
    if "catalog_rows" in stats:  # the build record names its dataset root
        rejects = stats["rejects_per_reason"]
        lines.append(f"catalog: {stats['catalog_rows']} rows; ingest rejects: "
                     + (f"{sum(rejects.values())} ({counts_line(rejects)})" if rejects else "none"))
        lines.append(_annotations_line(stats["annotation_statuses"]))
        lines += [_source_columns_line(source, columns) for source, columns in stats.get("source_columns", {}).items()]
    return "\n".join(lines)


def _source_columns_line(source: str, columns: dict[str, dict]) -> str:
    """`source <name> columns: aesthetic_score 0.5..9.1, text (2 null), ...`: a table source's own columns,
    numbers with their range, and the nulls of each (what `--filter 'source.<column>...'` can use)."""
    parts = []
    for name, entry in columns.items():
        text = name + (f" {entry['min']:g}..{entry['max']:g}" if entry["min"] is not None else "")
        parts.append(text + (f" ({entry['nulls']} null)" if entry["nulls"] else ""))
    return f"source {source} columns: " + ", ".join(parts)


def _annotations_line(statuses: dict[str, dict[str, int]]) -> str:
    ok = sum(counts.get("ok", 0) for counts in statuses.values())
    other = {f"{store} {status}": n for store, counts in statuses.items() for status, n in counts.items()
             if status != "ok"}
    line = f"annotations: {len(statuses)} stores, {ok} rows ok"
    return line + (f"; not ok: {counts_line(other)}" if other else "")


def counts_line(counts: dict[str, int]) -> str:
    """`name count, ...`, largest first: at most `SHOWN` names, then `others N` (the rest's total)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(f"{name} {count}" for name, count in ranked[:SHOWN])
    rest = sum(count for _, count in ranked[SHOWN:])
    return text + (f", others {rest}" if rest else "")


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal; bytes as they are below 1 KiB)."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
