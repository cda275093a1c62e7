"""HedAnnotator on a randomly initialised ControlNetHED network saved as ControlNetHED.pth (CPU, offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.hed import HedAnnotator, detect_size  # noqa: E402
from onegen.core.image_codec import decode_rgb  # noqa: E402
from onegen.core.weights import MissingCheckpointError  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_hed  # noqa: E402
from tests.conftest import image_batch as _batch  # noqa: E402


@pytest.fixture(scope="module")
def hed_dir(tmp_path_factory) -> str:
    return tiny_hed(tmp_path_factory.mktemp("hed_annotators"))  # the file layout of lllyasviel/Annotators


@pytest.fixture(scope="module")
def annotator(hed_dir) -> HedAnnotator:
    ann = HedAnnotator(model=hed_dir, detect_resolution=128, num_gpus=0)
    ann.setup()
    return ann


def test_detect_size_matches_controlnet_aux():
    from controlnet_aux.util import resize_image

    for h, w in [(128, 192), (100, 150), (512, 512), (300, 200), (77, 501)]:
        assert detect_size(h, w, 128) == resize_image(np.zeros((h, w, 3), np.uint8), 128).shape[:2]


def test_matches_controlnet_aux_detector(annotator, hed_dir):
    """Same weights through controlnet_aux's HEDdetector: equal up to its uint8 truncation (one level)."""
    from controlnet_aux.hed import HEDdetector

    detector = HEDdetector.from_pretrained(hed_dir)
    image = skdata.astronaut()[::4, ::4][:128, :].copy()  # 128 x 128: no resize on either path
    wide = skdata.coffee()[:128 * 2:2, :192 * 2:2].copy()  # 128 x 192
    ours = annotator.predict([image, wide, image])
    for im, edge in [(image, ours[0]), (wide, ours[1])]:
        ref = detector(im, detect_resolution=128, image_resolution=128, output_type="np")[..., 0]
        assert ref.shape == edge.shape
        assert np.abs(edge.astype(int) - ref).max() <= 1
        assert edge.std() > 0  # a real map, not a constant
    assert (ours[0] == ours[2]).all()  # batch position does not change the result


def test_resized_path_close_to_controlnet_aux(annotator, hed_dir):
    """Source sizes that need resizing: torch interpolation vs OpenCV AREA/LANCZOS, mean error small."""
    from controlnet_aux.hed import HEDdetector

    detector = HEDdetector.from_pretrained(hed_dir)
    image = skdata.chelsea()[::2, ::2].copy()  # 150 x 226 -> detection 128 x 192
    edge = annotator.predict([image])[0]
    ref = detector(image, detect_resolution=128, image_resolution=128, output_type="np")[..., 0]
    ref = np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(ref)[None, None].float(), size=image.shape[:2], mode="bilinear"
    )[0, 0])  # fmt: skip
    assert edge.shape == image.shape[:2]
    assert np.abs(edge - ref).mean() < 3.0  # of 255


def test_annotate_outputs_and_constant_image(annotator):
    images = [skdata.rocket()[::4, ::4].copy(), np.full((64, 80, 3), 90, np.uint8)]
    out = annotator(_batch(images))
    assert out["status"] == ["ok", "ok"]  # a constant image has no edges, which is a valid answer
    for image, png in zip(images, out["condition"], strict=True):
        cond = decode_rgb(png)
        assert cond.shape == image.shape
        assert (cond[..., 0] == cond[..., 2]).all()
    again = annotator(_batch(images))
    assert again["condition"] == out["condition"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(MissingCheckpointError, match="ControlNetHED.pth"):
        HedAnnotator(model=str(tmp_path), num_gpus=0).setup()
    with pytest.raises(MissingCheckpointError, match="nobody-here/no-annotators") as info:
        HedAnnotator(model="nobody-here/no-annotators", num_gpus=0).setup()
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_close_to_cpu(hed_dir, annotator):
    gpu = HedAnnotator(model=hed_dir, detect_resolution=128, num_gpus=1, half=True)
    gpu.setup()
    image = skdata.coffee()[:128 * 2:2, :192 * 2:2].copy()
    assert np.abs(gpu.predict([image])[0].astype(int) - annotator.predict([image])[0]).mean() < 2.0
