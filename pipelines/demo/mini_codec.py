"""A small latent codec for the mini One-Gen run (bench/mini_onegen.py): a diffusers AutoencoderKL with
16 latent channels and 8x downsampling (the shapes `model/vae.py` and the Next-DiT need), built from a
config and briefly fitted on CPU to the frames it will encode, then saved with `save_pretrained` so that
`onegen precompute --vae FOLDER` / `onegen sample --vae` load it through `Vae.load` like any hub VAE.

Fit: Adam on mean squared error of the reconstruction of the posterior mean plus a small KL term
(keeps the posterior a distribution, as AutoencoderKL's own training does), images in [-1, 1].
After fitting, `scaling_factor` is set to 1 / std of the latents of the fitting frames, so the
diffusion model sees unit-variance latents (what the scaling factor is for; the released code applies
no shift, model/vae.py). `reconstruction_psnr` is the codec's quality measured on other frames:
uint8 PSNR (dB) of decode(encode(x)) against x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KL_WEIGHT = 1e-6  # small: reconstruction first, the posterior kept from collapsing to points


@dataclass(frozen=True)
class CodecConfig:
    """Size and fit of the codec: channels per resolution level (4 levels: 3 downsamples = 8x), Adam
    steps / learning rate / batch size, and the seed of the init and the batch order."""

    channels: tuple[int, ...] = (16, 32, 32, 32)
    steps: int = 300
    lr: float = 2e-3
    batch_size: int = 16
    seed: int = 0


def to_tensor(images: np.ndarray):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def fit_codec(images: np.ndarray, folder: str | Path, config: CodecConfig = CodecConfig()) -> dict:
    """Fit an AutoencoderKL to `images` ((N, H, W, 3) uint8, H and W multiples of 8) and save it in
    `folder`; returns {"path", "final_mse", "scaling_factor"}."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(config.seed)
    levels = len(config.channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
                        norm_num_groups=min(8, min(config.channels)),
                        down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=config.channels)
    data = to_tensor(images)  # (N, 3, H, W)
    optimiser = torch.optim.Adam(vae.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(config.seed)
    mse = float("nan")
    for _ in range(config.steps):
        batch = data[torch.randint(len(data), (config.batch_size,), generator=order)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.mode()).sample  # (B, 3, H, W)
        loss = torch.nn.functional.mse_loss(recon, batch) + KL_WEIGHT * posterior.kl().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        mse = float(loss.detach())
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in data.split(64)])  # (N, 16, h, w)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale, shift_factor=0.0)
    vae.save_pretrained(str(folder))
    return {"path": str(folder), "final_mse": mse, "scaling_factor": scale}


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 arrays of one shape (peak 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def reconstruction_psnr(path: str, images: np.ndarray) -> float:
    """Mean per-image PSNR (dB) of the codec at `path` (loaded by `Vae.load`) on `images` (N, H, W, 3) uint8."""
    import torch

    from onegen.model.vae import Vae

    vae = Vae.load(path)
    values = []
    with torch.no_grad():
        for start in range(0, len(images), 32):
            chunk = images[start : start + 32]
            decoded = vae.decode(vae.encode(to_tensor(chunk)))  # (B, 3, H, W) in [-1, 1]
            pixels = ((decoded.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
            values += [psnr_uint8(p, c) for p, c in zip(pixels, chunk, strict=True)]
    return float(np.mean(values))
