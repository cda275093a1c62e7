"""VLM loading + batched generation, and the caption / entities annotators, on tiny random models.

The tiny LLaVA-NeXT (Mistral text + CLIP vision) and Molmo2 checkpoints come from
`onegen.pipelines.demo.tiny_models` (configs + an in-memory-trained BPE tokenizer, save_pretrained) and
load through the same `load_vlm` that real hub ids use. bench/vlm.py --tiny builds the same ones.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import importlib.util  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.base import RowError  # noqa: E402
from onegen.annotators.caption import CaptionAnnotator, EntitiesAnnotator, scene_caption_view  # noqa: E402
from onegen.annotators.caption_text import length_reason, parse_entities  # noqa: E402
from onegen.annotators.vlm import (  # noqa: E402
    GenerationSettings,
    VLMRequest,
    generate,
    generate_ids,
    image_token_count,
    load_vlm,
    plan_batches,
    vllm_request,
)
from onegen.core.image_codec import encode_png  # noqa: E402
from onegen.core.weights import MissingCheckpointError  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_llava_next, tiny_molmo2  # noqa: E402

BUILDERS = {"llava_next": tiny_llava_next, "molmo2": tiny_molmo2}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vlm")
    return {family: build(str(root / family)) for family, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {family: load_vlm(path, "cpu") for family, path in checkpoints.items()}


def photos() -> list[np.ndarray]:
    """Real photos at different sizes and aspect ratios (so image-token counts differ)."""

    def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))

    return [
        resized(skdata.astronaut(), 40, 40),
        resized(skdata.rocket(), 30, 64),
        resized(skdata.coffee(), 70, 30),
        resized(skdata.chelsea(), 56, 42),
        resized(skdata.astronaut()[::-1], 24, 24),
    ]


# --- loading and generation -------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(BUILDERS))
def test_loader_reads_saved_checkpoint(loaded, checkpoints, family: str) -> None:
    vlm = loaded[family]
    assert vlm.family == family
    assert vlm.checkpoint.path == checkpoints[family]
    assert vlm.dtype == torch.float32 and vlm.device == "cpu"
    assert vlm.processor.tokenizer.padding_side == "left"


@pytest.mark.parametrize("family", list(BUILDERS))
def test_batched_generation_equals_one_at_a_time(loaded, family: str) -> None:
    vlm = loaded[family]
    images = photos()
    counts = [image_token_count(vlm, *image.shape[:2]) for image in images]
    assert len(set(counts)) >= 3, counts  # a batch mixes image-token counts, so it is padded
    requests = [VLMRequest(f"k{i}", image, "describe this image") for i, image in enumerate(images)]
    settings = GenerationSettings(max_new_tokens=8)
    one_by_one = generate_ids(vlm, requests, settings, batch_size=1)
    batched = generate_ids(vlm, requests, settings, batch_size=len(requests))
    assert batched == one_by_one
    assert len({tuple(ids) for ids in one_by_one}) >= 2  # the image reaches the model: answers differ
    assert all(len(ids) > 0 for ids in one_by_one)


def test_plan_batches_sorts_by_token_count() -> None:
    assert plan_batches([30, 10, 20, 10, 40], batch_size=2) == [[1, 3], [2, 0], [4]]
    assert plan_batches([], batch_size=4) == []
    with pytest.raises(ValueError):
        plan_batches([1], batch_size=0)


def test_seeded_sampling_is_reproducible(loaded) -> None:
    vlm = loaded["llava_next"]
    requests = [VLMRequest(f"k{i}", image, "describe") for i, image in enumerate(photos()[:3])]
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.0, top_p=1.0, seed=7)
    assert generate_ids(vlm, requests, settings, 3) == generate_ids(vlm, requests, settings, 3)


# --- annotators -------------------------------------------------------------------------------------
def catalog_batch(images: list[np.ndarray]) -> dict[str, list]:
    n = len(images)
    return {
        "key": [f"src-{i:03d}" for i in range(n)],
        "kind": ["image"] * n,
        "image": [encode_png(image) for image in images],
        "caption_original": [f"original caption {i}" for i in range(n)],
        "meta": ["{}"] * n,
        "width": [image.shape[1] for image in images],
        "height": [image.shape[0] for image in images],
    }


@pytest.mark.parametrize("family", list(BUILDERS))
def test_caption_annotator_batch(checkpoints, loaded, family: str) -> None:
    images = photos()
    batch = catalog_batch(images)
    batch["kind"][1] = "multiview"  # not handled: skipped, still one row
    batch["image"][2] = b"not an image"  # data problem: this row errors, the others go on
    annotator = CaptionAnnotator(model=checkpoints[family], num_gpus=0, batch_size=2, max_new_tokens=12)
    annotator.setup()
    out = annotator(batch)
    assert out["key"] == batch["key"]
    assert set(out) >= {"caption", "caption_raw", "word_count", "caption_original", "status", "error"}
    assert out["status"][1] == "skipped" and out["status"][2] == "error"
    assert "decode_error" in out["error"][2]
    good = [0, 3, 4]
    vlm = loaded[family]
    expected_raw = generate(
        vlm, [VLMRequest("", images[i], annotator.prompt) for i in good], annotator.settings(), batch_size=1
    )
    for i, raw in zip(good, expected_raw, strict=True):
        assert out["status"][i] in ("ok", "unparseable")
        if out["status"][i] == "ok":
            assert out["caption_raw"][i] == raw  # the annotator's batched call = one-at-a-time generate
            assert out["caption_original"][i] == f"original caption {i}"
            assert out["word_count"][i] == len(out["caption"][i].split()) > 0
    assert all(model_id == checkpoints[family] for model_id in out["model_id"])
    annotator.schema()  # output columns are declared: building the table would fail otherwise
    import pyarrow as pa

    pa.Table.from_pydict(out, schema=annotator.schema())


def test_entities_annotator_batch(checkpoints) -> None:
    images = photos()[:3]
    annotator = EntitiesAnnotator(model=checkpoints["molmo2"], num_gpus=0, batch_size=3, max_new_tokens=10)
    annotator.setup()
    out = annotator(catalog_batch(images))
    assert out["key"] == [f"src-{i:03d}" for i in range(3)]
    for status, entities, raw, error in zip(
        out["status"], out["entities"], out["entities_raw"], out["error"], strict=True
    ):
        assert status in ("ok", "unparseable")
        if status == "ok":
            assert entities == parse_entities(raw) and 1 <= len(entities) <= 10
        else:
            assert entities is None and error.startswith("entities:")
    import pyarrow as pa

    pa.Table.from_pydict(out, schema=annotator.schema())


def test_unusable_answers_are_unparseable_rows() -> None:
    row = {"key": "k", "caption_original": "x"}
    with pytest.raises(RowError) as caught:
        EntitiesAnnotator().parse_answer("I cannot see any objects.", row)
    assert caught.value.status == "unparseable"
    with pytest.raises(RowError) as caught:
        CaptionAnnotator().parse_answer("   ", row)
    assert caught.value.status == "unparseable"
    parsed = CaptionAnnotator().parse_answer("The image shows a red car. It is parked by a", row)
    assert parsed == {"caption": "A red car.", "caption_raw": "The image shows a red car. It is parked by a",
                      "word_count": 3, "length_reason": "words_out_of_range:3 not in 100-150",
                      "caption_view": None, "view_phrases": None, "caption_original": "x"}  # fmt: skip


# --- row kinds: ID photos and scenes -----------------------------------------------------------------
def mixed_batch(images: list[np.ndarray]) -> dict[str, list]:
    """An image row, two ID photos, a scene (5 views), a CO3D scene and a scene of a listed source."""
    views = [encode_png(image) for image in images]
    rows = [
        {"key": "photos-000", "source": "photos", "kind": "image", "image": views[0], "view_images": None,
         "meta": "{}", "caption_original": "a photo"},
        {"key": "ids-001", "source": "ids", "kind": "subject_image", "image": views[1], "view_images": None,
         "meta": "{}", "caption_original": None, "subject": "astronaut"},
        {"key": "ids-002", "source": "ids", "kind": "subject_image", "image": views[3], "view_images": None,
         "meta": "{}", "caption_original": None, "subject": "astronaut"},
        {"key": "dl3dv-003", "source": "dl3dv", "kind": "scene", "image": None, "view_images": views,
         "meta": json.dumps({"reader": "nerfstudio"}), "caption_original": None},
        {"key": "co3dv2-004", "source": "co3dv2", "kind": "scene", "image": None, "view_images": views[:2],
         "meta": json.dumps({"reader": "co3d"}), "caption_original": None},
        {"key": "mvimg-005", "source": "mvimg", "kind": "scene", "image": None, "view_images": views[:3],
         "meta": json.dumps({"reader": "colmap"}), "caption_original": None},
    ]
    return {column: [row.get(column) for row in rows] for column in {c for row in rows for c in row}}


def family_requests(annotator: CaptionAnnotator, images: list[np.ndarray]) -> list[VLMRequest]:
    """What each captioned row of `mixed_batch` must ask, written out by hand: family prompt + image."""
    view = scene_caption_view("dl3dv-003", len(images))
    return [VLMRequest("photos-000", images[0], annotator.prompt),
            VLMRequest("ids-001", images[1], annotator.subject_prompt),
            VLMRequest("ids-002", images[3], annotator.subject_prompt),
            VLMRequest("dl3dv-003", images[view], annotator.scene_prompt)]


@pytest.mark.parametrize("family", list(BUILDERS))
def test_captions_for_id_photos_and_one_view_per_scene(checkpoints, loaded, family: str) -> None:
    images = photos()
    annotator = CaptionAnnotator(model=checkpoints[family], num_gpus=0, batch_size=4, max_new_tokens=12,
                                 token_only_scenes=("co3d", "mvimg"))
    annotator.setup()
    out = annotator(mixed_batch(images))
    assert out["status"][4:] == ["token_only", "token_only"]  # a CO3D reader's scene; a listed source
    assert "co3d" in out["error"][4] and "mvimg" in out["error"][5] and out["caption"][4] is None
    requests = family_requests(annotator, images)
    expected = generate(loaded[family], requests, annotator.settings(), batch_size=1)
    ranges = [(100, 150), (30, 75), (30, 75), (30, 100)]
    for i, (raw, (low, high)) in enumerate(zip(expected, ranges, strict=True)):
        assert out["status"][i] in ("ok", "unparseable"), out["error"][i]
        assert out["caption_raw"][i] in (raw, None)  # the family's prompt about the right image
        if out["status"][i] == "ok":
            assert out["caption_raw"][i] == raw
            assert out["length_reason"][i] == length_reason(out["word_count"][i], low, high) is not None
    assert out["status"][3] == "ok", out["error"][3]
    view = scene_caption_view("dl3dv-003", len(images))
    assert out["caption_view"][3] == view and out["caption_view"][:3] == [None] * 3
    assert isinstance(out["view_phrases"][3], list) and out["view_phrases"][:3] == [None] * 3
    wrong_prompt = generate(loaded[family], [VLMRequest("k", images[1], annotator.prompt)], annotator.settings(), 1)
    assert wrong_prompt[0] != expected[1]  # the family prompt reaches the model
    import pyarrow as pa

    pa.Table.from_pydict(out, schema=annotator.schema())


def test_scene_view_is_drawn_by_key_or_configured(checkpoints) -> None:
    picks = {scene_caption_view(f"scene-{i}", 6) for i in range(40)}
    assert picks == set(range(6))  # spread over the views, and the same view on a rerun:
    assert [scene_caption_view(f"scene-{i}", 6) for i in range(40)] == [scene_caption_view(f"scene-{i}", 6)
                                                                         for i in range(40)]
    assert scene_caption_view("scene-0", 6, configured=2) == 2
    images = photos()
    batch = mixed_batch(images)
    annotator = CaptionAnnotator(model=checkpoints["llava_next"], num_gpus=0, max_new_tokens=6, scene_view=4,
                                 token_only_scenes=())
    rows = [{column: values[i] for column, values in batch.items()} for i in (3, 4)]
    assert annotator.vlm_input(rows[0]).view == 4 and annotator.vlm_input(rows[0]).image == batch["view_images"][3][4]
    with pytest.raises(RowError) as caught:  # the CO3D scene (captioned: token_only_scenes=()) has 2 views
        annotator.vlm_input(rows[1])
    assert caught.value.status == "no_such_view"


def test_co3d_scenes_keep_the_token_alone_by_default() -> None:
    row = {column: values[4] for column, values in mixed_batch(photos()).items()}
    with pytest.raises(RowError) as caught:
        CaptionAnnotator().vlm_input(row)
    assert caught.value.status == "token_only"
    assert CaptionAnnotator(token_only_scenes=()).vlm_input(row).view in (0, 1)


@pytest.mark.parametrize("family", list(BUILDERS))
def test_batched_equals_one_at_a_time_for_id_photos_and_scenes(checkpoints, loaded, family: str) -> None:
    images = photos()
    annotator = CaptionAnnotator(model=checkpoints[family], num_gpus=0, max_new_tokens=10)
    requests = family_requests(annotator, images)
    requests += [VLMRequest(f"ids-x{i}", image, annotator.subject_prompt) for i, image in enumerate(images[2:])]
    one_by_one = generate_ids(loaded[family], requests, annotator.settings(), batch_size=1)
    batched = generate_ids(loaded[family], requests, annotator.settings(), batch_size=len(requests))
    assert batched == one_by_one and all(one_by_one)
    outs = []
    for batch_size in (1, 6):
        annotator.batch_size = batch_size
        outs.append(annotator(mixed_batch(images)))
    assert outs[0]["caption_raw"] == outs[1]["caption_raw"] and outs[0]["status"] == outs[1]["status"]


def test_word_count_outside_the_family_range_gets_a_reason() -> None:
    annotator = CaptionAnnotator()
    short = "A woman with curly red hair wears a green wool coat on a busy street."
    words47 = " ".join(["A woman with curly red hair wears a green wool coat."] * 4) + " She stands outside."
    subject = {"key": "ids-1", "kind": "subject_image", "caption_original": None}
    parsed = annotator.parse_answer(short, subject)
    assert parsed["caption"] == short and parsed["word_count"] == 15  # kept whole: never truncated
    assert parsed["length_reason"] == "words_out_of_range:15 not in 30-75"
    assert annotator.parse_answer(words47, subject)["length_reason"] is None  # 47 words: inside 30-75
    assert annotator.parse_answer(words47, {**subject, "kind": "image"})["length_reason"] == (
        "words_out_of_range:47 not in 100-150")
    assert CaptionAnnotator(subject_min_words=10).parse_answer(short, subject)["length_reason"] is None
    text = ("An old stone bridge crosses a slow river between two grassy banks. A wooden bench stands on the "
            "left, and willow trees hang over the water in the background. The light is soft and grey.")
    scene = annotator.parse_answer(text, {"key": "s", "kind": "scene", "caption_view": 3})
    assert scene["caption_view"] == 3 and scene["word_count"] == 35 and scene["length_reason"] is None
    assert scene["view_phrases"] == ["on the left", "in the background"]  # recorded, the caption kept


# --- failures at setup ------------------------------------------------------------------------------
def test_missing_checkpoint_fails_at_setup_in_one_line(tmp_path) -> None:
    for model in (str(tmp_path / "no-such-model"), "nobody/not-a-cached-vlm"):
        with pytest.raises(MissingCheckpointError) as caught:
            CaptionAnnotator(model=model, num_gpus=0).setup()
        assert "\n" not in str(caught.value) and model in str(caught.value)


def test_original_molmo_needs_explicit_remote_code(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "molmo"}))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        EntitiesAnnotator(model=str(tmp_path), num_gpus=0).setup()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_fails_clearly_without_vllm() -> None:
    with pytest.raises(ImportError, match="vllm is not installed"):
        CaptionAnnotator(backend="vllm", num_gpus=0).setup()


def test_vllm_request_uses_the_same_chat() -> None:
    request = vllm_request(b"\x89PNG", "describe", GenerationSettings(max_new_tokens=5))
    content = request["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "describe"}
    assert request["sampling_params"] == {"max_tokens": 5, "temperature": 0.0}
