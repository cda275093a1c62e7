"""CO3D v2 as published (pipelines/sources/co3d.py): a dataset root written here in the layout of
facebookresearch/co3d's README ("Dataset format"): `<category>/frame_annotations.jgz`,
`sequence_annotations.jgz`, `<category>/<sequence>/{images,depths,depth_masks,masks}`, PyTorch3D cameras
and float16-in-16-bit-PNG depth, read through fsspec (a counting in-memory filesystem, and file:// URLs)."""

from __future__ import annotations

import collections
import gzip
import io
import json
import posixpath
import uuid

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image

from onegen.annotators.gt_depth import GtDepthAnnotator, read_co3d_depth
from onegen.core.image_codec import encode_jpeg
from onegen.pipelines.demo.synthetic_scene import SceneConfig, make_scene, render
from onegen.pipelines.jobs.ingest import ingest_rows
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import detect_kind, list_items
from onegen.pipelines.sources.listing import cut_parts
from onegen.pipelines.sources.settings import SourceSpec

W, H, SCALE = 96, 64, 0.25  # SCALE: a frame's depth.scale_adjustment (png = depth / SCALE)
LIMITS = ImageLimits(min_side=32)


class CountingFS(MemoryFileSystem):
    """memory:// under its own protocol, counting the files opened for reading (by path)."""

    protocol = ("countmem",)
    opened: collections.Counter = collections.Counter()

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).replace("countmem://", "memory://", 1))

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            CountingFS.opened[self._strip_protocol(path)] += 1
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("countmem", CountingFS, clobber=True)


def pytorch3d_viewpoint(c2w: np.ndarray, k: np.ndarray) -> dict:
    """The CO3D (PyTorch3D) camera of an OpenCV one: X_view = X_world @ R + T, x left, y up, NDC in
    "ndc_norm_image_bounds" (the image spans [-1, 1] on both axes)."""
    flip = np.diag([-1.0, -1.0, 1.0])
    r_cv, t_cv = c2w[:3, :3].T, -c2w[:3, :3].T @ c2w[:3, 3]
    half = np.array([W / 2, H / 2])
    return {"R": (flip @ r_cv).T.tolist(), "T": (flip @ t_cv).tolist(),
            "focal_length": (np.array([k[0, 0], k[1, 1]]) / half).tolist(),
            "principal_point": ((half - k[:2, 2]) / half).tolist(), "intrinsics_format": "ndc_norm_image_bounds"}


def depth_png(depth: np.ndarray, scale: float) -> bytes:
    """CO3D's encoding: the bits of float16(depth / scale) in a 16-bit PNG (co3d/challenge/io.py store_depth)."""
    bits = (depth / scale).astype(np.float16).view(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, format="PNG")
    return buffer.getvalue()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jgz(entries) -> bytes:
    return gzip.compress(json.dumps(entries).encode())


def write_co3d(fs: fsspec.AbstractFileSystem, root: str) -> dict:
    """A dataset root: category `toys` (seq_a good, 4 frames; seq_b low quality; seq_c a frame image missing;
    seq_d listed without frames), `broken` (frame_annotations.jgz truncated), `plants` (sequence_annotations.jgz
    not gzip). Returns the ground truth of seq_a."""
    scene = make_scene(SceneConfig(seed=2, n_views=4, width=W, height=H))
    images, depth, ids = render(scene, W, H)
    frames, put = [], lambda path, data: fs.pipe_file(posixpath.join(root, path), data)
    for sequence, numbers in (("seq_a", (3, 1, 0, 2)), ("seq_b", (0, 1)), ("seq_c", (0, 1))):  # seq_a out of order
        for i in numbers:
            folder = f"toys/{sequence}"
            frame = {"sequence_name": sequence, "frame_number": i, "frame_timestamp": i / 30,
                     "image": {"path": f"{folder}/images/frame{i:06d}.jpg", "size": [H, W]},
                     "depth": {"path": f"{folder}/depths/frame{i:06d}.jpg.geometric.png", "scale_adjustment": SCALE,
                               "mask_path": f"{folder}/depth_masks/frame{i:06d}.png"},
                     "mask": {"path": f"{folder}/masks/frame{i:06d}.png", "mass": 100.0},
                     "viewpoint": pytorch3d_viewpoint(scene.c2w[i], scene.intrinsics)}
            frames.append(frame)
            if not (sequence == "seq_c" and i == 1):  # seq_c's second picture is missing
                put(frame["image"]["path"], encode_jpeg(images[i]))
            put(frame["depth"]["path"], depth_png(depth[i], SCALE))
            put(frame["depth"]["mask_path"], png(((depth[i] > 0) & (np.arange(W) >= 8)).astype(np.uint8) * 255))
            put(frame["mask"]["path"], png((ids[i] > 0).astype(np.uint8) * 255))
    put("toys/frame_annotations.jgz", jgz(frames))
    put("toys/sequence_annotations.jgz", jgz([
        {"sequence_name": name, "category": "toys", "video": {"path": f"toys/{name}/video.mp4", "length": 2.0},
         "viewpoint_quality_score": score} for name, score in (("seq_a", 2.0), ("seq_b", 0.1), ("seq_c", 1.5), ("seq_d", 1.0))]))
    put("toys/set_lists/set_lists_fewview_dev.json", json.dumps({"train": [["seq_a", 0, "x"]], "val": [], "test": []}).encode())
    put("broken/frame_annotations.jgz", jgz(frames)[:40])
    put("broken/sequence_annotations.jgz", jgz([{"sequence_name": n, "category": "broken", "viewpoint_quality_score": 1.0}
                                                for n in ("x1", "x2")]))
    put("plants/frame_annotations.jgz", jgz([]))
    put("plants/sequence_annotations.jgz", b"not gzip, not json")
    return {"c2w": scene.c2w, "K": scene.intrinsics, "depth": depth}


