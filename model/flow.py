"""Flow matching loss and Euler sampler of OneDiffusion (docs/design.md §6, §6a).

Conventions (the released code's): sigma = 1 is pure noise, x_sigma = (1 - sigma) * x0 + sigma * noise,
the model gets t = 1000 * sigma per view and predicts v = noise - x0. Latents are (B, C, V, H, W).

Training objective (paper §3.2, the default): every view draws its own sigma ~ logit-normal, shifted by 3,
and every view is in the joint flow-matching loss, each view weighted equally; so any subset of views can
be the condition at inference and several views can be generated jointly. Option: a (B, V) bool `clean`
mask holds chosen views clean (sigma 0) and out of the loss ("clean conditions");
`clean_conditions(conditions, prob)` makes that mask for a random fraction `prob` of the samples.

Sampling schedule (the released `img2img` sampler's, the default): sigmas linspace(1, 1/N, N) then 0,
warped by the time shift exp(mu) with mu = `dynamic_mu(generated tokens)`, linear in the number of
generated tokens (generated views x tokens per view x noise_scale) between (base_image_seq_len,
base_shift) and (max_image_seq_len, max_shift) of the scheduler config (`ScheduleConfig`, diffusers'
FlowMatchEulerDiscreteScheduler field names). `fixed_sigmas(steps, shift)` is the option of one fixed
shift for every layout (3: the training shift).

Time shift: shift_sigma(s, k) = k * s / (1 + (k - 1) * s) (k > 1 spends more steps near noise); it is
diffusers' exponential `time_shift(mu, 1, s)` with k = exp(mu).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

# model(latents (B, C, V, H, W), timesteps (B, V), caption (B, L, Cy), caption_mask (B, L)) -> v
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp sigma in [0, 1] towards noise; shift 1 is the identity, 0 and 1 stay fixed."""
    return shift * sigma / (1 + (shift - 1) * sigma)


# --------------------------------------------------------------------------- training objective


