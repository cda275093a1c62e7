"""End to end through real Ray on 2 CPUs: ingest -> annotate -> build -> stats/verify/select, then the
shards read back by webdataset, wids, datasets and Ray Data; reruns resume, re-sharding runs no model."""

import json
import os
from pathlib import Path

import pytest

from onegen.manifests.query import read_manifests, select_shards, shard_stats
from onegen.manifests.verify import verify_shards
from onegen.pipelines.cli.main import main
from tests.conftest import encode, photo, write_photo_folder

pytestmark = pytest.mark.timeout(600)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]
TASKS = {"text2image", "canny2image", "deblurring", "super_resolution", "image_inpainting"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("e2e")
    photos = base / "photos"
    write_photo_folder(photos, count=20)
    (photos / "broken.jpg").write_bytes(encode(photo("astronaut"), "JPEG")[:3000])  # truncated
    (photos / "readme.png").write_text("text")
    root, shards = base / "dataset", base / "shards"
    assert main(["ingest", str(photos), "--out", str(root), "--rows-per-part", "6", *RAY]) == 0
    assert main(["annotate", str(root), "--annotators", "canny,blur,lowres,inpaint", *RAY]) == 0
    assert main(["build", str(root), "--out", str(shards), "--samples-per-shard", "7", *RAY]) == 0
    return base, root, shards


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}


def test_catalog_rejects_and_keys(built):
    _, root, _ = built
    stats = shard_stats(str(built[2]))
    assert stats["catalog_rows"] == 20
    assert stats["rejects_per_reason"] == {"not_an_image": 1, "decode_error": 1}
    import pyarrow.parquet as pq

    catalog = pq.read_table(root / "catalog" / "photos")
    keys = catalog.column("key").to_pylist()
    assert len(set(keys)) == 20 and not any("." in k for k in keys)
    assert set(catalog.column("image_format").to_pylist()) == {"jpg"}


