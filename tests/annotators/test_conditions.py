"""Weight-free condition annotators and the annotator contract they run under."""

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa
import pytest

from onegen.annotators.base import Annotator, RowError
from onegen.annotators.conditions import BlurAnnotator, CannyAnnotator, InpaintAnnotator, LowresAnnotator
from onegen.core.image_codec import decode_rgb
from tests.conftest import encode, photo


def _batch(images, kinds=None):
    n = len(images)
    return {"key": [f"src-{i:04d}" for i in range(n)], "kind": kinds or ["image"] * n, "image": images,
            "caption_original": [None] * n, "meta": ["{}"] * n, "width": [64] * n, "height": [64] * n}


PHOTO = photo("astronaut")[:128, :160]


@pytest.mark.parametrize("annotator", [CannyAnnotator(), BlurAnnotator(), LowresAnnotator(), InpaintAnnotator()])
def test_outputs_are_deterministic_and_at_source_resolution(annotator):
    batch = _batch([encode(PHOTO), encode(photo("coffee")[:128, :160])])
    first, second = annotator(batch), annotator(batch)
    assert first == second  # identical bytes on a rerun
    assert first["status"] == ["ok", "ok"] and first["annotator_version"] == [annotator.version] * 2
    assert pa.Table.from_pydict(first, schema=annotator.schema()).num_rows == 2
    assert decode_rgb(first["condition"][0]).shape == PHOTO.shape


def test_canny_matches_opencv():
    out = CannyAnnotator(low=50, high=150)(_batch([encode(PHOTO)]))
    expected = cv2.Canny(cv2.cvtColor(PHOTO, cv2.COLOR_RGB2GRAY), 50, 150)
    assert (decode_rgb(out["condition"][0])[..., 0] == expected).all()


def test_flat_image_gets_a_reason_not_a_crash():
    out = CannyAnnotator()(_batch([encode(np.full((64, 64, 3), 90, np.uint8))]))
    assert out["status"] == ["no_edges"] and out["condition"] == [None]


def test_blur_and_lowres_parameters_are_drawn_per_key():
    batch = _batch([encode(PHOTO)] * 6)
    sigmas = BlurAnnotator()(batch)["sigma"]
    factors = LowresAnnotator()(batch)["factor"]
    assert all(1.0 <= s <= 5.0 for s in sigmas) and len(set(sigmas)) > 1
    assert set(factors) <= {2, 4, 8}
    expected = cv2.GaussianBlur(PHOTO, (0, 0), sigmaX=sigmas[0], sigmaY=sigmas[0])
    blurred = decode_rgb(BlurAnnotator()(_batch([encode(PHOTO)]))["condition"][0])
    assert np.abs(blurred.astype(int) - expected).mean() < 2  # JPEG q95 of the OpenCV blur


def test_inpaint_fills_exactly_the_mask_black_by_default_or_with_the_configured_value():
    out = InpaintAnnotator()(_batch([encode(PHOTO)]))
    masked, mask = decode_rgb(out["condition"][0]), decode_rgb(out["mask"][0])[..., 0]
    assert 0 < out["coverage"][0] < 1 and out["annotator_version"] == ["2"]
    assert (masked[mask > 0] == 0).all()  # the released demo's inpainting input: black
    assert (masked[mask == 0] == PHOTO[mask == 0]).all()
    grey = InpaintAnnotator(fill=127)(_batch([encode(PHOTO)]))
    assert grey["mask"] == out["mask"]  # the same mask, only the fill differs
    grey_masked = decode_rgb(grey["condition"][0])
    assert (grey_masked[mask > 0] == 127).all() and (grey_masked[mask == 0] == PHOTO[mask == 0]).all()
    with pytest.raises(ValueError, match="0..255"):
        InpaintAnnotator(fill=300)


@dataclass
class _Fragile(Annotator):
    """Fails the whole batch whenever the row keyed 'src-0002' is in it (a poison row), with an exception
    type it declares as a data error."""

    name: ClassVar[str] = "fragile"
    output_schema: ClassVar[pa.Schema] = pa.schema([("mean", pa.float32())])
    data_errors: ClassVar[tuple[type[Exception], ...]] = (ValueError,)
    calls: int = 0

    def annotate(self, rows):
        self.calls += 1
        if any(r["key"] == "src-0002" for r in rows):
            raise ValueError("unreadable sensor data (a poison row)")
        return [RowError("too dark", "dark") if r["image"].mean() < 10 else {"mean": float(r["image"].mean())}
                for r in rows]


def test_contract_isolates_failures_and_records_every_row():
    images = [encode(PHOTO), encode(np.zeros((64, 64, 3), np.uint8)), encode(PHOTO), b"garbage", encode(PHOTO)]
    annotator = _Fragile()
    out = annotator(_batch(images, kinds=["image", "image", "image", "image", "scene"]))
    assert out["key"] == [f"src-{i:04d}" for i in range(5)]
    assert out["status"] == ["ok", "dark", "error", "error", "skipped"]
    assert "poison row" in out["error"][2] and out["error"][3].startswith("decode_error")
    assert out["mean"][0] == pytest.approx(float(PHOTO.mean())) and out["mean"][2] is None
    assert annotator.calls > 1  # the failing batch was halved and retried
