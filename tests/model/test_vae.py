"""VAE wrapper: 16-channel latents of a tiny local AutoencoderKL, scaling and the shift flag."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from onegen.model.vae import Vae  # noqa: E402
from onegen.pipelines.demo.train_step import build_tiny_vae  # noqa: E402


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return build_tiny_vae(tmp_path_factory.mktemp("vae") / "vae")


def test_encode_decode_shapes_and_scaling(path):
    vae = Vae.load(path)
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    latents = vae.encode(images)
    assert latents.shape == (2, 16, 8, 4) and latents.dtype == torch.float32
    raw = vae.model.encode(images).latent_dist.mode()
    torch.testing.assert_close(latents, raw * 0.5)  # released code: scaling only, no shift
    decoded = vae.decode(latents)
    assert decoded.shape == (2, 3, 64, 32) and decoded.abs().max() <= 1
    torch.testing.assert_close(decoded, vae.model.decode(raw).sample.clamp(-1, 1))


def test_shift_flag(path):
    shifted = Vae.load(path, apply_shift=True)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    raw = shifted.model.encode(images).latent_dist.mode()
    torch.testing.assert_close(shifted.encode(images), (raw - 0.1) * 0.5)
    torch.testing.assert_close(shifted.decode(shifted.encode(images)), shifted.model.decode(raw).sample.clamp(-1, 1))
