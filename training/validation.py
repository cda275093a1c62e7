"""Validation while training: the flow-matching loss per task family at fixed, stratified timesteps.

The validation set (`TrainConfig`): `val_shards`, a shards folder like --shards, or `val_fraction` f, the
samples of the training shards whose key hashes below f (`data.held_out`; the training stream skips exactly
those). Only families with a positive weight in `task_weights` are validated.

The validation stream (`val_samples`): per family, its shards in sorted order and each tar from start to end;
the families (sorted by name) interleaved round-robin, so the first N samples cover every family; the first
`val_samples` of it are the validation set. Under torchrun sample i of it belongs to rank i % world; each rank
batches its own samples by (view kinds, size), `batch_size` at a time, as training does.

The loss (`Validator.evaluate`): for k = 0..K-1 (K = `val_timesteps`) every view of every sample gets sigma
t_k = (k + 0.5) / K, the noise of sample `key` at k is drawn from a CPU generator seeded by sha256(key, k),
and the loss is `model.flow.flow_loss_at`, the very function the training step's `flow_loss` ends in: same
target (noise - x0), same per-view MSE, every view in the loss (the default objective; clean conditions are a
training-time option and are not validated). Captions are always kept (no caption dropout). Two evaluations
of the same weights therefore give identical numbers, whatever the step, the batch composition or the
number of ranks. The model is put in eval mode under no_grad (bf16 autocast on CUDA, as training), holding
the EMA weights (`val_ema`, default: the EMA is what `onegen export --ema` and `sample` ship; its numbers
lag the raw model's by about 1 / (1 - ema_decay) steps) or its own. Under DDP / FSDP2 every rank evaluates
its slice, ranks with fewer batches run filler batches (outputs dropped) so all ranks call the model the
same number of times (FSDP2 all-gathers inside forward), and the per-family sums are all-reduced.

What we took from torchtitan's FLUX validator (pytorch/torchtitan, torchtitan/experiments/flux/validate.py,
`FluxValidator.validate` with `validation.all_timesteps`): the 8 stratified timesteps (i + 0.5) / 8 at which
every sample is evaluated, eval mode and no_grad, classifier-free-guidance dropout switched off during
validation, a cap on how much of the validation data one evaluation reads, and the mean all-reduced over
data-parallel ranks. Unlike it we seed the noise per (sample, timestep) (it draws `randn_like` from the
global RNG), report per task family, and sum before averaging, so ranks with unequal shares weigh right.

Result (`evaluate`): {"step", "weights" ("ema" | "model"), "loss" (mean over the families present),
"families": {family: mean loss}, "samples": {family: count}, "timesteps": [t_k], "per_timestep":
{family: [loss at t_k]}}. `record` writes it to TensorBoard (`val/loss/<family>`, `val/loss`) and appends it
as one JSON line to OUT/val.jsonl (rank 0 only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from onegen.core.errors import PathError, UserError
from onegen.manifests import files
from onegen.manifests.query import select_shards
from onegen.model.flow import flow_loss_at
from onegen.training.data import FAMILIES, batch_caption, batch_latents, collate, family_of, held_out, prepare
from onegen.training.streams import read_samples
from onegen.training.train_config import TrainConfig
from onegen.training.train_logs import unwrap

VAL_LOG = "val.jsonl"  # under the run folder


def val_log_path(out: str) -> str:
    return os.path.join(out, VAL_LOG)


def stratified_sigmas(k: int) -> list[float]:
    """[(i + 0.5) / k for i in 0..k-1]: the midpoints of k equal bins of [0, 1]."""
    return [(i + 0.5) / k for i in range(k)]


def noise_seed(key: str, k: int) -> int:
    """The seed of sample `key`'s noise at timestep index k (63 bits of sha256, independent of the run's seed)."""
    return int.from_bytes(hashlib.sha256(f"{key}\0{k}".encode()).digest()[:8], "big") >> 1


def sample_noise(keys: list[str], k: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) float32 on the CPU: one standard normal draw per key from its own `noise_seed(key, k)`."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed(key, k)))
                        for key in keys])


def validation_shards(config: TrainConfig) -> dict[str, list[str]]:
    """{family: its shard paths} of the validation set, families with a positive weight only (sorted).

    Raises a PathError when `val_shards` is not a folder or holds no shard of a weighted family."""
    folder = config.val_shards or config.data.shards
    if config.val_shards and not files.exists(folder):
        raise PathError(f"--val-shards {folder}: no such folder (expected a shards folder, like --shards)")
    weights = dict(config.data.task_weights)
    found = {family: select_shards(folder, tasks=list(FAMILIES[family]))
             for family in sorted(FAMILIES) if weights.get(family, 0) > 0}
    found = {family: urls for family, urls in found.items() if urls}
    if not found:
        families = ", ".join(f for f in sorted(FAMILIES) if weights.get(f, 0) > 0)
        raise PathError(f"{'--val-shards' if config.val_shards else '--shards'} {folder}: no shards of the trained "
                        f"task families ({families}) to validate on")
    return found


def _family_stream(urls: list[str], family: str, holdout: float) -> Iterator[dict]:
    """Raw samples (tar members) of one family in shard order; with `holdout` > 0 only the held-out ones."""
    for index, url in enumerate(urls):
        for raw, _ in read_samples(url, index):
            if holdout > 0 and not held_out(raw.members["__key__"], holdout):
                continue
            if family_of(json.loads(raw.members["json"])["task"]) == family:
                yield raw.members


def validation_stream(config: TrainConfig, shards: dict[str, list[str]]) -> Iterator[tuple[str, dict]]:
    """(family, raw sample) of the validation stream: the families interleaved round-robin (module docstring)."""
    holdout = 0.0 if config.val_shards else config.val_fraction
    streams = {family: _family_stream(urls, family, holdout) for family, urls in shards.items()}
    while streams:
        for family in list(streams):
            sample = next(streams[family], None)
            if sample is None:
                del streams[family]
            else:
                yield family, sample


@contextlib.contextmanager
def weights_swapped(model: torch.nn.Module, weights: dict[str, torch.Tensor] | None):
    """Hold `weights` (parameter name -> tensor shaped and sharded as that parameter, e.g. the EMA shadow) in
    the model's parameters for the duration, then put the parameters back; None: the model as it is."""
    if weights is None:
        yield
        return
    params = dict(unwrap(model).named_parameters())
    saved = {name: params[name].detach().clone() for name in weights}
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor)


