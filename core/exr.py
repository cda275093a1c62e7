"""A small OpenEXR codec (numpy + zlib): single-part scanline files, NONE / RLE / ZIPS / ZIP compression,
HALF / FLOAT / UINT channels. For reading rendered depth (G-Objaverse's `_nd.exr`) where OpenCV is built
without OpenEXR (`cv2.getBuildInformation()`: "OpenEXR: NO", as the opencv-python 5.1 wheel here is), and
for writing test fixtures in that format.

The layout is OpenEXR's "File Layout" document (F. Kainz, ILM; the library is the reference): magic
20000630 and a version field (int32, little-endian), a header of attributes `name\\0 type\\0 size value`
ended by a NUL byte (chlist, compression, dataWindow, ... are required), then a table of uint64 chunk
offsets, then chunks `int32 y, int32 size, data`. A chunk holds `LINES[compression]` scanlines; each
scanline holds every channel in the chlist's (alphabetical) order, `width` values each. ZIP / ZIPS /
RLE data are, before deflate (or run-length coding), split into the even bytes then the odd bytes and
delta-coded (`d[i] = raw[i] - raw[i-1] + 128`), as OpenEXR's ImfZip / ImfRle code them; a chunk whose
coded size is not smaller than its raw size is stored raw.

`read_exr(data) -> {channel name: (H, W) array}`; `write_exr(channels, compression) -> bytes`.
Unsupported files (tiled, multipart, deep, PIZ / PXR24 / B44 / DWA compression, subsampled channels)
raise `ValueError` naming what is unsupported. OpenCV's `imread(..., IMREAD_UNCHANGED)` of a 4-channel
file returns the channels in B, G, R, A order (channels named so); `read_exr` returns them by name.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = 20000630
COMPRESSIONS = {0: "NONE", 1: "RLE", 2: "ZIPS", 3: "ZIP", 4: "PIZ", 5: "PXR24", 6: "B44", 7: "B44A", 8: "DWAA",
                9: "DWAB"}
LINES = {"NONE": 1, "RLE": 1, "ZIPS": 1, "ZIP": 16}  # scanlines per chunk of the supported compressions
PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}  # UINT, HALF, FLOAT


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    return data[at:end].decode("latin-1"), end + 1


def _header(data: bytes) -> tuple[dict[str, tuple[str, bytes]], int]:
    """{attribute name: (type, raw value)} and the offset just after the header."""
    magic, version = struct.unpack_from("<ii", data, 0)
    if magic != MAGIC:
        raise ValueError("not an OpenEXR file (bad magic number)")
    if version & 0x1A00:  # tiled (0x200), deep (0x800), multipart (0x1000)
        raise ValueError(f"OpenEXR version flags {version:#x}: only single-part scanline files are supported")
    at, attributes = 8, {}
    while data[at] != 0:
        name, at = _cstring(data, at)
        kind, at = _cstring(data, at)
        (size,) = struct.unpack_from("<i", data, at)
        attributes[name] = (kind, data[at + 4:at + 4 + size])
        at += 4 + size
    return attributes, at + 1


def _channels(raw: bytes) -> list[tuple[str, np.dtype]]:
    at, channels = 0, []
    while raw[at] != 0:
        name, at = _cstring(raw, at)
        pixel_type, _linear, x_sampling, y_sampling = struct.unpack_from("<iB3xii", raw, at)
        at += 16
        if (x_sampling, y_sampling) != (1, 1):
            raise ValueError(f"channel {name}: subsampled channels are not supported")
        channels.append((name, PIXEL_TYPES[pixel_type]))
    return channels


def _unpredict(coded: bytes) -> bytes:
    """Undo ImfZip's byte split and delta coding."""
    t = np.frombuffer(coded, dtype=np.uint8)
    t = ((np.cumsum(t.astype(np.int64) - 128) + 128) & 0xFF).astype(np.uint8)  # t[0] raw, then running deltas
    half = (len(t) + 1) // 2
    out = np.empty_like(t)
    out[0::2], out[1::2] = t[:half], t[half:]
    return out.tobytes()


def _predict(raw: bytes) -> bytes:
    """ImfZip's byte split (even bytes, then odd) and delta coding, before deflate."""
    b = np.frombuffer(raw, dtype=np.uint8)
    t = np.concatenate([b[0::2], b[1::2]]).astype(np.int64)
    coded = t.copy()
    coded[1:] = (t[1:] - t[:-1] + 128) & 0xFF
    return coded.astype(np.uint8).tobytes()


