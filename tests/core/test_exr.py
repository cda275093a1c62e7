"""core/exr.py: scanline OpenEXR written and read back exactly (NONE, ZIPS, ZIP; half, float, uint), run-length
chunks decoded, and what it does not read refused with a line naming it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from onegen.core.exr import _predict, read_exr, write_exr

PYTHON_EXR = Path("/root/.pyenv/versions/3.11.7/lib/python3.11/test/imghdrdata/python.exr")  # CPython's, NONE


@pytest.mark.parametrize("compression", ["NONE", "ZIPS", "ZIP"])
def test_round_trip(compression):
    rng = np.random.default_rng(0)
    planes = {"R": rng.standard_normal((37, 21)).astype(np.float32), "A": rng.random((37, 21)).astype(np.float16),
              "Z": rng.integers(0, 2**32 - 1, (37, 21), dtype=np.uint32)}
    data = write_exr(planes, compression)
    back = read_exr(data)
    assert sorted(back) == ["A", "R", "Z"]
    for name, plane in planes.items():
        assert back[name].dtype == plane.dtype
        np.testing.assert_array_equal(back[name], plane)
    if compression != "NONE":
        smooth = {"A": np.zeros((40, 40), np.float32)}
        assert len(write_exr(smooth, compression)) < len(write_exr(smooth, "NONE")) / 4  # really deflated


def test_rle_chunks_are_decoded():
    plane = np.full((2, 6), 1.5, dtype=np.float16)  # 2 lines of 6 halves: runs, so RLE is shorter than raw
    data = bytearray(write_exr({"Y": plane}, "NONE"))
    header_end = data.index(struct.pack("<Q", len(data) - 2 * (8 + 12)))  # the offset table starts there
    coded = _predict(plane[0].tobytes())
    runs, at = [], 0
    while at < len(coded):  # ImfRle's runs: (count - 1, byte)
        end = at
        while end + 1 < len(coded) and coded[end + 1] == coded[at] and end - at < 126:
            end += 1
        runs.append(struct.pack("<b", end - at) + coded[at:at + 1])
        at = end + 1
    rle = b"".join(runs)
    assert len(rle) < plane[0].nbytes
    chunks = b"".join(struct.pack("<ii", y, len(rle)) + rle for y in range(2))
    start = header_end + 16
    rebuilt = bytes(data[:header_end]) + struct.pack("<QQ", start, start + 8 + len(rle)) + chunks
    rebuilt = rebuilt.replace(b"compression\0compression\0\x01\0\0\0\0", b"compression\0compression\0\x01\0\0\0\x01")
    np.testing.assert_array_equal(read_exr(rebuilt)["Y"], plane)


def test_unsupported_files_are_refused_by_name():
    data = write_exr({"A": np.zeros((4, 4), np.float32)}, "NONE")
    piz = data.replace(b"compression\0compression\0\x01\0\0\0\0", b"compression\0compression\0\x01\0\0\0\x04")
    with pytest.raises(ValueError, match="PIZ compression is not supported"):
        read_exr(piz)
    with pytest.raises(ValueError, match="not an OpenEXR file"):
        read_exr(b"\x89PNG" + data[4:])


@pytest.mark.skipif(not PYTHON_EXR.exists(), reason="CPython's test EXR is not on this machine")
def test_a_file_written_by_openexr_reads():
    planes = read_exr(PYTHON_EXR.read_bytes())
    assert sorted(planes) == ["A", "B", "G", "R"] and planes["A"].shape == (16, 16)
    assert planes["A"].dtype == np.float16 and 0 <= planes["R"].min() and planes["A"].max() == 1
