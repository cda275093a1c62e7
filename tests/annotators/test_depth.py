"""DepthAnnotator on a tiny random Depth Anything checkpoint (CPU, offline)."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.depth import DepthAnnotator, ResizeSpec  # noqa: E402
from onegen.core.image_codec import decode_png16, decode_rgb  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_depth  # noqa: E402
from tests.conftest import image_batch as _batch  # noqa: E402
from tests.conftest import weights_cached  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return tiny_depth(tmp_path_factory.mktemp("depth_tiny"))


@pytest.fixture(scope="module")
def annotator(tiny_dir) -> DepthAnnotator:
    ann = DepthAnnotator(model=tiny_dir, num_gpus=0, batch_size=8)
    ann.setup()
    return ann


def _images() -> list[np.ndarray]:
    astro = skdata.astronaut()  # 512 x 512
    coffee = skdata.coffee()  # 400 x 600
    return [
        np.asarray(Image.fromarray(astro).resize((97, 131))),
        np.asarray(Image.fromarray(coffee).resize((150, 100))),
        np.asarray(Image.fromarray(astro).resize((97, 131)))[::-1].copy(),  # same size as row 0
        np.asarray(Image.fromarray(coffee).resize((64, 200))),
    ]


def test_resize_spec_matches_library_sizes(tiny_dir):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_dir)
    spec = ResizeSpec.from_processor(processor)
    for h, w in [(131, 97), (100, 150), (200, 64), (518, 700), (40, 300)]:
        image = np.zeros((h, w, 3), np.uint8)
        expected = processor(images=[image], return_tensors="pt")["pixel_values"].shape[-2:]
        assert spec.output_size(h, w) == tuple(expected), (h, w)
    assert spec.output_size(10, 1000) == (14, 70)  # width fitted; the library would give height 0 here


def test_matches_library_processor_and_postprocess(annotator, tiny_dir):
    """Batched device preprocessing + our postprocess == processor + post_process_depth_estimation."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_dir)
    images = _images()
    ours = annotator.predict(images)  # one call, mixed sizes
    for image, (norm, low, high) in zip(images, ours, strict=True):
        inputs = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            outputs = annotator._model(**inputs)
        ref = processor.post_process_depth_estimation(outputs, target_sizes=[image.shape[:2]])[0]
        ref = ref["predicted_depth"].numpy()
        assert norm.shape == image.shape[:2]
        # tolerance: float32 batched-vs-single forward noise, relative to the map's range
        span = ref.max() - ref.min()
        assert abs(low - ref.min()) <= 1e-4 * span and abs(high - ref.max()) <= 1e-4 * span
        assert np.abs(norm - (ref - ref.min()) / span).max() < 1e-4


def test_condition_is_grey_inverse_depth_min_max_per_image_near_bright(annotator, tiny_dir):
    """The 8-bit condition is round(255 * (raw - min) / (max - min)) of the model's own (inverse) depth,
    library-postprocessed: white where the model's output is largest (nearest), black at its smallest."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_dir)
    image = _images()[1]
    cond = decode_rgb(annotator(_batch([image]))["condition"][0]).astype(int)  # (H, W, 3)
    with torch.no_grad():
        outputs = annotator._model(**processor(images=[image], return_tensors="pt"))
    raw = processor.post_process_depth_estimation(outputs, target_sizes=[image.shape[:2]])[0]["predicted_depth"].numpy()
    expected = np.round(255 * (raw - raw.min()) / (raw.max() - raw.min()))
    assert np.abs(cond[..., 0] - expected).max() <= 1 and (cond == cond[..., :1]).all()
    assert cond[..., 0].flat[raw.argmax()] == 255 and cond[..., 0].flat[raw.argmin()] == 0


def test_outputs_round_trip(annotator):
    images = _images()
    out = annotator(_batch(images))
    assert out["status"] == ["ok"] * len(images)
    assert out["model_id"][0] == annotator.model
    for i, image in enumerate(images):
        depth16 = decode_png16(out["png16"][i])
        cond = decode_rgb(out["condition"][i])
        assert depth16.shape == image.shape[:2] and cond.shape == image.shape
        assert depth16.min() == 0 and depth16.max() == 65535  # per-image normalisation
        assert (cond[..., 0] == cond[..., 1]).all() and (cond[..., 1] == cond[..., 2]).all()
        # the 8-bit condition is the 16-bit map requantised
        assert np.abs(cond[..., 0].astype(int) - np.round(depth16 / 257.0)).max() <= 1
        assert out["depth_max"][i] > out["depth_min"][i]
    # reruns give identical bytes
    again = annotator(_batch(images))
    assert again["png16"] == out["png16"] and again["condition"] == out["condition"]


def test_constant_depth_is_degenerate_not_crash(tmp_path):
    ann = DepthAnnotator(model=tiny_depth(tmp_path / "flat", constant_head=True), num_gpus=0)
    ann.setup()
    flat = np.full((40, 60, 3), 128, np.uint8)
    out = ann(_batch([flat, skdata.astronaut()[:100, :100]]))
    assert out["status"] == ["degenerate_depth", "degenerate_depth"]
    assert "constant" in out["error"][0] and out["png16"][0] is None


def test_constant_image_is_recorded(annotator):
    out = annotator(_batch([np.full((30, 50, 3), 7, np.uint8)]))
    assert out["status"][0] in ("ok", "degenerate_depth")
    assert (out["png16"][0] is None) == (out["status"][0] != "ok")


def test_missing_checkpoint_fails_at_setup_with_one_line():
    code = (
        "from onegen.annotators.depth import DepthAnnotator\n"
        "DepthAnnotator(model='nobody-here/no-such-depth-model', num_gpus=0).setup()\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("onegen.core.weights.MissingCheckpointError")
    assert "nobody-here/no-such-depth-model" in last


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_matches_cpu(tiny_dir, annotator):
    gpu = DepthAnnotator(model=tiny_dir, num_gpus=1, half=True)
    gpu.setup()
    assert gpu._device == "cuda"
    images = _images()
    for (norm_gpu, _, _), (norm_cpu, _, _) in zip(gpu.predict(images), annotator.predict(images), strict=True):
        assert np.corrcoef(norm_gpu.ravel(), norm_cpu.ravel())[0, 1] > 0.99


REAL_DEPTH = "depth-anything/Depth-Anything-V2-Small-hf"


@pytest.mark.weights
@pytest.mark.skipif(not weights_cached(REAL_DEPTH), reason=f"{REAL_DEPTH} not in the local HF cache")
def test_real_weights_match_library():
    from transformers import AutoImageProcessor

    ann = DepthAnnotator(model=REAL_DEPTH, num_gpus=1)
    ann.setup()
    image = skdata.astronaut()
    norm, low, high = ann.predict([image])[0]
    processor = AutoImageProcessor.from_pretrained(ann._checkpoint.path)
    inputs = processor(images=[image], return_tensors="pt").to(ann._device, next(ann._model.parameters()).dtype)
    with torch.no_grad():
        ref = processor.post_process_depth_estimation(ann._model(**inputs), target_sizes=[image.shape[:2]])[0]
    ref = ref["predicted_depth"].float().cpu().numpy()
    assert high > low and np.corrcoef(norm.ravel(), ref.ravel())[0, 1] > 0.999