def sample_sigma(batch: int, views: int, shift: float = 3.0, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """(B, V) independent logit-normal sigmas (sigmoid of a standard normal), then shifted."""
    s = torch.sigmoid(torch.randn(batch, views, generator=generator, device=device))  # (B, V)
    return shift_sigma(s, shift)


def clean_conditions(conditions: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) bool views to hold clean: the `conditions` views of a random `prob` fraction of the rows.

    prob 0 holds nothing clean and prob 1 every condition, both without drawing from `generator`, so
    the loss noise of those two settings does not depend on this call.
    """
    if prob <= 0:
        return torch.zeros_like(conditions)
    if prob >= 1:
        return conditions.clone()
    rows = torch.rand(conditions.shape[0], generator=generator, device=conditions.device) < prob  # (B,)
    return conditions & rows[:, None]  # (B, V)


@dataclass(frozen=True)
class FlowLoss:
    """`flow_loss`'s result: the scalar to minimise and what went into it, per sample and view."""

    loss: torch.Tensor  # () mean over the views in the loss (differentiable)
    errors: torch.Tensor  # (B, V) float32 MSE of each view (detached)
    in_loss: torch.Tensor  # (B, V) bool views counted in `loss`

    def per_sample(self) -> torch.Tensor:
        """(B,) mean error over each sample's views in the loss (0 for a sample with none)."""
        weight = self.in_loss.float()  # (B, V)
        return (self.errors * weight).sum(1) / weight.sum(1).clamp(min=1)


def flow_loss(model: Denoiser, x0: torch.Tensor, caption: torch.Tensor, caption_mask: torch.Tensor,
              clean: torch.Tensor | None = None, shift: float = 3.0,
              generator: torch.Generator | None = None) -> FlowLoss:
    """Joint flow-matching loss over the views: MSE between v and noise - x0, each view weighing the same.

    x0 (B, C, V, H, W) clean latents. Every view gets its own sigma (`sample_sigma`); views in `clean`
    ((B, V) bool, None: none) get sigma 0 and are left out of the loss. `generator` (on x0's device)
    makes sigma and noise reproducible: sigma is drawn first, then the noise, both for every view.
    The loss itself is `flow_loss_at` (validation calls it with fixed sigmas and seeded noise).
    """
    B, _, V = x0.shape[:3]
    if clean is None:
        clean = torch.zeros(B, V, dtype=torch.bool, device=x0.device)
    sigma = sample_sigma(B, V, shift, generator, x0.device).masked_fill(clean, 0.0)  # (B, V)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)  # (B, C, V, H, W)
    return flow_loss_at(model, x0, noise, sigma, caption, caption_mask, clean)


def flow_loss_at(model: Denoiser, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                 caption: torch.Tensor, caption_mask: torch.Tensor, clean: torch.Tensor | None = None) -> FlowLoss:
    """The flow-matching loss at given noise levels: x_sigma = (1 - sigma) x0 + sigma noise, target noise - x0.

    x0, noise (B, C, V, H, W); sigma (B, V) in [0, 1] (the model sees t = 1000 sigma); `clean` (B, V) bool
    views out of the loss (None: every view in it). The one loss of training (`flow_loss`) and of
    validation at fixed timesteps (training/validation.py), so both measure the same objective.
    """
    B, _, V = x0.shape[:3]
    if clean is None:
        clean = torch.zeros(B, V, dtype=torch.bool, device=x0.device)
    s = sigma[:, None, :, None, None].to(x0.dtype)  # (B, 1, V, 1, 1)
    v = model((1 - s) * x0 + s * noise, 1000 * sigma, caption, caption_mask)  # (B, C, V, H, W)
    err = (v.float() - (noise - x0).float()).pow(2).mean(dim=(1, 3, 4))  # (B, V)
    in_loss = ~clean  # (B, V)
    weight = in_loss.float()
    loss = (err * weight).sum() / weight.sum().clamp(min=1)
    return FlowLoss(loss, err.detach(), in_loss)


# --------------------------------------------------------------------------- sampling schedule


@dataclass(frozen=True)
class ScheduleConfig:
    """The scheduler-config fields the released sampler's `calculate_shift` reads (diffusers names);
    the defaults are diffusers' FlowMatchEulerDiscreteScheduler defaults (also FLUX.1's config)."""

    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15

    @classmethod
    def from_scheduler_config(cls, config: Mapping | None) -> ScheduleConfig:
        """Read a diffusers `scheduler_config.json` dict (other keys ignored); None: the defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (config or {}).items() if k in known})


def dynamic_mu(generated_tokens: float, config: ScheduleConfig = ScheduleConfig()) -> float:
    """mu of the released sampler: linear in the generated tokens through (base_len, base_shift) and
    (max_len, max_shift), not clipped."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return config.base_shift + slope * (generated_tokens - config.base_image_seq_len)


def _base_sigmas(steps: int) -> torch.Tensor:
    """(steps,) float64 linspace(1, 1/steps, steps), the released sampler's grid before the shift."""
    return torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)


def fixed_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """(steps + 1,) float32: the released grid warped by one fixed `shift`, then 0."""
    return torch.cat([shift_sigma(_base_sigmas(steps), shift), torch.zeros(1, dtype=torch.float64)]).float()


def dynamic_sigmas(steps: int, generated_tokens: float, config: ScheduleConfig = ScheduleConfig()) -> torch.Tensor:
    """(steps + 1,) float32: the released grid warped by exp(`dynamic_mu`(generated_tokens)), then 0."""
    return fixed_sigmas(steps, math.exp(dynamic_mu(generated_tokens, config)))


