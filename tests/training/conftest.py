"""Shared fixtures: tiny raw shards (64 px), tiny T5 + VAE checkpoints, and their precomputed shards."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import io  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from onegen.manifests.shard_writer import Sample, ShardWriter  # noqa: E402

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40)]
WORDS = ["red cat", "green tree", "blue car", "yellow dog"]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(i: int, size: int = 64) -> np.ndarray:
    """A distinct picture per i: a coloured square on a gradient."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1) * (0.3 + 0.15 * (i % 4))
    lo, hi = 8 + 4 * i, 40 + 2 * i
    pixels[lo:hi, lo:hi] = COLOURS[i % 4]
    return pixels.clip(0, 255).astype(np.uint8)


def write_shards(out: str, n: int = 4) -> str:
    """n text2image + n canny2image samples (64 px) in two shards, as `onegen build` writes them."""
    for task in ("text2image", "canny2image"):
        writer = ShardWriter(out, "onegen", task, samples_per_shard=n, max_shard_bytes=1 << 30)
        for i in range(n):
            prompt = f"[[{task}]] a photo of the {WORDS[i % 4]}"
            roles = ["image"] if task == "text2image" else ["image", "condition"]
            members = [("img0.png", _png(_image(i)))]
            if task == "canny2image":
                members.append(("img1.png", _png(255 - _image(i))))
            meta = {"task": task, "n_views": len(roles), "roles": roles, "prompt": prompt, "source_keys": [f"k{i}"]}
            members += [("txt", prompt.encode()), ("json", json.dumps(meta).encode())]
            writer.add(Sample(key=f"s{i}-{task}", task=task, prompt=prompt, source="test", members=members,
                              n_views=len(roles), source_keys=[f"k{i}"], annotators=[], width=64, height=64,
                              ordinal=i))
        writer.finish()
    return out


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    from onegen.pipelines.demo.train_step import build_tiny_text_encoder, build_tiny_vae

    root = tmp_path_factory.mktemp("checkpoints")
    return {"t5": build_tiny_text_encoder(root / "t5"), "vae": build_tiny_vae(root / "vae")}


@pytest.fixture(scope="session")
def raw_shards(tmp_path_factory):
    return write_shards(str(tmp_path_factory.mktemp("raw")))


@pytest.fixture(scope="session")
def latent_shards(tmp_path_factory, raw_shards, checkpoints):
    from onegen.training.precompute import PrecomputeConfig, run_precompute

    out = str(tmp_path_factory.mktemp("latents"))
    run_precompute(PrecomputeConfig(raw_shards, out, checkpoints["t5"], checkpoints["vae"], ((64, 64),)))
    return out