@dataclass
class Validator:
    """The validation set of a run and the evaluation of a model on it (module docstring)."""

    config: TrainConfig
    shards: dict[str, list[str]]  # family -> shard paths
    rank: int = 0
    world: int = 1

    @classmethod
    def create(cls, config: TrainConfig, rank: int = 0, world: int = 1) -> Validator:
        """Checks that the validation set has at least one sample (a UserError otherwise)."""
        validator = cls(config, validation_shards(config), rank, world)
        if next(validation_stream(config, validator.shards), None) is None:
            raise UserError(f"--val-fraction {config.val_fraction} holds out no sample of {config.data.shards}: "
                            "raise it, or give --val-shards")
        return validator

    @property
    def families(self) -> list[str]:
        return sorted(self.shards)

    def _batches(self) -> tuple[list[dict], dict]:
        """(this rank's batches, a filler batch of the stream's first sample), decoded as for training."""
        data = self.config.data
        mine, first = [], None
        stream = validation_stream(self.config, self.shards)
        for index, (family, members) in zip(range(self.config.val_samples), stream, strict=False):
            if index != 0 and index % self.world != self.rank:
                continue
            item = prepare(members, family, data, random.Random(0))  # roles: unused, every view is in the loss
            item["keep_caption"] = True  # no caption dropout in validation
            first = first or item
            if index % self.world == self.rank:
                mine.append(item)
        groups: dict[tuple, list[dict]] = {}
        for item in mine:
            groups.setdefault((item["kinds"], item["size"]), []).append(item)
        size = data.batch_size
        batches = [_batch(items[i:i + size]) for items in groups.values() for i in range(0, len(items), size)]
        return batches, _batch([first])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, step: int, device: torch.device, ema: dict | None = None,
                 vae=None, text_encoder=None) -> dict:
        """The validation losses of `model` (holding `ema` when given); every rank calls it together."""
        families, sigmas = self.families, stratified_sigmas(self.config.val_timesteps)
        batches, filler = self._batches()
        rounds = len(batches)
        if self.world > 1:  # every rank runs as many forward passes as the busiest one (FSDP2 gathers in them)
            count = torch.tensor([rounds], device=device)
            dist.all_reduce(count, op=dist.ReduceOp.MAX)
            rounds = int(count.item())
        sums = torch.zeros(len(families), len(sigmas), dtype=torch.float64, device=device)  # (F, K)
        counts = torch.zeros(len(families), dtype=torch.float64, device=device)  # (F,)
        was_training = model.training
        model.eval()
        try:
            with weights_swapped(model, ema):
                for index in range(rounds):
                    batch = batches[index] if index < len(batches) else filler
                    losses = self._batch_losses(model, batch, sigmas, device, vae, text_encoder)  # (B, K)
                    if index < len(batches):
                        rows = torch.tensor([families.index(f) for f in batch["family"]], device=device)  # (B,)
                        sums.index_add_(0, rows, losses.to(device, torch.float64))
                        counts.index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64, device=device))
        finally:
            model.train(was_training)
        if self.world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        return _result(step, families, sigmas, sums.cpu(), counts.cpu(), "ema" if ema is not None else "model")

    def _batch_losses(self, model, batch: dict, sigmas: list[float], device: torch.device, vae,
                      text_encoder) -> torch.Tensor:
        """(B, K) per-sample loss of one batch at each sigma."""
        x0 = batch_latents(batch, vae).to(device)  # (B, 16, V, h, w)
        caption, mask = batch_caption(batch, text_encoder)  # (B, L, D), (B, L)
        caption, mask = caption.to(device), mask.to(device)
        B, _, V = x0.shape[:3]
        columns = []
        for k, sigma in enumerate(sigmas):
            noise = sample_noise(batch["key"], k, tuple(x0.shape[1:])).to(device, x0.dtype)  # (B, 16, V, h, w)
            sigma_bv = torch.full((B, V), sigma, device=device)  # (B, V)
            with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda" and self.config.bf16):
                out = flow_loss_at(model, x0, noise, sigma_bv, caption, mask)
            columns.append(out.per_sample().float())  # (B,)
        return torch.stack(columns, dim=1)  # (B, K)