@pytest.fixture
def counted():
    """A CO3D root on the counting filesystem (a fresh folder per test), the counter reset."""
    root = f"/co3d-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("countmem")
    truth = write_co3d(fs, root)
    CountingFS.opened.clear()
    yield f"countmem://{root}", truth
    fs.rm(root, recursive=True)


def opened(name: str) -> int:
    return sum(n for path, n in CountingFS.opened.items() if path.endswith(name))


def test_detected_and_listed_without_reading_frames(counted):
    url, _ = counted
    spec = SourceSpec(url)
    assert detect_kind(spec) == "co3d"
    items = list_items(spec)
    assert [(i["category"], i["sequence"]) for i in items] == [
        ("broken", "x1"), ("broken", "x2"), ("plants", None),
        ("toys", "seq_a"), ("toys", "seq_b"), ("toys", "seq_c"), ("toys", "seq_d")]
    assert items[3]["viewpoint_quality_score"] == 2.0 and items[3]["uri"].endswith("toys/frame_annotations.jgz#seq_a")
    assert "sequence_annotations.jgz" in items[2]["item_error"]
    assert opened("frame_annotations.jgz") == 0  # the driver reads only the small sequence annotations
    assert opened("sequence_annotations.jgz") == 3
    # `--kind scenes` still finds the categories, with the same items
    assert [i["uri"] for i in list_items(SourceSpec(url, kind="scenes"))] == [i["uri"] for i in items]


def test_rows_reasons_and_cameras(counted):
    url, truth = counted
    spec = SourceSpec(url, min_viewpoint_quality=0.5)
    items = list_items(spec)
    rows = {r["uri"].removeprefix(f"{url}/"): r for r in ingest_rows(spec, LIMITS, items)}
    reasons = {key: r["reject_reason"] for key, r in rows.items()}
    frames = "frame_annotations.jgz#"
    assert reasons == {f"broken/{frames}x1": "bad_annotations", f"broken/{frames}x2": "bad_annotations",
                       "plants/sequence_annotations.jgz": "bad_annotations",
                       f"toys/{frames}seq_a": None, f"toys/{frames}seq_b": "low_viewpoint_quality",
                       f"toys/{frames}seq_c": "bad_scene", f"toys/{frames}seq_d": "no_frames"}
    assert "frame000001.jpg" in rows[f"toys/{frames}seq_c"]["reject_error"]
    assert "0.1 < 0.5" in rows[f"toys/{frames}seq_b"]["reject_error"]
    good = rows[f"toys/{frames}seq_a"]
    meta = json.loads(good["meta"])
    assert good["kind"] == "scene" and len(good["view_images"]) == 4 and meta["frame_numbers"] == [0, 1, 2, 3]
    c2w = np.array([c["c2w"] for c in meta["cameras"]])
    np.testing.assert_allclose(c2w, truth["c2w"], atol=1e-9)
    np.testing.assert_allclose(meta["cameras"][1]["K"], truth["K"], atol=1e-9)
    assert good["view_uris"][2] == f"{url}/toys/seq_a/images/frame000002.jpg"
    assert meta["view_depths"][2] == {"uri": f"{url}/toys/seq_a/depths/frame000002.jpg.geometric.png",
                                 "mask_uri": f"{url}/toys/seq_a/depth_masks/frame000002.png",
                                 "scale_adjustment": SCALE, "encoding": "co3d_depth_png16"}
    assert meta["foreground_masks"][0] == f"{url}/toys/seq_a/masks/frame000000.png"
    assert meta["viewpoint_quality_score"] == 2.0 and meta["category"] == "toys"
    # without a minimum, the low-quality sequence is a scene like any other
    kept = ingest_rows(SourceSpec(url), LIMITS, [i for i in items if i.get("sequence") == "seq_b"])
    assert kept[0]["reject_reason"] is None and len(kept[0]["view_images"]) == 2


