"""`onegen train`: flow-matching training of the Next-DiT on shards (DESIGN §6).

Reads top to bottom: setup (devices, DDP / FSDP2), data (`training.data`), model + EMA + AdamW, the loop,
checkpoints (`training.checkpoint`: sharded DCP step folders written by every rank, holding model, EMA,
optimizer, every RNG state and the loader's state per rank, and the config that made them), so a rerun
with the same OUT resumes exactly and without replaying the data stream. `onegen export` turns a step
folder into one .safetensors file for `onegen sample`.

Objective (DESIGN §6, paper §3.2): every view gets its own logit-normal sigma (shift `shift`) and every
view is in the loss; with `clean_condition_prob` p, a fraction p of the samples instead hold their
condition views (the loader's roles) clean and out of the loss.

Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DDP, or sharded with FSDP2
`fully_shard` per block when `fsdp` is set (default for the 2.8B preset). bf16 autocast on CUDA only.
Logs: tqdm, and TensorBoard scalars loss/<family> per step under OUT/tb (from the loss's own per-sample
errors); at each checkpoint an image `samples/<family>` per family seen since the last one
(`train_logs.sample_grid`). `data_log` (debug) writes OUT/data_log/rank{N}.jsonl (`train_logs.log_data`).
"""

from __future__ import annotations

import argparse
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from onegen.model.flow import clean_conditions, flow_loss
from onegen.model.nextdit import NextDiT, build_model
from onegen.training.checkpoint import latest_checkpoint, load_training_checkpoint, save_training_checkpoint
from onegen.training.data import batch_caption, batch_latents, make_loader
from onegen.training.train_config import TrainConfig, config_from_args
from onegen.training.train_logs import family_samples, log_data, sample_grid, unwrap

__all__ = ["TrainConfig", "config_from_args", "train", "train_step"]


# --------------------------------------------------------------------------- setup


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def wrap_model(model: NextDiT, config: TrainConfig, world: int, device: torch.device) -> torch.nn.Module:
    """DDP or FSDP2 under torchrun, then torch.compile if asked; the plain module otherwise."""
    use_fsdp = config.fsdp if config.fsdp is not None else config.preset == "onediffusion-2.8b"
    if world > 1 and use_fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model)
    elif world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(model) if config.compile else model


# --------------------------------------------------------------------------- loop


def train_step(model, batch: dict, optimizer, ema: dict[str, torch.Tensor], config: TrainConfig, device,
               loss_generator: torch.Generator, vae=None, text_encoder=None) -> tuple[float, dict[str, float]]:
    """One optimizer step; returns (loss, {family: mean loss of its samples in this batch})."""
    x0 = batch_latents(batch, vae).to(device)  # (B, 16, V, h, w)
    caption, mask = batch_caption(batch, text_encoder)  # (B, L, D), (B, L)
    caption, mask = caption.to(device), mask.to(device)
    clean = clean_conditions(~batch["generate"].to(device), config.clean_condition_prob, loss_generator)  # (B, V)
    with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda" and config.bf16):
        out = flow_loss(model, x0, caption, mask, clean, config.shift, loss_generator)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    with torch.no_grad():
        params = dict(unwrap(model).named_parameters())
        torch._foreach_lerp_(list(ema.values()), [params[k].detach() for k in ema], 1 - config.ema_decay)
    per_family: dict[str, list[float]] = {}
    for family, value in zip(batch["family"], out.per_sample().cpu().tolist(), strict=True):
        per_family.setdefault(family, []).append(value)
    return out.loss.item(), {f: sum(v) / len(v) for f, v in per_family.items()}


def train(config: TrainConfig) -> dict:
    """Run (or resume) training to config.steps; returns {"step", "losses", "checkpoint"}."""
    from tqdm import tqdm

    from onegen.core.job_output import progress_stream

    rank, world, device = setup_distributed()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = build_model(config.preset).to(device)
    model = wrap_model(model, config, world, device)
    ema = {k: p.detach().clone() for k, p in unwrap(model).named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    loss_generator = torch.Generator(device).manual_seed(config.seed * 1_000_003 + rank)
    start, loader_state = 0, None
    resume = latest_checkpoint(config.out)
    if resume:
        start, loader_state = load_training_checkpoint(resume, model, ema, optimizer, loss_generator)
    vae, text_encoder = _encoders(config, device)
    batches = make_loader(config.data, loader_state)
    writer = _tensorboard(config, rank)
    losses, checkpoint = [], resume
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               disable=rank != 0 or not config.progress, desc="train", file=progress_stream())
    recent: dict[str, dict] = {}  # family -> its latest samples, for the checkpoint-time grids
    for step in bar:
        batch = next(batches)
        loss, per_family = train_step(model, batch, optimizer, ema, config, device, loss_generator,
                                      vae, text_encoder)
        losses.append(loss)
        if config.data_log:
            log_data(config.out, rank, step + 1, batch, model, ema)
        if writer is not None:
            writer.add_scalar("loss/all", loss, step + 1)
            for family, value in per_family.items():
                writer.add_scalar(f"loss/{family}", value, step + 1)
            recent.update(family_samples(batch, config.sample_rows))
        if (step + 1) % config.log_every == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
        if (step + 1) % config.ckpt_every == 0 or step + 1 == config.steps:
            checkpoint = save_training_checkpoint(config, step + 1, model, ema, optimizer, loss_generator,
                                                  batches.state_dict())
            if writer is not None:
                for family, samples in sorted(recent.items()):
                    writer.add_image(f"samples/{family}", sample_grid(samples, vae), step + 1, dataformats="HWC")
                recent.clear()
    if writer is not None:
        writer.close()
    if world > 1:
        dist.destroy_process_group()
    return {"step": config.steps, "losses": losses, "checkpoint": checkpoint}


def _encoders(config: TrainConfig, device: torch.device):
    """The VAE / text encoder when configured (raw shards need them; precomputed shards do not)."""
    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae

    vae = Vae.load(config.vae, device) if config.vae else None
    text_encoder = TextEncoder.load(config.text_encoder, device) if config.text_encoder else None
    return vae, text_encoder


def _tensorboard(config: TrainConfig, rank: int):
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.path.join(config.out, "tb"))


# --------------------------------------------------------------------------- CLI


def _cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.preset == "onediffusion-2.8b" and not torch.cuda.is_available():
        print("train: note: no GPU here, and the defaults are the paper's (onediffusion-2.8b, "
              f"{config.steps} steps); on a CPU try --preset tiny --steps 200", flush=True)
    result = train(config)
    if result["losses"]:
        print(f"train: step {result['step']}, last loss {result['losses'][-1]:.5f}, checkpoint {result['checkpoint']}")
    else:  # a rerun of a finished run resumes at --steps and trains nothing
        print(f"train: already at step {result['step']} (checkpoint {result['checkpoint']}); nothing to train: "
              "raise --steps to continue, or train into a new --out")
    return 0
