"""The stats table: every line from `shard_stats`' own numbers, the long lists cut to their largest counts."""

from __future__ import annotations

from onegen.manifests.stats_table import counts_line, human_bytes, stats_table

STATS = {
    "samples": 12, "shards": 3, "bytes": 5 * 2**20 + 2**19,
    "samples_per_task": {"canny2image": 4, "multiview": 1, "text2image": 7},
    "samples_per_source": {"photos": 11, "scenes": 1},
    "skipped_per_reason": {"text2image: no_caption": 2, "pose2image: no_person": 5},
    "catalog_rows": 14, "rejects_per_reason": {"decode_error": 2, "too_small": 1},
    "annotation_statuses": {"canny@1": {"ok": 14}, "pose@1": {"ok": 9, "no_person": 5},
                            "depth@1": {"ok": 13, "error": 1}},
    "annotation_errors": {"depth@1": {"RuntimeError: x": {"count": 1, "examples": ["k"]}}},
}


def test_the_table_holds_tasks_totals_and_one_line_per_store():
    assert stats_table(STATS).splitlines() == [
        "task          samples",
        "canny2image         4",
        "multiview           1",
        "text2image          7",
        "all                12  in 3 shards, 5.5 MiB (5767168 bytes)",
        "sources: photos 11, scenes 1",
        "skipped candidates: 7 (pose2image: no_person 5, text2image: no_caption 2)",
        "catalog: 14 rows; ingest rejects: 3 (decode_error 2, too_small 1)",
        "annotations: 3 stores, 36 rows ok; not ok: pose@1 no_person 5, depth@1 error 1",
    ]


def test_a_shards_folder_without_a_dataset_root_has_no_catalog_lines():
    bare = {k: STATS[k] for k in ("samples", "shards", "bytes", "samples_per_task", "samples_per_source")}
    lines = stats_table({**bare, "skipped_per_reason": {}}).splitlines()
    assert len(lines) == 6 and lines[-1] == "sources: photos 11, scenes 1"


def test_long_lists_keep_their_largest_counts():
    counts = {f"reason{i}": i for i in range(1, 8)}
    assert counts_line(counts) == "reason7 7, reason6 6, reason5 5, reason4 4, others 6"
    assert [human_bytes(n) for n in (0, 1023, 1536, 3 * 2**30)] == ["0 B", "1023 B", "1.5 KiB", "3.0 GiB"]
