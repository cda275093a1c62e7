"""Ray latents as pictures: the false-colour view that the preview report and training logs both show."""

from __future__ import annotations

import numpy as np
from PIL import Image

from onegen.core.camera_geometry import RAY_SCALE


def ray_false_colour(latent: np.ndarray, upscale: int = 8) -> Image.Image:
    """(16, h, w) ray latent -> RGB image (h * upscale, w * upscale): direction xyz in [-1, 1] -> RGB."""
    if latent.ndim != 3 or latent.shape[0] < 3:
        raise ValueError(f"a ray view is (16, h, w), got shape {latent.shape}")
    dirs = np.asarray(latent[:3], dtype=np.float64) / RAY_SCALE  # (3, h, w), unit vectors
    rgb = np.clip((dirs + 1.0) * 127.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)  # (h, w, 3)
    image = Image.fromarray(rgb)
    return image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
