"""core/exr.py over the OpenEXR library: planes written and read back exactly for every lossless compression
(half, float, uint), a real OpenEXR file from CPython's test data read by name, and garbage refused with a line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onegen.core.exr import read_exr, write_exr

PYTHON_EXR = Path("/root/.pyenv/versions/3.11.7/lib/python3.11/test/imghdrdata/python.exr")  # CPython's test file


@pytest.mark.parametrize("compression", ["NONE", "RLE", "ZIPS", "ZIP", "PIZ"])
def test_round_trip(compression):
    rng = np.random.default_rng(0)
    planes = {"R": rng.standard_normal((37, 21)).astype(np.float32), "A": rng.random((37, 21)).astype(np.float16),
              "Z": rng.integers(0, 2**32 - 1, (37, 21), dtype=np.uint32)}
    back = read_exr(write_exr(planes, compression))
    assert sorted(back) == ["A", "R", "Z"]
    for name, plane in planes.items():
        assert back[name].dtype == plane.dtype and back[name].shape == plane.shape
        np.testing.assert_array_equal(back[name], plane)


def test_compression_really_compresses():
    smooth = {"A": np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))}
    assert len(write_exr(smooth, "ZIP")) < len(write_exr(smooth, "NONE")) / 4


@pytest.mark.skipif(not PYTHON_EXR.exists(), reason="CPython's test data is not installed here")
def test_a_file_written_by_openexr_elsewhere():
    from PIL import Image

    channels = read_exr(PYTHON_EXR.read_bytes())
    assert set(channels) >= {"R", "G", "B", "A"}
    png = np.asarray(Image.open(PYTHON_EXR.with_suffix(".png")).convert("RGBA"), dtype=np.float64) / 255
    assert channels["A"].shape == png.shape[:2]
    assert np.abs(channels["A"].astype(np.float64) - png[..., 3]).max() < 1e-2  # alpha is linear in both


def test_garbage_is_refused_with_a_line():
    with pytest.raises(ValueError, match="not a readable OpenEXR file"):
        read_exr(b"not an exr" * 10)
