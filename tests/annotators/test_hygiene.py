"""clip / aesthetic / nsfw / watermark annotators on tiny random checkpoints (CPU, offline)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from onegen.annotators.aesthetic import AestheticAnnotator
from onegen.annotators.clip import ClipAnnotator, decode_embedding, embedding_matrix
from onegen.annotators.image_scores import NsfwAnnotator, WatermarkAnnotator
from onegen.pipelines.demo.tiny_hygiene_models import (
    CLIP_DIM,
    tiny_aesthetic,
    tiny_clip,
    tiny_image_classifier,
)
from tests.conftest import encode, image_batch, photo

CAPTIONS = ["a photo of the astronaut", "a red cup of coffee", "", "a cat"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> ClipAnnotator:
    annotator = ClipAnnotator(model=tiny_clip(tmp_path_factory.mktemp("clip")), num_gpus=0)
    annotator.setup()
    return annotator


def _images() -> list[np.ndarray]:
    return [photo("astronaut")[:200, :160], photo("coffee")[:120, :180], photo("chelsea"), photo("rocket")[:90, :90]]


def _batch_with_captions(images, captions) -> dict:
    batch = image_batch(images)
    batch["caption_original"] = list(captions)
    return batch


def test_clip_embedding_and_score_match_the_library_forward(clip):
    images = _images()
    out = clip(_batch_with_captions(images, CAPTIONS))
    assert out["status"] == ["ok"] * 4 and out["embedding_dim"] == [CLIP_DIM] * 4
    assert out["model_id"][0] == clip.model
    processor, tokenizer = clip._processor, clip._tokenizer
    for i, (image, caption) in enumerate(zip(images, CAPTIONS, strict=True)):
        stored = decode_embedding(out["embedding"][i])
        assert len(out["embedding"][i]) == 2 * CLIP_DIM  # float16
        text = caption or "a"
        inputs = {**processor(images=[image], return_tensors="pt"), **tokenizer([text], return_tensors="pt")}
        with torch.no_grad():
            ref = clip._model(**inputs)  # CLIPModel.forward: normalised embeds, logits = scale * cosine
        expected = ref.image_embeds[0].numpy()
        assert np.abs(stored - expected).max() < 2e-3 and abs(np.linalg.norm(stored) - 1) < 2e-3
        cosine = float(ref.logits_per_image[0, 0] / clip._model.logit_scale.detach().exp())
        if caption:
            assert out["clip_score"][i] == pytest.approx(cosine, abs=1e-5)
        else:
            assert out["clip_score"][i] is None  # no caption, no score
    assert out["clip_score_dense"] == [None] * 4  # no caption store joined
    present, matrix = embedding_matrix(out["embedding"])
    assert present.tolist() == [0, 1, 2, 3] and matrix.shape == (4, CLIP_DIM)


def test_clip_dense_caption_score_uses_the_caption_store(clip):
    images = _images()[:2]
    batch = _batch_with_captions(images, CAPTIONS[:2])
    batch["caption.status"] = ["ok", "error"]
    batch["caption.caption"] = ["a red cup of coffee", None]
    out = clip(batch)
    # row 0's dense caption is row 1's original caption: the same text embedding, so the same cosine arises
    swapped = clip(_batch_with_captions(images[:1], ["a red cup of coffee"]))
    assert out["clip_score_dense"][0] == pytest.approx(swapped["clip_score"][0], abs=1e-6)
    assert out["clip_score_dense"][1] is None


def test_aesthetic_is_the_laion_mlp_on_the_stored_embedding(clip, tmp_path):
    path = tiny_aesthetic(tmp_path)
    clip_out = clip(_batch_with_captions(_images(), CAPTIONS))
    batch = {"key": clip_out["key"], "kind": ["image"] * 4, "image": [None] * 4, "meta": ["{}"] * 4,
             "clip.status": ["ok", "ok", "error", "ok"], "clip.embedding": clip_out["embedding"]}
    annotator = AestheticAnnotator(model=path)
    out = annotator(batch)
    assert out["status"] == ["ok", "ok", "no_embedding", "ok"] and out["model_id"][0] == path
    state = torch.load(path, weights_only=True)  # by hand: five affine layers, no activations
    for i in (0, 1, 3):
        x = torch.from_numpy(decode_embedding(clip_out["embedding"][i]))
        x = x / x.norm()
        for layer in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{layer}.weight"].T + state[f"layers.{layer}.bias"]
        assert out["score"][i] == pytest.approx(float(x[0]), abs=1e-4)
    assert len(set(out["score"][i] for i in (0, 1, 3))) == 3
    with pytest.raises(ValueError, match="ViT-L/14"):
        annotator.scores(np.ones((1, CLIP_DIM + 1), np.float32))


def test_nsfw_probability_per_image_and_max_over_scene_views(tmp_path):
    folder = tiny_image_classifier(tmp_path / "nsfw", labels=("normal", "nsfw"))
    annotator = NsfwAnnotator(model=folder, num_gpus=0)
    annotator.setup()
    images = _images()
    out = annotator(image_batch(images))
    assert out["status"] == ["ok"] * 4 and out["model_id"][0] == folder
    processor = annotator._processor
    with torch.no_grad():
        logits = annotator._model(**processor(images=images, return_tensors="pt")).logits
    expected = logits.softmax(-1)[:, 1].tolist()
    assert out["score"] == pytest.approx(expected, abs=1e-5)
    scene = image_batch(images[:1], kind="scene")
    scene["image"] = [None]
    scene["view_images"] = [[encode(im) for im in images[:3]]]
    assert annotator(scene)["score"][0] == pytest.approx(max(expected[:3]), abs=1e-5)
    with pytest.raises(ValueError, match="no single label 'unsafe'"):
        NsfwAnnotator(model=folder, label="unsafe", num_gpus=0).setup()


def test_watermark_is_the_same_classifier_on_its_own_label(tmp_path):
    folder = tiny_image_classifier(tmp_path / "wm", labels=("clear", "watermark"), seed=3)
    out = WatermarkAnnotator(model=folder, num_gpus=0)(image_batch(_images()[:2]))
    assert out["status"] == ["ok", "ok"] and all(0.0 <= s <= 1.0 for s in out["score"])


def test_missing_checkpoints_fail_at_setup_with_one_line():
    code = (
        "from onegen.annotators.image_scores import WatermarkAnnotator\n"
        "from onegen.annotators.clip import ClipAnnotator\n"
        "import sys\n"
        "try:\n    ClipAnnotator(model='nobody-here/no-clip', num_gpus=0).setup()\n"
        "except Exception as e:\n    print(type(e).__name__, e, file=sys.stderr)\n"
        "WatermarkAnnotator(num_gpus=0).setup()\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert any(line.startswith("MissingCheckpointError") and "nobody-here/no-clip" in line for line in lines)
    assert lines[-1].startswith("onegen.core.weights.MissingCheckpointError")
    assert "no watermark classifier checkpoint configured" in lines[-1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_clip_matches_cpu(clip):
    gpu = ClipAnnotator(model=clip.model, num_gpus=1, half=True)
    gpu.setup()
    assert gpu._device == "cuda"
    batch = _batch_with_captions(_images(), CAPTIONS)
    on_gpu, on_cpu = gpu(batch), clip(batch)
    for a, b in zip(on_gpu["embedding"], on_cpu["embedding"], strict=True):
        assert float(decode_embedding(a) @ decode_embedding(b)) > 0.99
    for a, b in zip(on_gpu["clip_score"], on_cpu["clip_score"], strict=True):
        assert (a is None and b is None) or abs(a - b) < 0.02
