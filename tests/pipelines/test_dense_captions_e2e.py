"""Dense captions for ID photos and scenes through the real jobs (tiny random LLaVA-NeXT, Ray):
ingest subjects + scenes -> faces, cameras, caption -> build faceid + multiview with --caption dense,
and every prompt carries the caption store's text in the documented format."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onegen.core.task_prompts import faceid_prompt, multiview_prompt
from onegen.manifests.query import read_manifests
from onegen.pipelines.cli.main import main
from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene
from onegen.pipelines.demo.tiny_models import tiny_llava_next
from tests.conftest import photo

pytestmark = pytest.mark.timeout(900)
RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


def _subject(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    pixels = photo("astronaut")
    for i in range(count):  # one face in slightly different framings
        Image.fromarray(np.ascontiguousarray(pixels[i * 6 : 400 + i * 6, 40 + i * 4 : 440 + i * 4])).save(folder / f"{i}.png")


def test_faceid_and_multiview_prompts_carry_dense_captions(tmp_path, ray_local):
    _subject(tmp_path / "subjects" / "astronaut", 5)
    write_scene(tmp_path / "scenes" / "scene0", SceneConfig(seed=0, n_views=5, width=64, height=64))
    root, shards = tmp_path / "d", tmp_path / "s"
    vlm = tiny_llava_next(tmp_path / "vlm")
    assert main(["ingest", str(tmp_path / "subjects"), "--out", str(root), "--kind", "subjects", *RAY]) == 0
    assert main(["ingest", str(tmp_path / "scenes"), "--out", str(root), "--kind", "scenes", *RAY]) == 0
    assert main(["annotate", str(root), "--annotators", "faces,cameras", "--set", "faces.num_cpus=0.5", *RAY]) == 0
    assert main(["annotate", str(root), "--annotators", "caption", "--set", f"caption.model={vlm}",
                 "--set", "caption.num_gpus=0", "--set", "caption.max_new_tokens=24", *RAY]) == 0
    captions = pq.read_table(root / "annotations" / "caption@2").to_pylist()
    catalog = {row["key"]: row for row in pq.read_table(root / "catalog").to_pylist()}
    assert {catalog[row["key"]]["kind"] for row in captions} == {"subject_image", "scene"}
    dense = {row["key"]: row["caption"] for row in captions if row["status"] == "ok"}
    scene_key = next(key for key, row in catalog.items() if row["kind"] == "scene")
    assert scene_key in dense and len(dense) >= 4, [(r["status"], r["error"]) for r in captions]
    scene_row = next(row for row in captions if row["key"] == scene_key)
    assert 0 <= scene_row["caption_view"] < 5 and scene_row["length_reason"].startswith("words_out_of_range:")
    assert main(["build", str(root), "--out", str(shards), "--tasks", "faceid,multiview", "--caption", "dense",
                 "--views", "2-3", "--view-resolution", "32", *RAY]) == 0
    manifest = read_manifests(str(shards)).to_pylist()
    faceid = [s for s in manifest if s["key"].endswith("-faceid")]
    multiview = [s for s in manifest if "-multiview-" in s["key"]]
    assert len(faceid) == 5 and len(multiview) == 1
    for sample in faceid:  # [[faceid]] [[img0]] <target caption> [[img1]] <reference caption> ...
        assert sample["prompt"] == faceid_prompt([dense.get(key) for key in sample["source_keys"]])
        assert any(dense.get(key) for key in sample["source_keys"])
    assert multiview[0]["prompt"] == multiview_prompt(dense[scene_key]) != "[[multiview]]"
