"""What the trainer shows and records besides the loss: sample grids for TensorBoard and the debug data log.

`family_samples` + `sample_grid`: at each checkpoint an image `samples/<family>` per family seen since the
last one. `log_data` (the `data_log` debug option) appends per step the sample keys a rank trained on, a
hash of the full parameters and of the EMA, so tests can see the split by node and the DDP/FSDP sync from
the outside.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The NextDiT under torch.compile / DDP wrappers (FSDP2 keeps the module itself)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A full (unsharded) CPU copy; FSDP2 parameters are DTensors (all ranks must call this together)."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().cpu().clone()


def family_samples(batch: dict, rows: int) -> dict[str, dict]:
    """{family: {"views": V tensors (n, C, H, W) on CPU, "kinds"}} of the first `rows` samples of each family
    in a batch (a batch is homogeneous in views and size, not in family)."""
    chosen: dict[str, list[int]] = {}
    for index, family in enumerate(batch["family"]):
        if len(chosen.setdefault(family, [])) < rows:
            chosen[family].append(index)
    return {family: {"views": [view[indices].detach().cpu() for view in batch["views"]], "kinds": batch["kinds"]}
            for family, indices in chosen.items() if indices}


def _view_pictures(view: torch.Tensor, kind: str, vae) -> list[np.ndarray]:
    """One view of n samples -> n (H, W, 3) uint8 pictures at pixel size (latents are 8x upsampled)."""
    from PIL import Image

    from onegen.core.ray_pictures import ray_false_colour

    if kind == "ray":
        return [np.asarray(ray_false_colour(latent.float().numpy())) for latent in view]  # (8h, 8w, 3)
    if kind == "latent" and vae is not None:
        view = vae.decode(view).cpu()  # (n, 3, 8h, 8w) in [-1, 1]
    if kind == "latent" and vae is None:  # no VAE to decode with: channels 0-2 stretched to [-1, 1]
        rgb = view[:, :3].float()  # (n, 3, h, w)
        low, high = rgb.amin(dim=(1, 2, 3), keepdim=True), rgb.amax(dim=(1, 2, 3), keepdim=True)
        view = (rgb - low) / (high - low).clamp(min=1e-6) * 2 - 1
    pixels = ((view.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if kind == "latent" and vae is None:
        return [np.asarray(Image.fromarray(p).resize((p.shape[1] * 8, p.shape[0] * 8), Image.NEAREST))
                for p in pixels]
    return list(pixels)  # n x (H, W, 3)


def sample_grid(samples: dict, vae=None) -> np.ndarray:
    """(n * H, V * W, 3) uint8: one row per sample, its V views side by side at pixel size.

    `samples` as from `family_samples`. "pixels" views are shown as they are, "latent" views decoded with
    `vae` (a model.vae.Vae; without one, latent channels 0-2 stretched), "ray" views in the false colour
    of `onegen preview` (direction channels 0-2 / RAY_SCALE, [-1, 1] -> RGB).
    """
    columns = [_view_pictures(view, kind, vae) for view, kind in zip(samples["views"], samples["kinds"],
                                                                      strict=True)]
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(*columns, strict=True)], axis=0)


def tensors_digest(named: list[tuple[str, torch.Tensor]]) -> str:
    """sha256 of (name, full float32 bytes) pairs in order; gathers DTensors (all ranks call it together)."""
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(full_tensor(tensor).float().numpy().tobytes())
    return digest.hexdigest()


def param_digest(model: torch.nn.Module) -> str:
    """`tensors_digest` of the full parameters in named_parameters order."""
    return tensors_digest(list(unwrap(model).named_parameters()))


def log_data(out: str, rank: int, step: int, batch: dict, model: torch.nn.Module,
             ema: dict[str, torch.Tensor], grad_norm: float | None = None) -> None:
    """Append {"step", "keys", "params" (`param_digest`), "ema" (digest of the EMA), "wrapper" (the wrapped
    model's class name), "grad_norm" (the step's total gradient norm before clipping)} to
    OUT/data_log/rank{rank}.jsonl."""
    folder = os.path.join(out, "data_log")
    os.makedirs(folder, exist_ok=True)
    record = {"step": step, "keys": list(batch["key"]), "params": param_digest(model),
              "ema": tensors_digest(list(ema.items())), "wrapper": type(getattr(model, "_orig_mod", model)).__name__,
              "grad_norm": grad_norm}
    with open(os.path.join(folder, f"rank{rank}.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")
