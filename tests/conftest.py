"""Shared test set-up: offline environment, small real inputs, one local Ray per session.

Offline by default: no hub, no YOLO downloads, no Ray usage stats. Ray is started once, on 2 CPUs
with a capped object store, by the `ray_local` fixture; every test that uses it has a timeout.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="onegen-yolo-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import io  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from onegen.pipelines.runtime.ray_setup import RayConfig  # noqa: E402

TEST_RAY = RayConfig(num_cpus=2, object_store_memory=300 * 2**20, progress_bars=False)


def pytest_collection_modifyitems(config, items):
    """gpu / weights tests skip cleanly where there is no CUDA device / no real weights."""
    import torch

    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray for the whole session (2 CPUs, 300 MiB object store), loopback only."""
    from onegen.pipelines.runtime.ray_setup import init_ray, shutdown_ray

    init_ray(TEST_RAY)
    yield TEST_RAY
    shutdown_ray()


def photo(name: str) -> np.ndarray:
    """A real photo bundled with scikit-image, as (H, W, 3) uint8."""
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels[..., :3]


def weights_cached(model_id: str) -> bool:
    """True when `model_id` resolves offline (local path or HF cache): gates the `weights` tests."""
    from onegen.core.weights import MissingCheckpointError, resolve_checkpoint

    try:
        resolve_checkpoint(model_id)
    except MissingCheckpointError:
        return False
    return True


def image_batch(images: list[np.ndarray], kind: str = "image", caption: str = "", meta: str = "{}",
                key_prefix: str = "k") -> dict[str, list]:
    """A dict-of-columns catalog batch of PNG-encoded images, as the annotation runner hands annotators."""
    n = len(images)
    return {
        "key": [f"{key_prefix}{i}" for i in range(n)],
        "kind": [kind] * n,
        "image": [encode(im) for im in images],
        "caption_original": [caption] * n,
        "meta": [meta] * n,
        "width": [im.shape[1] for im in images],
        "height": [im.shape[0] for im in images],
    }


def encode(pixels: np.ndarray, fmt: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
          "immunohistochemistry", "camera", "coins", "moon")


def write_photo_folder(folder: Path, count: int = 20, size: int = 96) -> list[str]:
    """`count` small real-photo crops in a nested folder, with captions in metadata.jsonl; returns names."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nested").mkdir(exist_ok=True)
    names, metadata = [], []
    for index in range(count):
        base = photo(PHOTOS[index % len(PHOTOS)])
        y, x = (index * 7) % (base.shape[0] - size), (index * 11) % (base.shape[1] - size)
        crop = np.ascontiguousarray(base[y : y + size, x : x + size])
        name = f"nested/img{index:03d}.png" if index % 3 == 0 else f"img{index:03d}.jpg"
        Image.fromarray(crop).save(folder / name)
        names.append(name)
        if index % 4:
            metadata.append({"file_name": name, "text": f"a crop of the {PHOTOS[index % len(PHOTOS)]} photo"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metadata))
    return names
