"""`onegen train`: flow-matching training of the Next-DiT on shards (docs/design.md §6).

Reads top to bottom: setup (devices, DDP / FSDP2), the `Trainer` (model + EMA + AdamW + the loss
generator; `Trainer.step(batch)` is one optimizer step), data (`training.data`), the loop, checkpoints
(`training.checkpoint.Checkpointer`, handed the named Stateful parts a step folder holds: model, optimizer
and EMA resharded across ranks; every RNG state and the loader's state per rank; plus the config that made
them), so a rerun with the same OUT resumes exactly and without replaying the data stream. `onegen export`
turns a step folder into one .safetensors file for `onegen sample`.

Objective (docs/design.md §6, paper §3.2): every view gets its own logit-normal sigma (shift `shift`) and every
view is in the loss; with `clean_condition_prob` p, a fraction p of the samples instead hold their
condition views (the loader's roles) clean and out of the loss.

Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DDP, or sharded with FSDP2
`fully_shard` per block when `fsdp` is set (default for the 2.8B preset). bf16 autocast on CUDA only.
Logs: tqdm, and TensorBoard scalars loss/all, loss/<family> per step under OUT/tb (from the loss's own
per-sample errors) and train/grad_norm (the total gradient norm before clipping, what `clip_grad_norm_`
returns; under FSDP2 that is a DTensor, made the full norm over every shard with `full_tensor()`); at each
checkpoint an image `samples/<family>` per family seen since the last one
(`train_logs.sample_grid`). `data_log` (debug) writes OUT/data_log/rank{N}.jsonl (`train_logs.log_data`).

Validation (training/validation.py; `--val-shards` or `--val-fraction`, `--val-every N`): the flow-matching loss
per task family at fixed stratified timesteps, of the EMA (`--val-ema`, default) or the raw model, at step 0 of
a fresh run, every N steps and at the last step; TensorBoard val/loss/<family> and val/loss beside the training
loss, and one JSON line per evaluation in OUT/val.jsonl. It draws from no training RNG, so a run's training
losses are the same with validation on or off. `--keep-checkpoints K` keeps the newest K step folders.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from onegen.model.flow import clean_conditions, flow_loss
from onegen.model.nextdit import NextDiT, build_model
from onegen.training.checkpoint import Checkpointer, ModelState, OptimizerState, RngState, training_meta
from onegen.training.data import DataConfig, Loader, batch_caption, batch_latents, make_loader
from onegen.training.train_config import TrainConfig, config_from_args
from onegen.training.train_logs import family_samples, log_data, sample_grid, unwrap
from onegen.training.validation import Validator, record, record_evaluation, weights_swapped

# an evaluation run while training (evaluation/in_training.py makes them for --eval-every; training/ cannot
# import evaluation/): (model, vae, text encoder, step) -> {metric name: value or None}. Every rank calls it.
Evaluator = Callable[[torch.nn.Module, Any, Any, int], dict[str, float | None]]

__all__ = ["Ema", "LoaderPart", "StepResult", "TrainConfig", "Trainer", "config_from_args", "train"]


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


# --------------------------------------------------------------------------- the trainer


class Ema:
    """Exponential moving average of a model's parameters, a checkpoint part (Stateful).

    `shadow` holds one tensor per parameter name of the unwrapped model (DTensor shards under FSDP2, like
    the parameters); `state_dict()` returns those very tensors, so DCP loads into them in place."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in unwrap(model).named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow += (1 - decay) * (parameter - shadow), for every parameter at once."""
        params = dict(unwrap(model).named_parameters())
        torch._foreach_lerp_(list(self.shadow.values()), [params[k].detach() for k in self.shadow], 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        differ = sorted(set(state) ^ set(self.shadow))
        if differ:
            raise KeyError(f"EMA state does not match this model's parameters: {len(differ)} differ, e.g. {differ[0]}")
        for name, tensor in self.shadow.items():
            if state[name] is not tensor:  # DCP hands back the shadow itself, already loaded in place
                tensor.copy_(state[name])


class LoaderPart:
    """The data stream as a per-rank checkpoint part: `Loader.state_dict()` of the running loader.

    A `Loader` resumes only when it is made, so a restored state waits here until `start()` makes the
    loader from it (a fresh stream when nothing was restored)."""

    def __init__(self, config: DataConfig):
        self.config, self.restored, self.loader = config, None, None

    def start(self) -> Loader:
        self.loader = make_loader(self.config, self.restored)
        return self.loader

    def state_dict(self) -> dict:
        if self.loader is None:
            raise RuntimeError("LoaderPart.state_dict() before start(): no loader has run yet")
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.loader is not None:
            raise RuntimeError("LoaderPart.load_state_dict() after start(): the running loader cannot seek")
        self.restored = state


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports: the loss, the mean loss per task family of the batch's samples, and the
    total gradient norm before clipping (over every rank's shard under FSDP2)."""

    loss: float
    per_family: dict[str, float]
    grad_norm: float


def full_norm(norm: torch.Tensor) -> float:
    """`clip_grad_norm_`'s total norm as a float; under FSDP2 it is a DTensor of per-shard partial norms, and
    `full_tensor()` reduces it to the norm of the whole gradient (every rank calls this together)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


@dataclass
class Trainer:
    """The model under training and everything one optimizer step needs; `step(batch)` takes that step.

    `model` is as `wrap_model` left it (DDP / FSDP2 / compiled); `config` supplies the objective (`shift`,
    `clean_condition_prob`), `grad_clip` and `bf16` (autocast on CUDA only); `loss_generator` draws the
    sigmas, the noise and the clean-condition choices; `vae` / `text_encoder` encode raw shards
    (precomputed shards need neither)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Ema
    config: TrainConfig
    device: torch.device
    loss_generator: torch.Generator
    vae: Any = None  # model.vae.Vae
    text_encoder: Any = None  # model.text_encoder.TextEncoder

    @classmethod
    def create(cls, config: TrainConfig, rank: int, world: int, device: torch.device) -> Trainer:
        """Seeded model wrapped for `world` ranks, its EMA, AdamW, this rank's loss generator, the encoders."""
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
        model = wrap_model(build_model(config.preset).to(device), config, world, device)
        ema = Ema(model, config.ema_decay)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                      weight_decay=config.weight_decay)
        loss_generator = torch.Generator(device).manual_seed(config.seed * 1_000_003 + rank)
        return cls(model, optimizer, ema, config, device, loss_generator, *_encoders(config, device))

    def checkpoint_parts(self) -> dict[str, Any]:
        """The Stateful parts a step folder's state/ holds (resharded on another world size)."""
        return {"model": ModelState(self.model), "optimizer": OptimizerState(self.model, self.optimizer),
                "ema": self.ema}

    def step(self, batch: dict) -> StepResult:
        """One optimizer step; returns its loss, {family: mean loss of its samples in this batch}, grad norm."""
        config, device = self.config, self.device
        x0 = batch_latents(batch, self.vae).to(device)  # (B, 16, V, h, w)
        caption, mask = batch_caption(batch, self.text_encoder)  # (B, L, D), (B, L)
        caption, mask = caption.to(device), mask.to(device)
        clean = clean_conditions(~batch["generate"].to(device), config.clean_condition_prob,
                                 self.loss_generator)  # (B, V)
        with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda" and config.bf16):
            out = flow_loss(self.model, x0, caption, mask, clean, config.shift, self.loss_generator)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = full_norm(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip))
        self.optimizer.step()
        self.ema.update(self.model)
        per_family: dict[str, list[float]] = {}
        for family, value in zip(batch["family"], out.per_sample().cpu().tolist(), strict=True):
            per_family.setdefault(family, []).append(value)
        return StepResult(out.loss.item(), {f: sum(v) / len(v) for f, v in per_family.items()}, grad_norm)