def release_schedule(generate_mask: torch.Tensor, tokens_per_view: int, steps: int,
                     config: ScheduleConfig = ScheduleConfig(), noise_scale: float = 1.0) -> torch.Tensor:
    """(B, steps + 1) sigmas per row: `dynamic_sigmas` for noise_scale x its generated views x tokens per view."""
    counts = generate_mask.sum(dim=1).tolist()  # (B,) generated views per row
    rows = [dynamic_sigmas(steps, noise_scale * n * tokens_per_view, config) for n in counts]
    return torch.stack(rows).to(generate_mask.device)  # (B, steps + 1)


# --------------------------------------------------------------------------- sampler


def _pad_to(states: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (B, L, Cy) states and (B, L) mask to `length` tokens (padding masked out)."""
    pad = length - states.shape[1]
    return F.pad(states, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)


@torch.no_grad()
def sample_euler(model: Denoiser, noise: torch.Tensor, cond_latents: torch.Tensor, generate_mask: torch.Tensor,
                 caption: torch.Tensor, caption_mask: torch.Tensor, neg_caption: torch.Tensor | None = None,
                 neg_mask: torch.Tensor | None = None, steps: int = 50, cfg_scale: float = 1.0,
                 sigmas: torch.Tensor | None = None, cond_last_timestep: bool = True) -> torch.Tensor:
    """Integrate generated views from sigma 1 to 0 in `steps` Euler steps; return (B, C, V, H, W).

    noise, cond_latents (B, C, V, H, W): starting noise and the clean latents of condition views (values
    of generated views in cond_latents are ignored). `sigmas` (steps + 1,) or (B, steps + 1), from 1 down
    to 0; None: `release_schedule` with the default `ScheduleConfig` and H * W / 4 tokens per view (the
    (1, 2, 2) patch of every preset). Condition views get the schedule's last timestep
    1000 * sigmas[steps - 1] as the released sampler does (`cond_last_timestep`), or timestep 0; they are
    reset to their clean latents after every step, so they come back unchanged.
    CFG (when neg_caption is given and cfg_scale != 1): v = v_neg + cfg_scale * (v_pos - v_neg), where
    only the caption differs between the branches (the negative prompt is the caller's: the released
    code uses it without a task token); both branches see the same image conditions.
    """
    B, _, _, H, W = noise.shape
    if sigmas is None:
        sigmas = release_schedule(generate_mask, H * W // 4, steps)
    sigmas = sigmas.to(noise.device, torch.float32).expand(B, steps + 1)  # (B, steps + 1)
    keep = ~generate_mask[:, None, :, None, None]  # (B, 1, V, 1, 1) condition views
    x = torch.where(keep, cond_latents, noise)  # (B, C, V, H, W)
    cond_t = 1000 * sigmas[:, steps - 1] if cond_last_timestep else torch.zeros(B, device=noise.device)  # (B,)
    use_cfg = neg_caption is not None and cfg_scale != 1.0
    if use_cfg:
        length = max(caption.shape[1], neg_caption.shape[1])
        pos, neg = _pad_to(caption, caption_mask, length), _pad_to(neg_caption, neg_mask, length)
        both_caption, both_mask = torch.cat([pos[0], neg[0]]), torch.cat([pos[1], neg[1]])  # (2B, L, Cy), (2B, L)
    for i in range(steps):
        t = torch.where(generate_mask, 1000 * sigmas[:, i, None], cond_t[:, None])  # (B, V)
        if use_cfg:
            v_pos, v_neg = model(torch.cat([x, x]), torch.cat([t, t]), both_caption, both_mask).chunk(2)
            v = v_neg + cfg_scale * (v_pos - v_neg)  # (B, C, V, H, W)
        else:
            v = model(x, t, caption, caption_mask)  # (B, C, V, H, W)
        dt = (sigmas[:, i + 1] - sigmas[:, i])[:, None, None, None, None]  # (B, 1, 1, 1, 1)
        x = x + dt.to(x.dtype) * v.to(x.dtype)
        x = torch.where(keep, cond_latents, x)  # condition views back to their clean latents
    return x
