"""Multiview scenes and ID subjects through the real jobs: scenes -> cameras -> multiview samples with
interleaved rays; subjects -> faces -> faceid samples, small subjects dropped with a reason."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onegen.manifests.query import read_manifests, shard_stats
from onegen.manifests.verify import verify_shards
from onegen.pipelines.cli.main import main
from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene
from tests.conftest import photo

pytestmark = pytest.mark.timeout(600)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


def test_multiview_from_scenes(tmp_path, ray_local):
    scenes = tmp_path / "scenes"
    for seed in range(2):
        write_scene(scenes / f"scene{seed}", SceneConfig(seed=seed, n_views=6, width=96, height=64))
    (scenes / "scene0" / "caption.txt").write_text("toy spheres and boxes on a floor")
    broken = scenes / "scene9"
    broken.mkdir()
    (broken / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": [
        {"file_path": "images/missing.png", "transform_matrix": np.eye(4).tolist()}]}))
    root, shards = tmp_path / "d", tmp_path / "s"
    assert main(["ingest", str(scenes), "--out", str(root), "--kind", "scenes", *RAY]) == 0
    assert main(["annotate", str(root), "--annotators", "cameras", *RAY]) == 0
    assert main(["build", str(root), "--out", str(shards), "--tasks", "multiview", "--views", "2-4",
                 "--samples-per-scene", "3", "--view-resolution", "64", "--samples-per-shard", "4", *RAY]) == 0
    stats = shard_stats(str(shards))
    assert stats["rejects_per_reason"] == {"bad_scene": 1} and stats["catalog_rows"] == 2
    assert stats["samples_per_task"] == {"multiview": 6} and verify_shards(str(shards))[1] == []
    manifest = read_manifests(str(shards)).to_pylist()
    for sample in manifest:
        views = sample["n_views"] // 2
        assert 2 <= views <= 4 and sample["n_views"] % 2 == 0
        expected = [m for i in range(views) for m in (f"img{i}.jpg", f"ray{i}.npy")] + ["txt", "json"]
        assert sample["members"] == expected
        with tarfile.open(shards / sample["shard"]) as tar:  # the whole scene sample sits in one shard
            names = set(tar.getnames())
            ray = np.load(io.BytesIO(tar.extractfile(f"{sample['key']}.ray0.npy").read()))
        assert all(f"{sample['key']}.{m}" in names for m in sample["members"])
        assert ray.shape == (16, 8, 8) and ray.dtype == np.float16
    prompts = {s["prompt"] for s in manifest}
    assert prompts == {"[[multiview]] toy spheres and boxes on a floor", "[[multiview]]"}


def _subject_photos(folder: Path, pixels: np.ndarray, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):  # the same person in slightly different framings
        crop = pixels[i * 6 : 400 + i * 6, 40 + i * 4 : 440 + i * 4]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{i}.png")


def test_faceid_from_subjects(tmp_path, ray_local):
    subjects = tmp_path / "subjects"
    _subject_photos(subjects / "astronaut", photo("astronaut"), 5)
    _subject_photos(subjects / "cat", np.asarray(Image.fromarray(photo("chelsea")).resize((600, 450))), 4)
    root, shards = tmp_path / "d", tmp_path / "s"
    assert main(["ingest", str(subjects), "--out", str(root), "--kind", "subjects", "--rows-per-part", "3", *RAY]) == 0
    import pyarrow.parquet as pq

    catalog = pq.read_table(root / "catalog")
    parts = [pq.read_table(p).column("subject").to_pylist() for p in sorted((root / "catalog" / "subjects").glob("*.parquet"))]
    assert all(len(set(p)) == 1 for p in parts)  # parts never split a subject
    assert set(catalog.column("kind").to_pylist()) == {"subject_image"}
    assert main(["annotate", str(root), "--annotators", "faces", "--set", "faces.num_cpus=0.5", *RAY]) == 0
    assert main(["build", str(root), "--out", str(shards), "--tasks", "faceid", *RAY]) == 0
    stats = shard_stats(str(shards))
    assert stats["annotation_statuses"]["faces@1"] == {"no_face": 4, "ok": 5}
    assert stats["nsfw_filter"] == {"faces@1": "off: no NSFW classifier configured"}
    assert stats["samples_per_task"] == {"faceid": 5} and stats["skipped_per_reason"] == {"faceid: faces:no_face": 4}
    for sample in read_manifests(str(shards)).to_pylist():
        views = sample["n_views"]
        assert 2 <= views <= 5 and sample["prompt"].startswith("[[faceid]] [[img0]]")
        assert [f"[[img{i}]]" in sample["prompt"] for i in range(views)] == [True] * views
        assert sample["source_keys"][0] == sample["key"].rsplit("-faceid", 1)[0]  # target first
        assert len(set(sample["source_keys"])) == views


def test_co3d_category_folder_is_one_scene_per_sequence(tmp_path):
    """`--kind scenes` on a CO3D category folder: each sequence of frame_annotations.jgz is one scene."""
    import gzip
    import importlib.util

    from onegen.pipelines.jobs.ingest import ingest_rows
    from onegen.pipelines.sources.image_checks import ImageLimits
    from onegen.pipelines.sources.kinds import list_items
    from onegen.pipelines.sources.settings import SourceSpec

    spec = importlib.util.spec_from_file_location("readers", Path(__file__).with_name("test_camera_readers.py"))
    readers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readers)  # its co3d_viewpoint writes PyTorch3D cameras from OpenCV ones
    truth = write_scene(tmp_path / "render", SceneConfig(seed=1, n_views=4, width=readers.WIDTH, height=readers.HEIGHT))
    category = tmp_path / "co3d" / "toys"
    (category / "seq_a").mkdir(parents=True)
    frames = []
    for i in range(4):
        (category / "seq_a" / f"{i}.png").write_bytes((tmp_path / "render" / "images" / f"frame_{i:05d}.png").read_bytes())
        frames.append({"sequence_name": "seq_a", "frame_number": i,
                       "image": {"path": f"toys/seq_a/{i}.png", "size": [readers.HEIGHT, readers.WIDTH]},
                       "viewpoint": readers.co3d_viewpoint(truth.c2w[i], truth.intrinsics, False)})
    frames.append({**frames[0], "sequence_name": "seq_b", "image": {"path": "toys/missing.png", "size": [1, 1]}})
    (category / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    source = SourceSpec(str(tmp_path / "co3d"), kind="scenes")
    items = list_items(source)
    assert [i["sequence"] for i in items] == ["seq_a", "seq_b"]
    good, bad = ingest_rows(source, ImageLimits(min_side=32), items)
    assert good["kind"] == "scene" and len(good["view_images"]) == 4 and good["reject_reason"] is None
    cameras = json.loads(good["meta"])["cameras"]
    np.testing.assert_allclose(np.array(cameras[2]["c2w"]), truth.c2w[2], atol=1e-9)
    assert bad["reject_reason"] == "bad_scene" and bad["key"] is None
