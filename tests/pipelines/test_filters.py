"""Build-time score filters and the paper's task selections: reasons, values, counts. Pure; no model runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from onegen.pipelines.hygiene.filters import (
    FilterError,
    apply_filters,
    filter_stores,
    parse_filter,
    parse_filters,
    reason_family,
)
from onegen.pipelines.hygiene.task_selection import (
    PoseSelection,
    largest_person_fraction,
    nsfw_exclusions,
    person_area_reason,
)
from onegen.pipelines.samples.faceid import FaceidConfig, faceid_samples


def _row(value, status="ok", column="score"):
    return {"key": "k", "status": status, column: value}


def test_parse_maps_names_to_stores_and_columns():
    f = parse_filter("aesthetic >= 5")
    assert (f.name, f.op, f.threshold, f.store, f.column, str(f)) == ("aesthetic", ">=", 5.0, "aesthetic", "score", "aesthetic>=5")
    assert (parse_filter("clip_score>=0.2").store, parse_filter("clip_score>=0.2").column) == ("clip", "clip_score")
    assert (parse_filter("nsfw<0.5").store, parse_filter("watermark.score<=0.3").column) == ("nsfw", "score")
    filters = parse_filters(["aesthetic>=5", "nsfw<0.5", "clip_score>=0.2"])
    assert filter_stores(filters) == ["aesthetic", "clip", "nsfw"]
    for bad, message in [("aesthetic=>5", "expected NAME"), ("beauty>=5", "unknown score 'beauty'"),
                         ("aesthetic>=five", "not a number"), ("nsfw<nan", "finite")]:
        with pytest.raises(FilterError, match=message):
            parse_filter(bad)


@pytest.mark.parametrize(("text", "value", "reason"), [
    ("aesthetic>=5", 4.1, "filtered:aesthetic=4.1<5"),
    ("aesthetic>=5", 5.0, None),
    ("aesthetic>5", 5.0, "filtered:aesthetic=5<=5"),
    ("nsfw<0.5", 0.73125, "filtered:nsfw=0.7312>=0.5"),
    ("nsfw<0.5", 0.49, None),
    ("nsfw<=0.5", 0.5, None),
    ("watermark<0.25", 0.3, "filtered:watermark=0.3>=0.25"),
])
def test_reasons_name_the_value_and_the_failed_comparison(text, value, reason):
    outcome = parse_filter(text).evaluate(_row(value))
    assert outcome.reason == reason and outcome.value == pytest.approx(value)


def test_missing_error_and_null_rows_are_filtered_with_their_own_reason():
    clip = parse_filter("clip_score>=0.2")
    assert clip.reason(None) == "missing_annotation:clip"
    assert clip.reason(_row(None, "error", "clip_score")) == "filtered:clip_score=error"
    assert clip.reason(_row(None, "ok", "clip_score")) == "filtered:clip_score=null"  # no caption to score
    assert clip.reason(_row(None, "skipped", "clip_score")) is None  # a scene: clip does not handle it


def test_apply_filters_reports_the_first_failure_and_counts_per_filter():
    filters = parse_filters(["aesthetic>=5", "nsfw<0.5", "clip_score>=0.2"])
    rows = [  # (aesthetic, nsfw, clip_score) of 6 candidates
        (6.0, 0.1, 0.3), (4.0, 0.9, 0.3), (5.5, 0.7, 0.1), (5.5, 0.1, 0.1), (7.0, 0.2, 0.25), (None, 0.2, 0.25)]
    reasons = []
    for aesthetic, nsfw, clip in rows:
        annotations = {"aesthetic": _row(aesthetic) if aesthetic is not None else None, "nsfw": _row(nsfw),
                       "clip": _row(clip, column="clip_score")}
        reasons.append(apply_filters(filters, annotations))
    assert reasons == [None, "filtered:aesthetic=4<5", "filtered:nsfw=0.7>=0.5", "filtered:clip_score=0.1<0.2",
                       None, "missing_annotation:aesthetic"]
    counts = Counter(reason_family(r) for r in reasons if r)
    assert counts == {"filtered:aesthetic": 1, "filtered:nsfw": 1, "filtered:clip_score": 1, "missing_annotation": 1}
    assert reason_family("duplicate_of:coyo-abc") == "duplicate_of"
    # a new threshold is a new answer from the same stored rows: nothing else is consulted
    looser = parse_filters(["aesthetic>=3.5", "nsfw<0.8", "clip_score>=0.05"])
    assert apply_filters(looser, {"aesthetic": _row(4.0), "nsfw": _row(0.7), "clip": _row(0.1, column="clip_score")}) is None


def test_filter_modules_import_no_model_or_ray():
    code = ("import sys, onegen.pipelines.hygiene.filters, onegen.pipelines.hygiene.task_selection, onegen.pipelines.hygiene.build_hygiene; "
            "bad = {'ray', 'torch', 'transformers'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _pose(boxes, status="ok"):
    people = [{"box": box, "score": 0.9, "keypoints": []} for box in boxes]
    return {"key": "k", "status": status, "keypoints_json": json.dumps(people), "n_persons": len(people)}


def test_pose_selection_by_largest_person_box():
    # a 200 x 100 image: a 40 x 50 box is 0.1 of it, a box half outside counts only its inside part
    assert largest_person_fraction(_pose([[0, 0, 40, 50], [10, 10, 20, 20]])["keypoints_json"], 200, 100) == pytest.approx(0.1)
    assert largest_person_fraction(_pose([[180, 50, 220, 150]])["keypoints_json"], 200, 100) == pytest.approx(0.05)
    config = PoseSelection(min_person_area=0.1)
    assert person_area_reason(_pose([[0, 0, 40, 50]]), 200, 100, config) is None
    assert person_area_reason(_pose([[0, 0, 20, 31]]), 200, 100, config) == "filtered:person_area=0.031<0.1"
    assert person_area_reason(_pose([], status="no_person"), 200, 100, config) == "pose:no_person"
    assert person_area_reason(None, 200, 100, config) == "missing_annotation:pose"
    assert person_area_reason(_pose([[0, 0, 20, 31]]), 200, 100, PoseSelection(0.03)) is None


def _subject(count):
    rows = [{"key": f"ids-{i}", "source": "ids", "image": b"JPEG%d" % i, "image_format": "jpg", "width": 8,
             "height": 8} for i in range(count)]
    return rows, [{"status": "ok"}] * count, [None] * count, list(range(count))


def test_id_set_drops_nsfw_photos_before_the_four_photo_rule():
    rows, faces, captions, ordinals = _subject(5)
    nsfw = [_row(0.1), _row(0.9), _row(0.2), _row(0.3), _row(0.05)]
    excluded = nsfw_exclusions(nsfw, threshold=0.5)
    assert excluded == [None, "filtered:nsfw=0.9>=0.5", None, None, None]
    results = dict(faceid_samples(rows, faces, captions, ordinals, "faces@1", FaceidConfig(), excluded))
    assert results[1] == "filtered:nsfw=0.9>=0.5"
    kept = [i for i, r in results.items() if not isinstance(r, str)]
    assert kept == [0, 2, 3, 4] and all("ids-1" not in results[i].source_keys for i in kept)  # never a reference
    # two unsafe photos leave three: the subject is now too small, with the count after the NSFW drop
    excluded = nsfw_exclusions([_row(0.1), _row(0.9), _row(0.95), _row(0.3), None], threshold=0.5)
    results = dict(faceid_samples(rows, faces, captions, ordinals, "faces@1", FaceidConfig(), excluded))
    assert results == {0: "subject_too_small:2 usable", 1: "filtered:nsfw=0.9>=0.5", 2: "filtered:nsfw=0.95>=0.5",
                       3: "subject_too_small:2 usable", 4: "missing_annotation:nsfw"}
    # without `excluded` nothing changes (backwards compatible)
    assert all(not isinstance(r, str) for _, r in faceid_samples(rows, faces, captions, ordinals, "faces@1", FaceidConfig()))


def test_source_filters_read_the_catalog_rows_own_columns_case_insensitively():
    from onegen.pipelines.hygiene.filters import SOURCE_STORE, filter_stores, reads_source, source_fields

    filters = parse_filters(["source.AESTHETIC_SCORE>=5", "source.punsafe<0.1", "aesthetic>=4"])
    assert filter_stores(filters) == ["aesthetic"]  # no annotation store called "source" is joined
    assert reads_source(filters) and not reads_source(parse_filters(["aesthetic>=4"]))
    row = {"key": "k", "source.AESTHETIC_SCORE": 6.2, "source.punsafe": 0.3, "caption_original": "x"}
    fields = {SOURCE_STORE: source_fields(row), "aesthetic": {"status": "ok", "score": 4.5}}
    assert apply_filters(filters, fields) == "filtered:source.punsafe=0.3>=0.1"
    row["source.punsafe"] = 0.01
    assert apply_filters(filters, {**fields, SOURCE_STORE: source_fields(row)}) is None
    # a row of a source without that column: null, not a crash and not a pass
    assert apply_filters(filters, {**fields, SOURCE_STORE: source_fields({"key": "k"})}) == \
        "filtered:source.AESTHETIC_SCORE=null"
