"""The build-unit facade: inputs checked up front, reasons in order (duplicate, filter, NSFW), tables read per part."""

from __future__ import annotations

import pytest

from onegen.core.errors import PathError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.hygiene.build_hygiene import (
    HygieneConfig,
    check_hygiene_inputs,
    faceid_exclusions,
    hygiene_stores,
    row_skip_reason,
    unit_duplicates,
)
from onegen.pipelines.hygiene.filters import FilterError, parse_filters
from onegen.pipelines.jobs.dedup import DedupPart, write_dedup
from onegen.pipelines.samples.faceid import FaceidConfig, faceid_samples


def _score(value, status="ok"):
    return {"status": status, "score": value}


def _root(tmp_path, stores=("aesthetic", "nsfw")):
    for name in stores:
        (tmp_path / "annotations" / f"{name}@1").mkdir(parents=True)
    return str(tmp_path)


def test_inputs_are_checked_before_any_unit(tmp_path):
    root = _root(tmp_path)
    config = HygieneConfig(filters=("aesthetic>=5", "clip_score>=0.2"), id_nsfw_threshold=0.5)
    assert hygiene_stores(config) == ["aesthetic", "clip", "nsfw"]
    with pytest.raises(PathError, match="--annotators clip"):
        check_hygiene_inputs(root, config)
    with pytest.raises(FilterError):
        check_hygiene_inputs(root, HygieneConfig(filters=("aesthetic=>5",)))
    with pytest.raises(PathError, match="no finished dedup table"):
        check_hygiene_inputs(root, HygieneConfig(filters=("aesthetic>=5",), dedup="phash"))
    check_hygiene_inputs(root, HygieneConfig(filters=("aesthetic>=5", "nsfw<0.5")))


def test_unit_reads_its_own_part_and_reasons_come_in_order(tmp_path):
    root = _root(tmp_path)
    parts = [DedupPart(0, "laion", f"{root}/catalog/laion/part-00000.parquet", ""),
             DedupPart(1, "coyo", f"{root}/catalog/coyo/part-00000.parquet", "")]
    table = DatasetLayout(root).phash_dedup(4)
    write_dedup(table, parts, ["sha0", "sha1"], {0: ("laion-a", "coyo-a"), 1: ("laion-b", "coyo-b")}, {})
    config = HygieneConfig(filters=("aesthetic>=5",), dedup="phash")
    check_hygiene_inputs(root, config)
    duplicates = unit_duplicates(root, config, parts[0].catalog_path, "sha0")
    assert duplicates == {"laion-a": "coyo-a", "laion-b": "coyo-b"}
    assert unit_duplicates(root, config, parts[1].catalog_path, "sha1") == {}
    assert unit_duplicates(root, HygieneConfig(), parts[0].catalog_path) == {}
    filters = parse_filters(config.filters)
    assert row_skip_reason("laion-a", {"aesthetic": _score(3.0)}, duplicates, filters) == "duplicate_of:coyo-a"
    assert row_skip_reason("laion-c", {"aesthetic": _score(3.0)}, duplicates, filters) == "filtered:aesthetic=3<5"
    assert row_skip_reason("laion-d", {"aesthetic": _score(6.0)}, duplicates, filters) is None
    assert files.exists(f"{root}/dedup/phash-k4/_SUCCESS.json")


def test_the_dedup_method_names_its_table(tmp_path):
    from onegen.pipelines.hygiene import dedup_tables
    from onegen.pipelines.hygiene.build_hygiene import dedup_table
    from onegen.pipelines.hygiene.dedup_groups import DedupConfig
    from onegen.pipelines.hygiene.semdedup import SemDedupConfig
    from onegen.pipelines.jobs.dedup_run import run_dedup

    root = str(tmp_path)
    assert dedup_table(root, HygieneConfig(dedup="phash", max_distance=6)) == f"{root}/dedup/phash-k6"
    assert dedup_table(root, HygieneConfig(dedup="semantic", semantic_threshold=0.9)) == f"{root}/dedup/semantic-t0.9"
    assert dedup_table(root, HygieneConfig()) is None
    with pytest.raises(ValueError, match="expected one of '', 'phash', 'semantic'"):
        HygieneConfig(dedup="minhash")  # the settings type refuses it before any table is named
    with pytest.raises(ValueError, match="dedup must be one of"):
        dedup_tables.dedup_table(root, "minhash", 4, 0.95)
    with pytest.raises(ValueError, match="needs a dedup method"):
        run_dedup(root, "", DedupConfig(), SemDedupConfig(), None)


def test_faceid_exclusions_combine_duplicates_filters_and_nsfw_before_the_rule():
    keys = [f"ids-{i}" for i in range(6)]
    annotations = [{"aesthetic": _score(a), "nsfw": _score(n)} for a, n in
                   [(6, 0.1), (6, 0.1), (4, 0.1), (6, 0.8), (6, 0.2), (6, 0.3)]]
    config = HygieneConfig(filters=("aesthetic>=5",), id_nsfw_threshold=0.5)
    excluded = faceid_exclusions(keys, annotations, {"ids-1": "ids-0"}, parse_filters(config.filters), config)
    assert excluded == [None, "duplicate_of:ids-0", "filtered:aesthetic=4<5", "filtered:nsfw=0.8>=0.5", None, None]
    rows = [{"key": k, "source": "ids", "image": b"JPEG", "image_format": "jpg", "width": 8, "height": 8} for k in keys]
    results = dict(faceid_samples(rows, [{"status": "ok"}] * 6, [None] * 6, list(range(6)), "faces@1",
                                  FaceidConfig(), excluded))
    assert [results[i] for i in (0, 4, 5)] == ["subject_too_small:3 usable"] * 3  # 6 photos, 3 left: too few
    no_nsfw = faceid_exclusions(keys, annotations, {}, (), HygieneConfig())
    assert no_nsfw == [None] * 6
