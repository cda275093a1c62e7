"""Caption tables joined by key at ingest: Cap3D's header-less `uid,caption` CSV onto Objaverse render
scenes (one folder per uid), and named-column tables onto photos by file stem."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene
from onegen.pipelines.jobs.ingest import ingest_rows
from onegen.pipelines.sources.caption_tables import CaptionJoin, load_caption_table
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import list_items
from onegen.pipelines.sources.names import SourceError
from onegen.pipelines.sources.settings import SourceSpec
from tests.pipelines.test_source_helpers import jpeg

UIDS = ["8476c4170df24cf5bbe6967222d1a42d", "b1e52e9e8b3b4d6f9bd4e3b1b2c1a0ff", "ffffffffffffffffffffffffffffffff"]


@pytest.fixture
def renders(tmp_path):
    for seed, uid in enumerate(UIDS):
        write_scene(tmp_path / "renders" / uid, SceneConfig(seed=seed, n_views=3, width=32, height=32))
    cap3d = tmp_path / "Cap3D_automated_Objaverse_full.csv"
    cap3d.write_text(f'{UIDS[0]},"A wooden chair, with four legs."\n{UIDS[1]},a red sports car\n'
                     "0123456789abcdef0123456789abcdef,an object not rendered here\n")
    return tmp_path / "renders", cap3d


def test_cap3d_headerless_csv_joins_onto_scenes(renders, capsys):
    folder, cap3d = renders
    spec = SourceSpec(str(folder), kind="scenes", captions=str(cap3d), caption_key="0", caption_text="1")
    items = list_items(spec)
    assert [i["caption"] for i in items] == ["A wooden chair, with four legs.", "a red sports car", None]
    assert [i["meta"]["caption_joined"] for i in items] == [True, True, False]
    assert f"1 keys without a caption (e.g. {UIDS[2]})" in capsys.readouterr().err  # counted, reported, no error
    rows = ingest_rows(spec, ImageLimits(min_side=8), items)
    assert rows[0]["caption_original"] == "A wooden chair, with four legs." and rows[2]["reject_reason"] is None
    assert json.loads(rows[0]["meta"])["caption_key"] == UIDS[0]


def test_named_columns_join_photos_by_stem(tmp_path):
    (tmp_path / "photos").mkdir()
    for name in ("a", "b"):
        (tmp_path / "photos" / f"{name}.jpg").write_bytes(jpeg(ord(name)))
    table = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"file_name": ["./sub/a.jpg", "c.jpg"], "text": ["an apple", "a cat"]}), table)
    spec = SourceSpec(str(tmp_path / "photos"), captions=str(table))
    rows = ingest_rows(spec, ImageLimits(min_side=8), list_items(spec))
    assert [r["caption_original"] for r in rows] == ["an apple", None]


def test_jsonl_table_and_a_bad_column(tmp_path):
    table = tmp_path / "captions.jsonl"
    table.write_text('{"id": "x1", "caption": "one"}\n{"id": "x2", "caption": "two"}\n')
    assert load_caption_table(str(table)) == {"x1": "one", "x2": "two"}
    join = CaptionJoin(str(table))
    assert join.apply({"uri": "file:///a/x2.png"})["caption"] == "two"
    with pytest.raises(SourceError, match="no caption column 'words'"):
        list_items(SourceSpec(str(tmp_path), kind="folder", captions=str(table), caption_text="words"))
