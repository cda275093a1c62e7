"""Ingest validation: orientation, modes, limits, and reasons for every refusal."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from onegen.core.image_codec import decode_rgb
from onegen.pipelines.sources.image_checks import ImageLimits, Rejected, normalise_image
from tests.conftest import encode, photo

LIMITS = ImageLimits(min_side=32, max_pixels=4_000_000)


def test_rgb_jpeg_is_kept_byte_for_byte():
    data = encode(photo("astronaut"), "JPEG", quality=90)
    result = normalise_image(data, LIMITS)
    assert result.data == data and not result.reencoded and (result.width, result.height) == (512, 512)


def test_exif_orientation_is_applied():
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=100)
    result = normalise_image(buffer.getvalue(), LIMITS)
    upright = decode_rgb(result.data)
    assert result.reencoded and upright.shape[:2] == (80, 40)
    assert upright[:20].mean() > 200 and upright[-20:].mean() < 50  # the white half is now on top


def test_rgba_is_composited_on_white():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 32:, 3] = 255  # right half opaque red, left half fully transparent
    result = normalise_image(encode(rgba), ImageLimits(min_side=32, image_format="png"))
    rgb = decode_rgb(result.data)
    assert (rgb[:, :32] == 255).all()
    assert (rgb[:, 32:] == [255, 0, 0]).all()


@pytest.mark.parametrize("mode", ["CMYK", "P", "L", "I;16"])
def test_other_modes_become_rgb(mode):
    base = Image.fromarray(photo("astronaut")[100:164, 100:164])
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    else:
        image = base.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    result = normalise_image(buffer.getvalue(), ImageLimits(min_side=32, image_format="png"))
    rgb = decode_rgb(result.data)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    if mode == "I;16":  # 16-bit values scaled back to the 8-bit grey they came from
        expected = np.repeat(np.asarray(base.convert("L"))[..., None], 3, axis=2)
    else:
        expected = np.asarray(image.convert("RGB"))
    np.testing.assert_allclose(rgb.astype(int), expected.astype(int), atol=1)


def test_gif_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    rgb = decode_rgb(normalise_image(buffer.getvalue(), LIMITS).data)
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 60


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 10_000])  # past Pillow's error limit; in its warning band
def test_decompression_bomb_refused_from_header(side):
    import warnings

    with pytest.raises(Rejected) as refused, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own DecompressionBombWarning for the 100M-pixel one
        normalise_image(_png_header_only(side, side), LIMITS)
    assert refused.value.reason == "too_many_pixels"  # by our max_pixels check when Pillow only warns


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"definitely not an image", "not_an_image"),
        (encode(np.zeros((16, 100, 3), np.uint8)), "too_small"),
        (encode(photo("chelsea"), "JPEG")[:3000], "decode_error"),
        (_png_header_only(100, 100), "decode_error"),
    ],
)
def test_rejections_have_reasons(data, reason):
    with pytest.raises(Rejected) as refused:
        normalise_image(data, LIMITS)
    assert refused.value.reason == reason


def test_importing_ultralytics_leaves_pillow_alone():
    """ultralytics patches Image.open to pip-install pi-heif on unknown bytes; our import undoes it."""
    from onegen.core.weights import import_yolo

    import_yolo()
    with pytest.raises(Rejected) as refused:
        normalise_image(b"definitely not an image", LIMITS)
    assert refused.value.reason == "not_an_image"


def _full_decode_refuses(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any failure of Pillow's full decode counts as a refusal
        return True
    return False


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"optimize": True, "subsampling": 0}])
def test_kept_jpegs_are_refused_exactly_when_a_full_decode_fails(options):
    """Kept JPEGs are validated at 1/8 scale (image_checks.normalise_image): every truncation point and
    random byte flips of a real photo must give the same verdict as decoding every pixel."""
    buffer = io.BytesIO()
    Image.fromarray(photo("chelsea")).save(buffer, format="JPEG", quality=90, **options)
    data = buffer.getvalue()
    rng = np.random.default_rng(0)
    broken = [data[:cut] for cut in range(0, len(data), 97)]
    for _ in range(150):
        flipped = bytearray(data)
        flipped[rng.integers(0, len(data))] ^= int(rng.integers(1, 256))
        broken.append(bytes(flipped))
    refused_by_full = 0
    for candidate in broken:
        expected = _full_decode_refuses(candidate)
        refused_by_full += expected
        try:
            kept = normalise_image(candidate, LIMITS)
        except Rejected as refused:
            assert expected and refused.reason in ("decode_error", "not_an_image"), refused.reason
            continue
        assert not expected and (kept.width, kept.height) == (451, 300)
    assert 0 < refused_by_full < len(broken)  # both verdicts occur: the comparison means something