# --------------------------------------------------------------------------- loop


def train(config: TrainConfig, evaluators: Sequence[Evaluator] = ()) -> dict:
    """Run (or resume) training to config.steps; returns {"step", "losses", "checkpoint"}. `evaluators` run
    every `eval_every` steps and at the last step, on the weights validation uses (the EMA by default)."""
    from tqdm import tqdm

    from onegen.core.job_output import progress_stream

    rank, world, device = setup_distributed()
    # before the model is built: a validation set that matches nothing is refused at once
    validator = Validator.create(config, rank, world) if config.validates else None
    trainer = Trainer.create(config, rank, world, device)
    data = LoaderPart(config.data)
    checkpointer = Checkpointer(config.out, trainer.checkpoint_parts(),
                                {"rng": RngState(trainer.loss_generator), "loader": data}, training_meta(config),
                                keep=config.keep_checkpoints or None)
    start, checkpoint = checkpointer.resume()
    batches = data.start()
    writer = _tensorboard(config, rank)

    def validate(step: int) -> None:
        result = validator.evaluate(trainer.model, step, device, trainer.ema.shadow if config.val_ema else None,
                                    trainer.vae, trainer.text_encoder)
        if rank == 0:
            record(result, config.out, writer)

    def evaluate(step: int) -> None:
        model = unwrap(trainer.model)  # the module itself: no DDP sync, no compiled graph, under no_grad
        with weights_swapped(trainer.model, trainer.ema.shadow if config.val_ema else None):
            was_training = model.training
            model.eval()
            try:
                values: dict[str, float | None] = {}
                for evaluator in evaluators:
                    values.update(evaluator(model, trainer.vae, trainer.text_encoder, step))
            finally:
                model.train(was_training)
        if rank == 0:
            record_evaluation(values, step, config.out, writer)

    if validator is not None and start == 0 and config.steps > 0:  # the baseline of a fresh run
        validate(0)
    losses = []
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               disable=rank != 0 or not config.progress, desc="train", file=progress_stream())
    recent: dict[str, dict] = {}  # family -> its latest samples, for the checkpoint-time grids
    for step in bar:
        batch = next(batches)
        result = trainer.step(batch)
        losses.append(result.loss)
        if config.data_log:
            log_data(config.out, rank, step + 1, batch, trainer.model, trainer.ema.shadow, result.grad_norm)
        if writer is not None:
            writer.add_scalar("loss/all", result.loss, step + 1)
            writer.add_scalar("train/grad_norm", result.grad_norm, step + 1)
            for family, value in result.per_family.items():
                writer.add_scalar(f"loss/{family}", value, step + 1)
            recent.update(family_samples(batch, config.sample_rows))
        if (step + 1) % config.log_every == 0:
            bar.set_postfix(loss=f"{result.loss:.4f}", grad_norm=f"{result.grad_norm:.3f}")
        if validator is not None and ((step + 1) % config.val_every == 0 or step + 1 == config.steps):
            validate(step + 1)
        if evaluators and config.eval_every and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            evaluate(step + 1)
        if (step + 1) % config.ckpt_every == 0 or step + 1 == config.steps:
            checkpoint = checkpointer.save(step + 1)
            if writer is not None:
                for family, samples in sorted(recent.items()):
                    writer.add_image(f"samples/{family}", sample_grid(samples, trainer.vae), step + 1,
                                     dataformats="HWC")
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


def run_train_command(args: argparse.Namespace,
                      make_evaluators: Callable[[TrainConfig], Sequence[Evaluator]] = lambda config: ()) -> int:
    """`onegen train`: the config from the flags, `make_evaluators(config)` for --eval-every (the CLI passes
    evaluation/in_training.py's, which training/ cannot import)."""
    config = config_from_args(args)
    if config.preset == "onediffusion-2.8b" and not torch.cuda.is_available():
        print("train: note: no GPU here, and the defaults are the paper's (onediffusion-2.8b, "
              f"{config.steps} steps); on a CPU try --preset tiny --steps 200", flush=True)
    result = train(config, make_evaluators(config))
    if result["losses"]:
        print(f"train: step {result['step']}, last loss {result['losses'][-1]:.5f}, checkpoint {result['checkpoint']}")
    else:  # a rerun of a finished run resumes at --steps and trains nothing
        print(f"train: already at step {result['step']} (checkpoint {result['checkpoint']}); nothing to train: "
              "raise --steps to continue, or train into a new --out")
    return 0
