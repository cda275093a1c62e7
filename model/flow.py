"""Flow matching loss and Euler sampler of OneDiffusion (DESIGN §6, §6a).

Conventions (the released code's): sigma = 1 is pure noise, x_sigma = (1 - sigma) * x0 + sigma * noise,
the model gets t = 1000 * sigma per view and predicts v = noise - x0. Latents are (B, C, V, H, W).

Views play one of two roles, given by a (B, V) bool `generate_mask`:
- generated views (True) are noised in training and integrated by the sampler;
- condition views (False) stay clean: sigma 0 in training, and in sampling they are reset to their clean
  latents after every step. Their loss is not counted; to train every view (the paper's
  "all views noised" mode) pass an all-True mask.

Time shift: shift_sigma(s) = shift * s / (1 + (shift - 1) * s) (> 1 spends more steps near noise);
training uses shift 3 on a logit-normal draw. `resolution_shift` gives the SD3 / Flux dynamic shift
exp(mu), mu linear in the tokens per view from 0.5 at 256 tokens to 1.15 at 4096 tokens (diffusers'
`calculate_shift` defaults), for samplers that want a resolution-dependent schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

# model(latents (B, C, V, H, W), timesteps (B, V), caption (B, L, Cy), caption_mask (B, L)) -> v
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp sigma in [0, 1] towards noise; shift 1 is the identity, 0 and 1 stay fixed."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def resolution_shift(tokens_per_view: int, base_tokens: int = 256, max_tokens: int = 4096,
                     base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """SD3 / Flux dynamic shift exp(mu), mu linear in the number of tokens per view."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return math.exp(base_shift + slope * (tokens_per_view - base_tokens))


def sample_sigma(batch: int, views: int, shift: float = 3.0, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """(B, V) independent logit-normal sigmas (sigmoid of a standard normal), then shifted."""
    s = torch.sigmoid(torch.randn(batch, views, generator=generator, device=device))  # (B, V)
    return shift_sigma(s, shift)


def flow_loss(model: Denoiser, x0: torch.Tensor, caption: torch.Tensor, caption_mask: torch.Tensor,
              generate_mask: torch.Tensor | None = None, shift: float = 3.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Scalar MSE between v and noise - x0 over generated views; each view weighs the same.

    x0 (B, C, V, H, W) clean latents; generate_mask (B, V) bool (None: every view is generated).
    `generator` (on x0's device) makes sigma and noise reproducible.
    """
    B, _, V = x0.shape[:3]
    if generate_mask is None:
        generate_mask = torch.ones(B, V, dtype=torch.bool, device=x0.device)
    sigma = sample_sigma(B, V, shift, generator, x0.device) * generate_mask  # (B, V) conditions at 0
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)  # (B, C, V, H, W)
    s = sigma[:, None, :, None, None].to(x0.dtype)  # (B, 1, V, 1, 1)
    v = model((1 - s) * x0 + s * noise, 1000 * sigma, caption, caption_mask)  # (B, C, V, H, W)
    err = (v.float() - (noise - x0).float()).pow(2).mean(dim=(1, 3, 4))  # (B, V)
    weight = generate_mask.float()  # (B, V)
    return (err * weight).sum() / weight.sum().clamp(min=1)


def _pad_to(states: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (B, L, Cy) states and (B, L) mask to `length` tokens (padding masked out)."""
    pad = length - states.shape[1]
    return F.pad(states, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)


@torch.no_grad()
def sample_euler(model: Denoiser, noise: torch.Tensor, cond_latents: torch.Tensor, generate_mask: torch.Tensor,
                 caption: torch.Tensor, caption_mask: torch.Tensor, neg_caption: torch.Tensor | None = None,
                 neg_mask: torch.Tensor | None = None, steps: int = 50, cfg_scale: float = 1.0,
                 shift: float = 3.0, cond_last_timestep: bool = False) -> torch.Tensor:
    """Integrate generated views from sigma 1 to 0 in `steps` Euler steps; return (B, C, V, H, W).

    noise, cond_latents (B, C, V, H, W): starting noise and the clean latents of condition views (values
    of generated views in cond_latents are ignored). Condition views are fed clean with timestep 0, or,
    with `cond_last_timestep`, the schedule's last timestep 1000 * sigma[steps - 1] as the released
    sampler does; they are reset to their clean latents after every step, so they come back unchanged.
    CFG (when neg_caption is given and cfg_scale != 1): v = v_neg + cfg_scale * (v_pos - v_neg), where
    only the caption differs between the branches (the negative prompt is the caller's: the released
    code uses it without a task token); both branches see the same image conditions.
    """
    sigmas = shift_sigma(torch.linspace(1.0, 0.0, steps + 1, device=noise.device), shift)  # (steps + 1,)
    keep = ~generate_mask[:, None, :, None, None]  # (B, 1, V, 1, 1) condition views
    x = torch.where(keep, cond_latents, noise)  # (B, C, V, H, W)
    cond_t = 1000 * sigmas[steps - 1] if cond_last_timestep else torch.zeros((), device=noise.device)
    use_cfg = neg_caption is not None and cfg_scale != 1.0
    if use_cfg:
        length = max(caption.shape[1], neg_caption.shape[1])
        pos, neg = _pad_to(caption, caption_mask, length), _pad_to(neg_caption, neg_mask, length)
        both_caption, both_mask = torch.cat([pos[0], neg[0]]), torch.cat([pos[1], neg[1]])  # (2B, L, Cy), (2B, L)
    for i in range(steps):
        t = torch.where(generate_mask, 1000 * sigmas[i], cond_t)  # (B, V)
        if use_cfg:
            v_pos, v_neg = model(torch.cat([x, x]), torch.cat([t, t]), both_caption, both_mask).chunk(2)
            v = v_neg + cfg_scale * (v_pos - v_neg)  # (B, C, V, H, W)
        else:
            v = model(x, t, caption, caption_mask)  # (B, C, V, H, W)
        x = x + (sigmas[i + 1] - sigmas[i]) * v.to(x.dtype)
        x = torch.where(keep, cond_latents, x)  # condition views back to their clean latents
    return x