def _batch(items: list[dict]) -> dict:
    """`data.collate` plus the tensors `Loader` makes in the training process."""
    batch = collate(items)
    batch["generate"] = torch.tensor(batch["generate"], dtype=torch.bool)  # (B, V)
    batch["keep_caption"] = torch.tensor(batch["keep_caption"], dtype=torch.bool)  # (B,)
    return batch


def _result(step: int, families: list[str], sigmas: list[float], sums: torch.Tensor, counts: torch.Tensor,
            weights: str) -> dict:
    """The result dict of the module docstring from (F, K) loss sums and (F,) sample counts."""
    present = [i for i in range(len(families)) if counts[i] > 0]
    per_timestep = {families[i]: (sums[i] / counts[i]).tolist() for i in present}
    per_family = {family: sum(values) / len(values) for family, values in per_timestep.items()}
    return {"step": step, "weights": weights, "loss": sum(per_family.values()) / max(1, len(per_family)),
            "families": per_family, "samples": {families[i]: int(counts[i]) for i in present},
            "timesteps": sigmas, "per_timestep": per_timestep}


def record(result: dict, out: str, writer=None) -> None:
    """TensorBoard scalars val/loss/<family> and val/loss at the result's step, and one line of OUT/val.jsonl."""
    if writer is not None:
        for family, value in result["families"].items():
            writer.add_scalar(f"val/loss/{family}", value, result["step"])
        writer.add_scalar("val/loss", result["loss"], result["step"])
        writer.flush()
    os.makedirs(out, exist_ok=True)
    with open(val_log_path(out), "a") as handle:
        handle.write(json.dumps(result) + "\n")


def record_evaluation(values: dict[str, float | None], step: int, out: str, writer=None) -> None:
    """The `--eval-every` numbers (evaluation/in_training.py): TensorBoard scalars eval/<name> (None, an
    evaluation with nothing scored, is left out) and one line {"step", "eval"} of OUT/val.jsonl."""
    if writer is not None:
        for name, value in values.items():
            if value is not None:
                writer.add_scalar(f"eval/{name}", value, step)
        writer.flush()
    os.makedirs(out, exist_ok=True)
    with open(val_log_path(out), "a") as handle:
        handle.write(json.dumps({"step": step, "eval": values}) + "\n")