def test_frame_annotations_parsed_once_per_part(counted):
    url, _ = counted
    spec = SourceSpec(url, min_viewpoint_quality=0.5)
    items = list_items(spec)
    ingest_rows(spec, LIMITS, items)  # one part: 3 toys sequences read, 2 broken ones rejected
    assert opened("/toys/frame_annotations.jgz") == 1 and opened("/broken/frame_annotations.jgz") == 1
    CountingFS.opened.clear()
    parts = cut_parts(items, 2)  # [x1, x2] [plants, seq_a] [seq_b, seq_c] [seq_d]
    for part in parts:
        ingest_rows(spec, LIMITS, part)
    # toys is parsed by each part holding one of its sequences that passed the filter: parts 2, 3, 4
    assert opened("/toys/frame_annotations.jgz") == 3 and opened("/broken/frame_annotations.jgz") == 1
    assert opened("/toys/seq_a/images/frame000000.jpg") == 1  # each picture read once (size + bytes)


def test_co3d_depth_encoding_round_trip(tmp_path):
    """A known depth through CO3D's float16-bits PNG: 1.5 at scale 2 is float16 0.75, bits 0x3A00."""
    depth = np.full((6, 8), 1.5)
    depth[0, 0] = 0.0  # no surface
    depth[1, 1] = np.inf  # non-finite: 0, invalid, as pytorch3d's load_depth does
    depth[2, 2] = 3.3  # not a float16: rounds to the nearest one
    (tmp_path / "d.png").write_bytes(depth_png(depth, 2.0))
    mask = np.ones((6, 8), np.uint8)
    mask[:, 7] = 0
    (tmp_path / "m.png").write_bytes(png(mask))
    with Image.open(tmp_path / "d.png") as image:
        assert np.asarray(image, dtype=np.uint16)[3, 3] == 0x3A00
    decoded, valid = read_co3d_depth(f"file://{tmp_path}/d.png", 2.0, f"file://{tmp_path}/m.png")
    assert decoded[3, 3] == 1.5 and decoded[2, 2] == float(np.float16(3.3 / 2.0)) * 2.0 != 3.3
    assert not valid[0, 0] and not valid[1, 1] and decoded[1, 1] == 0.0
    assert not valid[:, 7].any() and (decoded[:, 7] == 0).all() and valid[3, :7].all()
    assert int(valid.sum()) == 6 * 7 - 2


def test_gt_depth_reads_a_co3d_view(counted):
    """A view's meta.depths entry through the depth_gt annotator: inverse z-depth of the rendered truth."""
    url, truth = counted
    items = [i for i in list_items(SourceSpec(url)) if i.get("sequence") == "seq_a"]
    (row,) = ingest_rows(SourceSpec(url), LIMITS, items)
    depth_entry = json.loads(row["meta"])["view_depths"][1]
    decoded, valid = read_co3d_depth(depth_entry["uri"], depth_entry["scale_adjustment"], depth_entry["mask_uri"])
    expected = (truth["depth"][1] / SCALE).astype(np.float16).astype(np.float64) * SCALE
    np.testing.assert_array_equal(decoded[valid], expected[valid])
    assert not valid[:, :8].any() and valid.sum() == ((truth["depth"][1] > 0)[:, 8:]).sum()
    view = {"key": "k", "width": W, "height": H, "meta": {"depth": depth_entry}}
    out = GtDepthAnnotator().annotate_one(view)
    assert out["invalid_pixels"] == H * W - int(valid.sum()) and out["provenance"].startswith("co3d_depth_png16:")
    assert out["depth_max"] == pytest.approx(1.0 / expected[valid].min())


@pytest.mark.timeout(600)
def test_a_co3d_ingest_through_file_urls_and_the_cli_counts_its_reasons(tmp_path, ray_local):
    """Through file:// URLs and `onegen ingest` (a kill and rerun of it: test_published_kill_resume.py)."""
    from onegen.manifests.query import catalog_stats
    from onegen.pipelines.cli.main import main
    from tests.pipelines.test_kill_resume import RAY

    write_co3d(fsspec.filesystem("file", auto_mkdir=True), str(tmp_path / "co3d"))
    clean = tmp_path / "clean"
    flags = ["--rows-per-part", "2", "--min-viewpoint-quality", "0.5", "--min-side", "32"]
    assert main(["ingest", f"file://{tmp_path}/co3d", "--out", str(clean), *flags, *RAY]) == 0
    assert catalog_stats(str(clean))["rejects_per_reason"] == {"bad_annotations": 3, "bad_scene": 1, "low_viewpoint_quality": 1,
                                                               "no_frames": 1}
    assert pq.read_table(clean / "catalog").num_rows == 1