def test_shards_hold_every_candidate_once(built):
    _, root, shards = built
    import pyarrow.parquet as pq

    canny_status = pq.read_table(root / "annotations" / "canny@1").column("status").to_pylist()
    canny_ok = canny_status.count("ok")
    assert len(canny_status) == 20 and canny_ok >= 15  # flat crops may have no edges: recorded, not dropped
    checked, problems = verify_shards(str(shards))
    assert problems == [] and checked == canny_ok + 20 * 3 + 15  # text2image only where captioned
    stats = shard_stats(str(shards))
    assert stats["samples_per_task"] == {"canny2image": canny_ok, "deblurring": 20, "image_inpainting": 20,
                                         "super_resolution": 20, "text2image": 15}
    expected_skips = {"text2image: no_caption": 5}
    if canny_ok < 20:
        expected_skips["canny2image: canny:no_edges"] = 20 - canny_ok
    assert stats["skipped_per_reason"] == expected_skips
    manifest = read_manifests(str(shards)).to_pylist()
    canny = next(r for r in manifest if r["task"] == "canny2image")
    assert canny["prompt"].startswith("[[canny2image]] ") and canny["members"] == ["img0.jpg", "img1.png", "txt", "json"]
    assert canny["annotators"] == ["canny@1"] and canny["n_views"] == 2
    canny_shards = -(-canny_ok // 7)
    assert select_shards(str(shards), ["canny2image"]) == [
        str(shards / f"onegen-canny2image-00000-{i:06d}.tar") for i in range(canny_shards)]


def test_readers_see_the_same_samples(built):
    import datasets
    import ray
    import webdataset as wds
    import wids

    _, _, shards = built
    manifest = {r["key"]: r for r in read_manifests(str(shards)).to_pylist()}
    tars = sorted(str(p) for p in shards.glob("*.tar"))
    seen = {s["__key__"]: s for s in wds.WebDataset(tars, shardshuffle=False)}
    assert set(seen) == set(manifest)
    for key, sample in seen.items():
        assert sample["txt"].decode() == manifest[key]["prompt"]
        assert sorted(k for k in sample if not k.startswith("__")) == sorted(manifest[key]["members"])
    by_wids = wids.ShardListDataset(str(shards / "index.json"))
    assert len(by_wids) == len(manifest)
    first = by_wids[0]
    assert first[".txt"] == manifest[first["__key__"]]["prompt"]
    canny_tars = sorted(str(p) for p in shards.glob("onegen-canny2image-*.tar"))
    hf = datasets.load_dataset("webdataset", data_files={"train": canny_tars}, split="train")
    assert len(hf) == len([r for r in manifest.values() if r["task"] == "canny2image"])
    assert hf[0]["img1.png"].size == hf[0]["img0.jpg"].size
    by_ray = ray.data.read_webdataset(tars, decoder=None).take_all()
    assert sorted(r["__key__"] for r in by_ray) == sorted(manifest)
    assert all(r["txt"].decode() == manifest[r["__key__"]]["prompt"] for r in by_ray)


def test_rerun_resumes_and_reshard_runs_no_model(built):
    base, root, shards = built
    annotation_times = _mtimes(root / "annotations")
    catalog_times = _mtimes(root / "catalog")
    assert main(["ingest", str(base / "photos"), "--out", str(root), "--rows-per-part", "6", *RAY]) == 0
    assert main(["annotate", str(root), "--annotators", "canny,blur,lowres,inpaint", *RAY]) == 0
    assert _mtimes(root / "catalog") == catalog_times and _mtimes(root / "annotations") == annotation_times
    # another shard size into a new folder: re-sharded from the stores, annotation parts untouched
    resharded = base / "shards-13"
    assert main(["build", str(root), "--out", str(resharded), "--samples-per-shard", "13", *RAY]) == 0
    assert _mtimes(root / "annotations") == annotation_times
    assert verify_shards(str(resharded))[1] == []
    old, new = read_manifests(str(shards)), read_manifests(str(resharded))
    assert sorted(old.column("key").to_pylist()) == sorted(new.column("key").to_pylist())
    index = json.loads((resharded / "index.json").read_text())
    assert [s["nsamples"] for s in index["shardlist"] if s["task"] == "deblurring"] == [13, 7]


def test_changed_rerun_is_refused_with_the_reason(built, capsys):
    base, root, shards = built
    assert main(["build", str(root), "--out", str(shards), "--samples-per-shard", "5", *RAY]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("onegen: error: refusing to resume: samples_per_shard changed: 7 -> 5")
    assert len(error.splitlines()) == 1
    assert main(["ingest", str(base / "photos"), "--out", str(root), "--rows-per-part", "5", *RAY]) == 2
    assert "rows_per_part changed: 6 -> 5" in capsys.readouterr().err
    (base / "photos" / "late-arrival.png").write_bytes(encode(photo("coins")[:96, :96]))
    try:
        assert main(["ingest", str(base / "photos"), "--out", str(root), "--rows-per-part", "6", *RAY]) == 2
        error = capsys.readouterr().err
        assert "input changed" in error and "items changed: 22 -> 23" in error
    finally:
        (base / "photos" / "late-arrival.png").unlink()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ingest", "/no/such/folder", "--out", "{tmp}/x"], "source path does not exist"),
        (["annotate", "{root}", "--annotators", "sparkle"], "unknown annotator"),
        (["annotate", "{root}", "--annotators", "canny", "--set", "canny.low=high"], "not a valid int"),
        (["build", "{root}", "--out", "{tmp}/s", "--tasks", "dream2image"], "unknown or unannotated task"),
        (["annotate", "{root}", "--annotators", "caption", "--set", "caption.backend=vllm"], "vllm is not installed"),
        (["annotate", "{root}", "--annotators", "depth"], "is not in the local HF cache"),
        (["annotate", "{root}", "--annotators", "depth", "--set", "depth.model=/no/such/checkpoint"],
         "the path does not exist"),
    ],
)
def test_user_errors_are_one_line(argv, message, tmp_path, capsys, built):
    """Each mistake on a real dataset root (a wrong folder is refused before any of these: test_cli_entry.py)."""
    root = built[1]
    assert main([a.replace("{tmp}", str(tmp_path)).replace("{root}", str(root)) for a in argv] + RAY) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and "Traceback" not in error


def test_no_output_escapes_the_output_folder(built):
    base, _, _ = built
    assert not (base.parent / "evil.jpg").exists() and not Path(os.sep, "evil.jpg").exists()