def _rle_decode(coded: bytes) -> bytes:
    out, at = bytearray(), 0
    while at < len(coded):
        count = struct.unpack_from("<b", coded, at)[0]
        at += 1
        if count < 0:  # -count literal bytes
            out += coded[at:at - count]
            at -= count
        else:  # the next byte, count + 1 times
            out += coded[at:at + 1] * (count + 1)
            at += 1
    return bytes(out)


def read_exr(data: bytes) -> dict[str, np.ndarray]:
    """Every channel of a scanline OpenEXR file as (H, W) arrays of its own type (see the module docstring)."""
    attributes, at = _header(data)
    compression = COMPRESSIONS.get(attributes["compression"][1][0], "unknown")
    if compression not in LINES:
        raise ValueError(f"OpenEXR {compression} compression is not supported (NONE, RLE, ZIPS, ZIP are)")
    x0, y0, x1, y1 = struct.unpack("<iiii", attributes["dataWindow"][1])
    width, height = x1 - x0 + 1, y1 - y0 + 1
    channels = _channels(attributes["channels"][1])
    lines = LINES[compression]
    chunks = -(-height // lines)
    offsets = struct.unpack_from(f"<{chunks}Q", data, at)
    line_bytes = sum(dtype.itemsize for _, dtype in channels) * width
    planes = {name: np.empty((height, width), dtype=dtype) for name, dtype in channels}
    for offset in offsets:
        y, size = struct.unpack_from("<ii", data, offset)
        block = data[offset + 8:offset + 8 + size]
        first = y - y0
        rows = min(lines, height - first)
        expected = rows * line_bytes
        if size < expected and compression != "NONE":
            block = _unpredict(_rle_decode(block) if compression == "RLE" else zlib.decompress(block))
        if len(block) != expected:
            raise ValueError(f"OpenEXR chunk at line {y}: {len(block)} bytes, expected {expected}")
        at_byte = 0
        for row in range(rows):
            for name, dtype in channels:
                count = width * dtype.itemsize
                planes[name][first + row] = np.frombuffer(block, dtype=dtype, count=width, offset=at_byte)
                at_byte += count
    return planes


def _attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def write_exr(channels: dict[str, np.ndarray], compression: str = "ZIP") -> bytes:
    """A scanline OpenEXR file of (H, W) float16 / float32 / uint32 planes (all one size), NONE / ZIPS / ZIP."""
    if compression not in ("NONE", "ZIPS", "ZIP"):
        raise ValueError(f"write_exr: compression {compression!r} (NONE, ZIPS, ZIP)")
    names = sorted(channels)
    types = {np.dtype("<u4"): 0, np.dtype("<f2"): 1, np.dtype("<f4"): 2}
    planes = [np.ascontiguousarray(channels[n], dtype=np.asarray(channels[n]).dtype.newbyteorder("<")) for n in names]
    height, width = planes[0].shape
    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", types[p.dtype], 0, 1, 1)
                      for n, p in zip(names, planes, strict=True)) + b"\0"
    box = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    header = (struct.pack("<ii", MAGIC, 2) + _attribute("channels", "chlist", chlist)
              + _attribute("compression", "compression", bytes([{"NONE": 0, "ZIPS": 2, "ZIP": 3}[compression]]))
              + _attribute("dataWindow", "box2i", box) + _attribute("displayWindow", "box2i", box)
              + _attribute("lineOrder", "lineOrder", b"\0") + _attribute("pixelAspectRatio", "float", struct.pack("<f", 1))
              + _attribute("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0))
              + _attribute("screenWindowWidth", "float", struct.pack("<f", 1)) + b"\0")
    lines = LINES[compression]
    chunks = []
    for y in range(0, height, lines):
        raw = b"".join(p[row].tobytes() for row in range(y, min(y + lines, height)) for p in planes)
        coded = raw if compression == "NONE" else zlib.compress(_predict(raw))
        data = coded if len(coded) < len(raw) else raw
        chunks.append(struct.pack("<ii", y, len(data)) + data)
    start = len(header) + 8 * len(chunks)
    offsets, at = [], start
    for chunk in chunks:
        offsets.append(at)
        at += len(chunk)
    return header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(chunks)
