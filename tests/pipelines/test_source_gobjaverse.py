"""G-Objaverse as published (modelscope/richdreamer dataset/gobjaverse): `<dict>/<instance>/campos_512_v4/
NNNNN/NNNNN.{png,json}` (+ `_nd.exr`), or without the campos_512_v4 level as download_gobjaverse_280k.py
saves it, beside `gobjaverse_280k_index_to_objaverse.json`; written here in that layout. Cap3D's
header-less `uid,caption` CSV and LGM's 80K id list (ashawkey/objaverse_filter) in their published shapes."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onegen.annotators.gt_depth import GtDepthAnnotator, read_gobjaverse_depth
from onegen.core.exr import write_exr
from onegen.core.image_codec import decode_png16
from onegen.pipelines.jobs.ingest import ingest_rows
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import detect_kind, list_items, read_scene
from onegen.pipelines.sources.names import SourceError
from onegen.pipelines.sources.settings import SourceSpec

UIDS = {"0/10005": "8476c4170df24cf5bbe6967222d1a42d", "0/10007": "b1e52e9e8b3b4d6f9bd4e3b1b2c1a0ff",
        "1/20001": "0123456789abcdef0123456789abcdef"}
X_FOV = 0.6911112070083618  # 2 atan(512 / 1422.222): the renders' field of view
VIEWS = 4
RADIUS = 1.6


def look_at_origin(i: int) -> np.ndarray:
    """An OpenCV c2w (x right, y down, z forward) on an orbit, looking at the world origin."""
    angle, height = 2 * np.pi * i / VIEWS, 0.3 * (i % 2)
    centre = np.array([RADIUS * np.sin(angle), height, RADIUS * np.cos(angle)])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = centre
    return c2w


def planar_depth(size: int) -> np.ndarray:
    depth = np.zeros((size, size), np.float32)  # background: 0
    depth[size // 4:3 * size // 4, size // 4:3 * size // 4] = np.linspace(1.2, 1.9, size // 2, dtype=np.float32)
    depth[0, :4] = 0.5  # nearer than the object's bounding sphere allows: background
    return depth


def write_object(folder, size: int = 32, campos: bool = True, fov: bool = True, depth: bool = True,
                 views: int = VIEWS) -> None:
    renders = folder / "campos_512_v4" if campos else folder
    renders.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(views):
        view = renders / f"{i:05d}"
        view.mkdir()
        Image.fromarray(rng.integers(0, 255, (size, size, 4), dtype=np.uint8), "RGBA").save(view / f"{i:05d}.png")
        c2w = look_at_origin(i)
        record = {"origin": c2w[:3, 3].tolist(), "x": c2w[:3, 0].tolist(), "y": c2w[:3, 1].tolist(),
                  "z": c2w[:3, 2].tolist(), "max_depth": 5.0}
        if fov:
            record.update(x_fov=X_FOV, y_fov=X_FOV)
        (view / f"{i:05d}.json").write_text(json.dumps(record))
        if depth:
            normal = rng.standard_normal((3, size, size)).astype(np.float32)
            (view / f"{i:05d}_nd.exr").write_bytes(write_exr(
                {"B": normal[0], "G": normal[1], "R": normal[2], "A": planar_depth(size)}))


def write_gobjaverse(root):
    """Three objects (one as the download script saves them, without campos_512_v4) and the uid mapping."""
    write_object(root / "0" / "10005")
    write_object(root / "0" / "10007", size=64, depth=False)
    write_object(root / "1" / "20001", size=48, campos=False, fov=False)  # as download_gobjaverse_280k.py saves it
    (root / "gobjaverse_280k_index_to_objaverse.json").write_text(json.dumps(
        {gid: f"000-{n:03d}/{uid}.glb" for n, (gid, uid) in enumerate(UIDS.items())}))
    return root


def write_bad_object(root):
    """An object with a view missing and a malformed view json: one bad_scene reject."""
    write_object(root / "2" / "30001")
    shutil.rmtree(root / "2" / "30001" / "campos_512_v4" / "00003")
    (root / "2" / "30001" / "campos_512_v4" / "00001" / "00001.json").write_text("[]")


@pytest.fixture
def gobjaverse(tmp_path):
    return write_gobjaverse(tmp_path / "gobjaverse_280k")


def test_detected_one_scene_per_object_named_by_objaverse_uid(gobjaverse):
    spec = SourceSpec(str(gobjaverse))
    assert detect_kind(spec) == "gobjaverse"
    items = list_items(spec)
    assert [i["caption_key"] for i in items] == list(UIDS.values())
    assert [i["gobjaverse_id"] for i in items] == list(UIDS)
    # a dictionary folder or one object is detected as well; the mapping is found in the folder above
    assert [i["caption_key"] for i in list_items(SourceSpec(str(gobjaverse / "0")))] == list(UIDS.values())[:2]
    one = SourceSpec(str(gobjaverse / "1" / "20001"))
    assert detect_kind(one) == "gobjaverse" and [i["caption_key"] for i in list_items(one)] == [UIDS["1/20001"]]
    (gobjaverse / "gobjaverse_280k_index_to_objaverse.json").unlink()  # no mapping: the G-Objaverse id
    assert [i["caption_key"] for i in list_items(spec)] == list(UIDS)


def test_cameras_round_trip_and_intrinsics_follow_the_picture(gobjaverse):
    spec = SourceSpec(str(gobjaverse), max_views=3)
    rows = {item["gobjaverse_id"]: read_scene(spec, item) for item in list_items(spec)}
    for gid, size in (("0/10005", 32), ("0/10007", 64), ("1/20001", 48)):
        meta = json.loads(rows[gid]["meta"])
        assert meta["convention"] == "opencv_c2w" and meta["gobjaverse_id"] == gid
        assert meta["objaverse_uid"] == UIDS[gid]
        assert [u.rsplit("/", 1)[1] for u in rows[gid]["view_uris"]] == ["00000.png", "00002.png", "00003.png"]
        for camera, index in zip(meta["cameras"], [0, 2, 3], strict=True):
            np.testing.assert_allclose(camera["c2w"], look_at_origin(index), atol=1e-12)
            # OpenCV: the object's centre (the world origin) lies in front, on the principal point
            w2c = np.linalg.inv(camera["c2w"])
            projected = np.asarray(camera["K"]) @ w2c[:3, 3]
            assert projected[2] > 0
            np.testing.assert_allclose(projected[:2] / projected[2], [size / 2, size / 2], atol=1e-9)
            assert (camera["width"], camera["height"]) == (size, size)
        focal = meta["cameras"][0]["K"][0][0]
        if gid == "1/20001":  # no fov in its json: depth_warp_example.py's 1422.222 px at 1024
            assert meta["intrinsics_from"].startswith("depth_warp_example")
            assert focal == pytest.approx(1422.222 / 1024 * size)
        else:  # the json's own x_fov, in pixels of the picture read (32 or 64 px)
            assert meta["intrinsics_from"] == "json x_fov/y_fov"
            assert focal == pytest.approx(0.5 * size / np.tan(0.5 * X_FOV))
            assert focal == pytest.approx(1422.222 / 1024 * size, rel=1e-6)  # the two sources agree


def test_render_depth_recorded_per_view_and_decoded(gobjaverse):
    spec = SourceSpec(str(gobjaverse))
    rows = {item["gobjaverse_id"]: read_scene(spec, item) for item in list_items(spec)}
    assert json.loads(rows["0/10007"]["meta"])["view_depths"] == [None] * VIEWS  # no _nd.exr: recorded as none
    entries = json.loads(rows["0/10005"]["meta"])["view_depths"]
    assert [e["uri"].rsplit("/", 1)[1] for e in entries] == [f"{i:05d}_nd.exr" for i in range(VIEWS)]
    assert entries[1]["encoding"] == "gobjaverse_nd_exr"
    assert entries[1]["camera_distance"] == pytest.approx(np.linalg.norm(look_at_origin(1)[:3, 3]))
    depth = read_gobjaverse_depth(entries[1]["uri"], entries[1]["camera_distance"])
    known = planar_depth(32)
    # depths nearer than |origin| - 0.867 are background (as depth_warp_example.py's read_dnormal)
    near = entries[1]["camera_distance"] - 0.867
    np.testing.assert_array_equal(depth, np.where(known < near, 0.0, known.astype(np.float64)))
    assert depth.max() == pytest.approx(1.9, rel=1e-6) and (depth == 0).sum() > (known == 0).sum()
    # a photo row naming this encoding gets its ground-truth depth condition
    row = {"key": "k", "width": 32, "height": 32, "meta": {"depth": entries[1]}}
    out = GtDepthAnnotator().annotate_one(row)
    assert out["invalid_pixels"] == int((depth == 0).sum())
    assert out["depth_max"] == pytest.approx(1 / depth[depth > 0].min(), rel=1e-6)
    png = decode_png16(out["png16"])
    assert png[0, 0] == 0 and png[depth > 0].min() == 0 and png.max() == 65535  # near white, background black


def test_cap3d_captions_join_by_uid(gobjaverse, tmp_path, capsys):
    cap3d = tmp_path / "Cap3D_automated_Objaverse_full.csv"
    cap3d.write_text(f'{UIDS["0/10005"]},"A wooden chair, with four legs."\n{UIDS["1/20001"]},a red sports car\n')
    spec = SourceSpec(str(gobjaverse), captions=str(cap3d), caption_key="0", caption_text="1")
    items = list_items(spec)
    assert [i["caption"] for i in items] == ["A wooden chair, with four legs.", None, "a red sports car"]
    assert f"1 keys without a caption (e.g. {UIDS['0/10007']})" in capsys.readouterr().err  # counted, no error
    rows = ingest_rows(spec, ImageLimits(min_side=8), items)
    assert [r["reject_reason"] for r in rows] == [None, None, None]
    assert rows[2]["caption_original"] == "a red sports car"
    assert json.loads(rows[0]["meta"])["caption_key"] == UIDS["0/10005"]


def test_ids_keep_lgm_s_subset(gobjaverse, tmp_path):
    lgm = tmp_path / "kiuisobj_v1_merged_80K.csv"  # header-less `<000-xxx>,<uid>` rows
    lgm.write_text(f"000-001,{UIDS['0/10005']}\n000-097,ffffffffffffffffffffffffffffffff\n")
    assert [i["gobjaverse_id"] for i in list_items(SourceSpec(str(gobjaverse), ids=str(lgm)))] == ["0/10005"]
    merged = tmp_path / "gobj_merged.json"  # a JSON list of G-Objaverse ids
    merged.write_text(json.dumps(["1/20001", "0/10007", "5/5"]))
    assert [i["gobjaverse_id"] for i in list_items(SourceSpec(str(gobjaverse), ids=str(merged)))] == ["0/10007", "1/20001"]
    with pytest.raises(SourceError, match="--ids selects objects of a gobjaverse source"):
        list_items(SourceSpec(str(tmp_path / "gobjaverse_280k" / "0" / "10005" / "campos_512_v4"), kind="folder",
                              ids=str(merged)))


def test_bad_objects_are_rejected_with_their_reason_the_rest_ingested(gobjaverse):
    write_object(gobjaverse / "2" / "30001")
    (gobjaverse / "2" / "30001" / "campos_512_v4" / "00002" / "00002.png").unlink()  # a missing view picture
    write_object(gobjaverse / "2" / "30002")
    (gobjaverse / "2" / "30002" / "campos_512_v4" / "00001" / "00001.json").write_text('{"origin": [0, 0,')
    (gobjaverse / "2" / "30003" / "campos_512_v4").mkdir(parents=True)  # an object with no views
    spec = SourceSpec(str(gobjaverse), kind="gobjaverse")
    rows = ingest_rows(spec, ImageLimits(min_side=8), list_items(spec))
    by_id = {r["uri"].rsplit("/", 2)[-2] + "/" + r["uri"].rsplit("/", 1)[-1]: r for r in rows}
    assert [by_id[g]["reject_reason"] for g in UIDS] == [None, None, None]
    assert {g: by_id[g]["reject_reason"] for g in ("2/30001", "2/30002", "2/30003")} == dict.fromkeys(
        ("2/30001", "2/30002", "2/30003"), "bad_scene")
    assert "00002.png" in by_id["2/30001"]["reject_error"]
    assert by_id["2/30002"]["reject_error"].startswith("JSONDecodeError")
    assert "no view folders" in by_id["2/30003"]["reject_error"]
    assert all(len(by_id[g]["view_images"]) == VIEWS for g in UIDS)



@pytest.mark.timeout(600)
def test_an_ingest_through_the_cli_keeps_the_renders_and_rejects_a_bad_object(gobjaverse, tmp_path, ray_local):
    """Through `onegen ingest` (a kill and rerun of it: tests/pipelines/test_published_kill_resume.py)."""
    from onegen.pipelines.cli.main import main
    from tests.pipelines.test_kill_resume import RAY

    write_bad_object(gobjaverse)
    clean = tmp_path / "clean"
    assert main(["ingest", str(gobjaverse), "--out", str(clean), "--rows-per-part", "1", "--min-side", "8",
                 "--max-views", "3", *RAY]) == 0
    catalog = pq.read_table(clean / "catalog" / "gobjaverse_280k")
    assert catalog.num_rows == 3 and len(set(catalog.column("key").to_pylist())) == 3
    assert [len(v) for v in catalog.column("view_images").to_pylist()] == [3, 3, 3]
    assert pq.read_table(clean / "rejects" / "gobjaverse_280k").column("reason").to_pylist() == ["bad_scene"]
    first = catalog.column("view_images").to_pylist()[0][0]
    assert Image.open(io.BytesIO(first)).mode == "RGBA"  # the render's own bytes, alpha kept
