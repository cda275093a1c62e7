"""diffusers AutoencoderKL wrapper (docs/design.md §6, §6a): images <-> 16-channel latents.

`Vae.load(model_id)` takes a hub id (offline HF cache) or a local folder via `resolve_checkpoint`; a
diffusers-style repo with a `vae/` subfolder is accepted too.

Scaling: latents = scaling_factor * (sample - shift) with the factor and shift from the VAE config.
The released OneDiffusion code multiplies by scaling_factor and applies NO shift, so `apply_shift`
defaults to False (a checkpoint trained that way expects it); set it for SD3/Flux-style training.
`encode` takes (B, 3, H, W) in [-1, 1] (H, W multiples of 8) and returns (B, 16, H/8, W/8) float32;
it uses the posterior mean unless `sample=True` (the mean makes precomputed latents reproducible).
`decode` is the inverse: (B, 16, h, w) -> (B, 3, 8h, 8w) clamped to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onegen.core.weights import repo_subfolder, resolve_checkpoint

LATENT_CHANNELS = 16


@dataclass
class Vae:
    model: torch.nn.Module
    model_id: str
    revision: str
    apply_shift: bool = False

    @classmethod
    def load(cls, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             apply_shift: bool = False) -> Vae:
        from diffusers import AutoencoderKL

        ckpt = resolve_checkpoint(model_id, "VAE")
        model = AutoencoderKL.from_pretrained(repo_subfolder(ckpt.path, "vae"), torch_dtype=dtype)
        if model.config.latent_channels != LATENT_CHANNELS:
            raise ValueError(f"VAE {model_id!r} has {model.config.latent_channels} latent channels, "
                             f"the Next-DiT needs {LATENT_CHANNELS}")
        model.to(device).eval().requires_grad_(False)
        return cls(model, model_id, ckpt.revision, apply_shift)

    @property
    def scale(self) -> float:
        return float(self.model.config.scaling_factor)

    @property
    def shift(self) -> float:
        value = getattr(self.model.config, "shift_factor", None)
        return float(value) if (value is not None and self.apply_shift) else 0.0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 16, H/8, W/8) float32 scaled latents."""
        dtype = next(self.model.parameters()).dtype
        posterior = self.model.encode(images.to(self.device, dtype)).latent_dist
        z = posterior.sample(generator) if sample else posterior.mode()  # (B, 16, h, w)
        return ((z.float() - self.shift) * self.scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 16, h, w) scaled latents -> (B, 3, 8h, 8w) float32 in [-1, 1]."""
        dtype = next(self.model.parameters()).dtype
        z = latents.to(self.device, dtype) / self.scale + self.shift
        return self.model.decode(z).sample.float().clamp(-1, 1)  # (B, 3, H, W)
