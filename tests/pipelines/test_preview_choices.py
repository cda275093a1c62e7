"""Preview choices: a seeded spread of samples across sources; expected skips apart from errors."""

from __future__ import annotations

import pyarrow as pa

from onegen.manifests import files
from onegen.pipelines.preview.report import annotation_outcomes, choose_samples


def _rows() -> list[dict]:
    """30 canny rows of source "photos" (one catalog image each) and 2 of source "scenes"."""
    rows = [{"task": "canny2image", "source": "photos", "shard": f"s{i // 10}", "ordinal": i, "key": f"p{i}"}
            for i in range(30)]
    return rows + [{"task": "canny2image", "source": "scenes", "shard": "s9", "ordinal": i, "key": f"s{i}"}
                   for i in range(2)]


def test_samples_are_a_seeded_spread_across_sources_not_the_first_n():
    rows = _rows()
    chosen = choose_samples(rows, 4)["canny2image"]
    assert len(chosen) == 4
    assert [r["source"] for r in chosen].count("scenes") == 2  # sources take turns: both scene rows shown
    assert [r["key"] for r in chosen] != [r["key"] for r in rows[:4]]
    assert choose_samples(list(reversed(rows)), 4) == choose_samples(rows, 4)  # same rows + seed: same choice
    picks = {tuple(r["key"] for r in choose_samples(rows, 4, seed=seed)["canny2image"]) for seed in range(5)}
    assert len(picks) > 1  # the seed changes the spread
    assert chosen == sorted(chosen, key=lambda r: (r["shard"], r["ordinal"]))  # read in stream order


def test_expected_skips_are_apart_from_errors(tmp_path):
    statuses = ["ok", "skipped", "skipped", "error", "no_face"]
    errors = [None, "blur does not annotate rows of kind 'scene'", "blur does not annotate rows of kind 'scene'",
              "cv2.error: bad image\ntraceback", "no face found"]
    files.commit_table(str(tmp_path / "annotations" / "blur@1" / "photos" / "part-00000.parquet"),
                       pa.table({"key": list("abcde"), "status": statuses, "error": errors}))
    found_errors, skips = annotation_outcomes(str(tmp_path))
    assert found_errors == {"blur@1: error: cv2.error: bad image": 1}
    assert skips == {"blur@1: skipped: blur does not annotate rows of kind 'scene'": 2,
                     "blur@1: no_face: no face found": 1}
