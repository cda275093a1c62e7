"""`onegen preview`: report data against the manifests, view order and roles, legends, escaping, pictures.

Fixture shards are written with the real `ShardWriter` (no Ray): canny2image, semanticmap2image (a
label map + colour tags), multiview (img/ray pairs from real Plücker rays), faceid (3 views) and a
text2image sample whose prompt carries `<script>`; plus a dataset root with ingest rejects and an
annotation store holding one failed row, referenced from build.json.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onegen.core.camera_geometry import plucker_rays, rays_to_latent
from onegen.manifests import files
from onegen.manifests.schemas import REJECTS_SCHEMA
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.pipelines.cli import preview_command
from onegen.pipelines.preview import render as preview_render
from onegen.pipelines.preview import report as preview

TAGS = [("#00FFFF", "cyan", "dragon"), ("#FF0000", "red", "bird")]
SCRIPT_PROMPT = '[[text2image]] a sign that reads <script>alert("x")</script> & more'
RAY_W, RAY_H, N_CAMERAS = 64, 48, 3


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(seed: int, h: int = 48, w: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    return _png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _look_at_origin(position: np.ndarray) -> np.ndarray:
    """OpenCV c2w (4, 4) of a camera at `position` looking at the origin, world y pointing down."""
    z = -position / np.linalg.norm(position)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = position
    return c2w


def camera_centres() -> np.ndarray:
    angles = np.linspace(0.0, np.pi / 2, N_CAMERAS)
    return np.stack([1.7 * np.sin(angles), np.zeros(N_CAMERAS), -1.7 * np.cos(angles)], axis=1)  # (N, 3)


def ray_latents() -> np.ndarray:
    """(N, 16, H/8, W/8) float16 ray latents of cameras on a quarter circle around the origin."""
    c2w = np.stack([_look_at_origin(p) for p in camera_centres()])
    k = np.array([[60.0, 0, RAY_W / 2], [0, 60.0, RAY_H / 2], [0, 0, 1]])
    rays = plucker_rays(c2w, np.repeat(k[None], N_CAMERAS, 0), RAY_W, RAY_H)  # (N, 6, 8, 6)
    return rays_to_latent(rays).astype(np.float16)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _sample(key: str, task: str, prompt: str, views: list[tuple[str, bytes]], roles: list[str], ordinal: int,
            annotators: list[str], source: str = "photos") -> Sample:
    meta = {"task": task, "n_views": len(roles), "roles": roles, "prompt": prompt, "source_keys": [key]}
    members = [*views, ("txt", prompt.encode()), ("json", json.dumps(meta).encode())]
    return Sample(key, task, prompt, source, members, len(roles), [key], annotators, 64, 48, ordinal)


def fixture_samples() -> dict[str, list[Sample]]:
    """task -> samples, in stream order."""
    tags = " ".join(f"<{h} {name} mask: {label}>" for h, name, label in TAGS)
    label_map = np.zeros((48, 64, 3), np.uint8)
    label_map[:, :32] = (0, 255, 255)
    label_map[:, 32:] = (255, 0, 0)
    latents = ray_latents()
    multiview_views = []
    for i in range(N_CAMERAS):
        multiview_views += [(f"img{i}.png", _photo(100 + i)), (f"ray{i}.npy", _npy(latents[i]))]
    return {
        "canny2image": [_sample(f"photos-c{i}-canny2image", "canny2image", f"[[canny2image]] photo number {i}",
                                [("img0.jpg", _photo(i)), ("img1.png", _photo(50 + i))], ["image", "condition"], i,
                                ["canny@1"], source="photos" if i < 2 else "other") for i in range(3)],
        "semanticmap2image": [_sample("photos-s0-semanticmap2image", "semanticmap2image",
                                      f"[[semanticmap2image]] {tags} a dragon chasing a bird",
                                      [("img0.png", _photo(7)), ("img1.png", _png(label_map))],
                                      ["image", "semantic_map"], 0, ["segment@2", "caption@1"])],
        "multiview": [_sample("scenes-m0-multiview", "multiview", "[[multiview]] a quarter turn around a thing",
                              multiview_views, ["image", "rays"] * N_CAMERAS, 0, ["cameras@1"], "scenes")],
        "faceid": [_sample("faces-f0-faceid", "faceid", "[[faceid]] [[img0]] a woman [[img1]] her [[img2]] again",
                           [(f"img{i}.jpg", _photo(200 + i)) for i in range(3)], ["target", "reference", "reference"],
                           0, [], "faces")],
        "text2image": [_sample("photos-t0-text2image", "text2image", SCRIPT_PROMPT, [("img0.jpg", _photo(9))],
                               ["image"], 0, ["caption@1"])],
    }


def write_fixture_shards(base: Path) -> tuple[Path, dict[str, list[Sample]]]:
    """Shards (2 per shard) + skipped rows + a dataset root (rejects, annotations, catalog) under `base`."""
    shards, root = base / "shards", base / "dataset"
    samples = fixture_samples()
    for task, task_samples in samples.items():
        writer = ShardWriter(str(shards), "onegen", task, samples_per_shard=2, max_shard_bytes=1 << 30)
        for sample in task_samples:
            writer.add(sample)
        if task == "canny2image":
            writer.skip("photos-bad", "canny:error", 99)
        writer.finish()
    files.commit_json(str(shards / "build.json"), {"root": str(root)})
    rejects = [{"source": "photos", "uri": f"u{i}", "key": None, "reason": r, "error": "", "stage": "ingest"}
               for i, r in enumerate(["decode_error", "decode_error", "too_small"])]
    files.commit_table(str(root / "rejects" / "photos" / "part-00000.parquet"),
                       pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA))
    files.commit_table(str(root / "annotations" / "canny@1" / "photos" / "part-00000.parquet"),
                       pa.table({"key": ["a", "b", "c"], "status": ["ok", "ok", "error"],
                                 "error": [None, None, "image too dark\ntraceback line"]}))
    files.commit_table(str(root / "catalog" / "photos" / "part-00000.parquet"), pa.table({"key": ["a", "b", "c"]}))
    return shards, samples


class ReportParser(HTMLParser):
    """Collects sample articles (views, legend, prompt), overview tables and <script> tags."""

    def __init__(self):
        super().__init__()
        self.samples: dict[str, dict] = {}
        self.tables: dict[str, dict[str, str]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self._current, self._caption, self._cells, self._in = None, "", [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self._current = self.samples.setdefault(a["data-key"], {"views": [], "legend": [], "prompt": ""})
        elif tag == "figure" and self._current is not None and a.get("data-member") != "cameras":
            self._current["views"].append((a["data-member"], a["data-role"]))
        elif tag == "li" and "data-hex" in a:
            self._current["legend"].append(a["data-hex"])
        elif tag == "div" and a.get("class") == "prompt":
            self._in = "prompt"
        elif tag == "caption":
            self._in, self._caption = "caption", ""
        elif tag == "td":
            self._in = "td"
            self._cells.append("")
        elif tag == "tr":
            self._cells = []
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "tr" and len(self._cells) == 2:
            self.tables.setdefault(self._caption, {})[self._cells[0]] = self._cells[1]
        if tag in ("div", "caption", "td"):
            self._in = None
        if tag == "article":
            self._current = None

    def handle_data(self, data):
        if self._in == "prompt":
            self._current["prompt"] += data
        elif self._in == "caption":
            self._caption += data
        elif self._in == "td":
            self._cells[-1] += data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("preview")
    shards, samples = write_fixture_shards(base)
    index = preview.write_preview(str(shards), str(base / "report"), per_task=2)
    parser = ReportParser()
    parser.feed(Path(index).read_text(encoding="utf-8"))
    return shards, samples, Path(index), parser


def _manifest_rows(shards: Path) -> list[dict]:
    return [row for path in sorted((shards / "manifests").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def test_overview_counts_match_the_manifests_and_the_dataset_root(built):
    shards, _, _, parser = built
    rows = _manifest_rows(shards)
    tables = parser.tables
    assert {k: int(v) for k, v in tables["samples per task"].items()} == dict(Counter(r["task"] for r in rows))
    assert {k: int(v) for k, v in tables["samples per source"].items()} == dict(Counter(r["source"] for r in rows))
    versions = Counter(name for r in rows for name in r["annotators"])
    assert {k: int(v) for k, v in tables["annotator versions"].items()} == dict(versions)
    total_bytes = sum(path.stat().st_size for path in shards.glob("*.tar"))  # tar sizes, as build reports them
    assert int(tables["totals"]["bytes"].replace(",", "")) == total_bytes
    assert int(tables["totals"]["samples"]) == len(rows)
    assert tables["skipped candidates per reason"] == {"canny2image: canny:error": "1"}
    assert tables["ingest rejects per reason"] == {"decode_error": "2", "too_small": "1"}
    assert tables["annotation errors per reason"] == {"canny@1: error: image too dark": "1"}
    assert tables["annotation statuses"] == {"canny@1: error": "1", "canny@1: ok": "2"}


def test_every_sample_shows_its_views_in_order_with_roles_and_files(built):
    _, samples, index, parser = built
    shown = 0
    for task_samples in samples.values():
        shown_here = [sample for sample in task_samples if sample.key in parser.samples]
        assert len(shown_here) == min(2, len(task_samples))  # per_task=2
        for sample in shown_here:
            article = parser.samples[sample.key]
            expected = [s for s, _ in sample.members if s not in ("txt", "json")]
            roles = json.loads(dict(sample.members)["json"])["roles"]
            assert article["views"] == list(zip(expected, roles, strict=True))
            assert article["prompt"] == sample.prompt
            shown += 1
    assert len(parser.samples) == shown  # one canny sample is beyond per_task
    assert "photos-c2-canny2image" in parser.samples  # the spread takes the only sample of source "other"
    for src in parser.images:  # every picture referenced exists beside the page and decodes
        with Image.open(index.parent / src) as image:
            assert image.width > 0
    canny = next(sample for sample in samples["canny2image"] if sample.key in parser.samples)
    copied = index.parent / "samples" / "canny2image" / f"{canny.key}.img1.png"
    assert copied.read_bytes() == dict(canny.members)["img1.png"]  # image views are the trained bytes


def test_multiview_rays_render_as_false_colour_and_cameras_are_plotted(built):
    _, samples, index, parser = built
    key = samples["multiview"][0].key
    ray_png = index.parent / "samples" / "multiview" / f"{key}.ray1.png"
    with Image.open(ray_png) as image:
        assert image.size == (RAY_W, RAY_H)  # one cell per 8 pixels, drawn 8x
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    latent = ray_latents()[1].astype(np.float64) / 1.658  # (16, h, w): channels 0-2 = unit directions
    expected = (latent[:3, 0, 0] + 1) * 127.5
    assert np.allclose(rgb[0, 0], expected, atol=1.5)
    assert any(src.endswith(f"{key}.cameras.png") for src in parser.images)
    positions = preview_render.camera_positions(list(ray_latents()))  # (N, 2, 3): centre, axis
    assert np.allclose(positions[:, 0], camera_centres(), atol=0.05)


def test_legend_colours_match_the_prompt_tags(built):
    _, samples, _, parser = built
    article = parser.samples[samples["semanticmap2image"][0].key]
    assert article["legend"] == [h for h, _, _ in TAGS]
    legend = preview.parse_legend("[[boundingbox2image]] <#ff0000 red boundingbox: head> <#00FF00 lime mask: a b> x")
    assert [(e.hex, e.colour, e.kind, e.label) for e in legend] == [
        ("#FF0000", "red", "boundingbox", "head"), ("#00FF00", "lime", "mask", "a b")]
    assert parser.samples["photos-c2-canny2image"]["legend"] == []


def test_html_escapes_prompts(built):
    _, _, index, parser = built
    page = index.read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    assert parser.scripts == 1  # only the report's own inline script
    assert parser.samples["photos-t0-text2image"]["prompt"] == SCRIPT_PROMPT  # unescapes back to the text


def test_page_is_offline_and_plots_and_contact_sheets_exist(built):
    _, samples, index, parser = built
    page = index.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "src=\"//" not in page
    for name in ("plot-caption-words.png", "plot-image-sizes.png", "plot-samples-per-task.png"):
        assert name in parser.images
    heights = {}
    for task in samples:
        with Image.open(index.parent / f"contact-{task}.png") as sheet:
            assert np.asarray(sheet).std() > 0
            heights[task] = sheet.height
    # one row per shown sample: canny (2 shown) is twice as tall as text2image (1 shown)
    assert heights["canny2image"] == 2 * heights["text2image"]


def test_caption_words_ignore_tokens_and_tags():
    assert preview.caption_words("[[faceid]] [[img0]] a woman [[img1]] her") == 3
    assert preview.caption_words("[[semanticmap2image]] <#00FFFF cyan mask: big dragon> a red dragon") == 3


def test_view_roles_fall_back_for_image_only_role_lists():
    views = preview.view_members(["txt", "ray1.npy", "img1.png", "json", "ray0.npy", "img0.png"])
    assert views == ["img0.png", "ray0.npy", "img1.png", "ray1.npy"]
    assert preview.view_roles(views, ["image", "image"]) == ["image", "rays", "image", "rays"]
    assert preview.view_roles(["img0.jpg", "img1.png"], []) == ["image", "condition"]


def test_cli_command_filters_tasks(built, tmp_path):
    shards = built[0]
    parser = argparse.ArgumentParser()
    preview_command.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["preview", str(shards), "--out", str(tmp_path), "--per-task", "1",
                              "--task", "canny2image,faceid"])
    assert args.run(args) == 0
    report = ReportParser()
    report.feed((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert sorted(report.samples)[0] == "faces-f0-faceid" and len(report.samples) == 2
    assert sorted(report.samples)[1].endswith("-canny2image")
    assert not (tmp_path / "contact-multiview.png").exists()
