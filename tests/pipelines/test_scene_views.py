"""`onegen ingest --views-as-photos` (pipelines/sources/scene_views.py): a CO3D source's views become photos
with their cameras and CO3D's own depth, which the `depth_gt` annotator turns into depth2image conditions and
the build into samples: ground-truth depth from a scene source, end to end through the CLI."""

from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onegen.annotators.gt_depth import read_co3d_depth
from onegen.manifests.query import read_manifests
from onegen.pipelines.cli.main import main
from onegen.pipelines.jobs.ingest import make_key
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.scene_views import view_photo_rows, view_uri
from tests.pipelines.test_kill_resume import RAY
from tests.pipelines.test_source_co3d import H, W, write_co3d


def test_a_view_that_fails_the_checks_is_its_own_reject(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(good, format="PNG")
    scene = {"source": "s", "uri": "file:///x/scene", "caption_original": "a scene", "view_images": [good.getvalue(), b"junk"],
             "meta": json.dumps({"cameras": [{"c2w": np.eye(4).tolist()}, {"c2w": np.eye(4).tolist()}],
                                 "view_depths": [{"uri": "d0", "encoding": "co3d_depth_png16"}, None]})}
    first, second = view_photo_rows(scene, ImageLimits(min_side=32), make_key)
    assert first["uri"] == view_uri("file:///x/scene", 0) and first["kind"] == "image" and first["reject_reason"] is None
    assert json.loads(first["meta"])["depth"]["uri"] == "d0" and first["caption_original"] == "a scene"
    assert second["reject_reason"] and second["uri"].endswith("#view0001")


@pytest.mark.timeout(600)
def test_co3d_views_become_depth2image_samples_from_its_own_depth(tmp_path, ray_local, capsys):
    write_co3d(fsspec.filesystem("file", auto_mkdir=True), str(tmp_path / "co3d"))
    root, shards = tmp_path / "d", tmp_path / "s"
    flags = ["--min-viewpoint-quality", "0.5", "--min-side", "32", *RAY]
    assert main(["ingest", str(tmp_path / "co3d"), "--out", str(root), "--name", "co3d_views", "--views-as-photos",
                 *flags]) == 0
    catalog = pq.read_table(root / "catalog" / "co3d_views").to_pylist()
    assert len(catalog) == 4 and {r["kind"] for r in catalog} == {"image"}  # seq_a's four frames
    assert main(["annotate", str(root), "--annotators", "depth_gt", *RAY]) == 0
    assert main(["build", str(root), "--out", str(shards), "--tasks", "depth2image", *RAY]) == 0
    samples = read_manifests(str(shards)).to_pylist()
    assert len(samples) == 4 and all(s["annotators"][0] == "depth_gt@1" for s in samples)
    # the condition is the inverse of CO3D's own depth: brighter where the truth is nearer
    stored = {r["key"]: r for r in pq.read_table(root / "annotations" / "depth_gt@1").to_pylist()}
    for row in catalog:
        meta = json.loads(row["meta"])
        entry = meta["depth"]
        assert entry["encoding"] == "co3d_depth_png16" and meta["camera"]["width"] == W
        depth, valid = read_co3d_depth(entry["uri"], entry["scale_adjustment"], entry["mask_uri"])
        condition = np.asarray(Image.open(io.BytesIO(stored[row["key"]]["png16"])), dtype=np.float64)
        assert condition.shape == (H, W) and stored[row["key"]]["provenance"].startswith("co3d_depth_png16:")
        near, far = np.unravel_index(np.argmin(np.where(valid, depth, np.inf)), depth.shape), \
            np.unravel_index(np.argmax(np.where(valid, depth, -np.inf)), depth.shape)
        assert condition[near] > condition[far] and not condition[~valid].any()
        assert np.corrcoef(condition[valid], 1.0 / depth[valid])[0, 1] > 0.999
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "co3d" / "toys" / "seq_a" / "images"), "--out", str(tmp_path / "x"),
                 "--views-as-photos", *RAY]) == 2  # a photo folder has no scenes: one line, exit 2
    assert "--views-as-photos" in capsys.readouterr().err
