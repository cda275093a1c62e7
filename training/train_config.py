"""`TrainConfig` (with the loader's `DataConfig` nested in it): the whole configuration of `onegen train`,
its command line and its config files, without importing torch.

Kept apart from training/train.py so that `onegen --help`, `onegen train --help` and argument errors
start in well under a second (torch is imported only when a command runs). Every field documents itself
(`setting(help, default)`, core/config_fields.py), and the flags are made from the fields: booleans are
flags (`--bf16` / `--no-bf16`), tuples arrive as JSON, and the loader's fields are spelled `--data.X`
(`--data.reverse-prob 0.3`; `[train.data]` or `data.reverse_prob` in a recipe, `"data": {...}` in a config
file). The seven loader fields that were TrainConfig's own before the nesting (shards, batch_size, buckets,
task_weights, caption_dropout, shuffle_buffer, num_workers) also keep their bare names (`--shards`,
`"batch_size"` in a train.json written by an older run or by a recipe), so nothing written before breaks.
`DataConfig.seed` is not a setting of its own here: the data order follows the run's `--seed`, as before;
nor is `DataConfig.holdout`: it is the run's `--val-fraction`, so the samples validated on are never trained on.

Validation (training/validation.py): `--val-shards FOLDER` (a shards folder, like --shards) or
`--val-fraction F` (a held-out fraction of the training shards' samples, chosen by key hash); every
`--val-every N` steps (0: off; also at step 0 of a fresh run and at the last step) the flow-matching loss per
task family at `--val-timesteps K` fixed sigmas over at most `--val-samples` samples, of the EMA
(`--val-ema`, default) or the raw model. `--keep-checkpoints K` keeps the newest K complete checkpoints
(0: all).
`PRESET_NAMES` lists the Next-DiT presets of model/nextdit.py (a test checks they agree).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from onegen.core.config_fields import (
    add_arguments,
    from_args,
    from_table,
    group,
    require,
    setting,
    table_values,
)
from onegen.core.tasks import FAMILIES

DEFAULT_WEIGHTS = tuple((family, 1.0) for family in FAMILIES)
PRESET_NAMES = ("onediffusion-2.8b", "small", "tiny")  # model.nextdit.PRESETS
BUCKET_MULTIPLE = 16  # pixels: a latent cell is 8 pixels and a patch 2 x 2 cells
_FAMILIES_HELP = "; ".join(f"{family} = {', '.join(tasks)}" for family, tasks in FAMILIES.items())
_PROBABILITIES = ("caption_dropout", "reverse_prob", "pose_prob")


@dataclass(frozen=True)
class DataConfig:
    """The shard loader's settings (training/data.py): what it reads and how it mixes, batches and assigns
    roles."""

    shards: str = setting("shards folder to train on (`onegen precompute` output: latents + T5 states; raw "
                          "shards need --text-encoder and --vae)", "")
    batch_size: int = setting("samples per step per process", 4)
    buckets: tuple[tuple[int, int], ...] = setting(
        f"JSON [[H, W], ...] pixel resolution buckets, multiples of {BUCKET_MULTIPLE}; batches are homogeneous "
        "in (views, bucket)", ((256, 256),))
    task_weights: tuple[tuple[str, float], ...] = setting(
        f"JSON [[family, weight], ...] over task families ({_FAMILIES_HELP})", DEFAULT_WEIGHTS)
    caption_dropout: float = setting("probability of training a sample without its caption (for CFG)", 0.1)
    shuffle_buffer: int = setting("samples per family stream shuffle buffer", 64)
    reverse_prob: float = setting("two-view tasks: probability that a sample generates the condition from the "
                                  "image (e.g. depth estimation) instead of the image from the condition", 0.5)
    pose_prob: float = setting("multiview: probability that a sample generates every ray view from its clean "
                               "images (pose estimation) instead of some images from the others", 0.2)
    seed: int = setting("seed of the data order", 0)
    holdout: float = setting("fraction of the samples held out of the stream by key hash (`data.held_out`)", 0.0)
    num_workers: int = setting("data loader worker processes", 0)

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        require(bool(self.buckets) and all(side > 0 and side % BUCKET_MULTIPLE == 0 for b in self.buckets
                                           for side in b),
                f"buckets must be [H, W] pairs of positive multiples of {BUCKET_MULTIPLE}, got {self.buckets}")
        unknown = [family for family, _ in self.task_weights if family not in FAMILIES]
        require(not unknown, f"task_weights: unknown task family {unknown}; families: {', '.join(FAMILIES)}")
        require(all(weight >= 0 for _, weight in self.task_weights), "task_weights: weights must be >= 0")
        for name in _PROBABILITIES:
            require(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1], got {getattr(self, name)}")
        require(self.shuffle_buffer >= 1, f"shuffle_buffer must be at least 1, got {self.shuffle_buffer}")
        require(self.num_workers >= 0, f"num_workers must be 0 or more, got {self.num_workers}")
        require(0.0 <= self.holdout < 1.0, f"holdout must be in [0, 1), got {self.holdout}")


_LEGACY = ("shards", "batch_size", "buckets", "task_weights", "caption_dropout", "shuffle_buffer", "num_workers")


@dataclass(frozen=True)
class TrainConfig:
    """`onegen train`: the model, the optimiser, the objective, the schedule of logs and checkpoints, and
    the loader (`data`)."""

    out: str = setting("run folder: checkpoints/step_N (resumed on a rerun), tb/ (TensorBoard)", "runs/onegen")
    preset: str = setting(f"Next-DiT size: {', '.join(PRESET_NAMES)} (2.8B needs GPUs; use tiny or small on a "
                          "CPU)", "onediffusion-2.8b")
    text_encoder: str = setting("T5 encoder (hub id in the offline cache or a local folder); raw shards and "
                                "`sample` need it", "")
    vae: str = setting("16-channel AutoencoderKL (hub id or folder); raw shards and `sample` need it", "")
    lr: float = setting("AdamW learning rate", 5e-4)
    betas: tuple[float, float] = setting("AdamW betas, JSON, e.g. [0.9, 0.95]", (0.9, 0.95))
    weight_decay: float = setting("AdamW weight decay", 0.0)
    ema_decay: float = setting("EMA decay per step (the EMA is what `sample` uses)", 0.9999)
    grad_clip: float = setting("gradient-norm clip", 1.0)
    steps: int = setting("train until this step (a rerun of a finished run trains nothing; raise it to continue)",
                         100_000)
    shift: float = setting("logit-normal sigma shift per view (paper: 3)", 3.0)
    clean_condition_prob: float = setting("probability that a sample holds its condition views clean and out of "
                                          "the loss", 0.0)
    bf16: bool = setting("bf16 autocast on CUDA (ignored on CPU)", True)
    compile: bool = setting("torch.compile the model", False)
    fsdp: bool | None = setting("FSDP2 under torchrun (default: on for onediffusion-2.8b, DDP otherwise)", None)
    log_every: int = setting("steps between loss updates on the progress bar", 10)
    ckpt_every: int = setting("steps between checkpoints (the last step is always saved)", 1000)
    seed: int = setting("seed of the model init, the loss noise and the data order", 0)
    progress: bool = setting("progress bar on rank 0", True)
    sample_rows: int = setting("samples per family in the checkpoint-time TensorBoard grid (0: none)", 4)
    data_log: bool = setting("debug: OUT/data_log/rank{N}.jsonl of the keys seen every step", False)
    keep_checkpoints: int = setting("newest complete checkpoints kept (0: keep all)", 3)
    val_shards: str = setting("shards folder to validate on (like --shards); or use --val-fraction", "")
    val_fraction: float = setting("hold out this fraction of the training shards' samples (by key hash) for "
                                  "validation; the training stream never yields them", 0.0)
    val_every: int = setting("steps between validation losses (0: off); also at step 0 and the last step", 500)
    val_samples: int = setting("validate on at most this many samples (the first ones of the validation stream)",
                               256)
    val_timesteps: int = setting("K: validation sigmas t_k = (k + 0.5) / K, k = 0..K-1", 8)
    val_ema: bool = setting("validate the EMA weights (what `export --ema` / `sample` use); --no-val-ema: the "
                            "raw model, which moves sooner early in a run", True)
    eval_every: int = setting("steps between `onegen eval` runs on --eval-depth / --eval-camera (0: off); also at "
                              "the last step", 0)
    eval_depth: str = setting("a small depth set for --eval-every: <name>.npy metric depth (eval depth's folder "
                              "layout) beside the photo <name>.png or .jpg, sides multiples of 16", "")
    eval_camera: str = setting("a small camera set for --eval-every: <scene>/cameras.json (eval camera's folder "
                               "layout) beside the scene's views <scene>/*.png|.jpg in camera order", "")
    eval_items: int = setting("--eval-every: at most this many depth photos and camera scenes (the first by name)", 8)
    eval_sample_steps: int = setting("--eval-every: sampler steps per prediction (Euler, the release schedule)", 20)
    data: DataConfig = group(lambda: DataConfig(num_workers=2), "the shard loader", prefix="data.",
                             legacy=_LEGACY, derived=("seed", "holdout"))

    def __post_init__(self) -> None:
        require(0.0 <= self.clean_condition_prob <= 1.0,
                f"clean_condition_prob must be in [0, 1], got {self.clean_condition_prob}")
        require(self.keep_checkpoints >= 0, f"keep_checkpoints must be 0 (all) or more, got {self.keep_checkpoints}")
        require(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}")
        require(not (self.val_shards and self.val_fraction > 0),
                "give --val-shards or --val-fraction, not both")
        require(self.val_every >= 0, f"val_every must be 0 (off) or more, got {self.val_every}")
        require(self.val_samples >= 1, f"val_samples must be at least 1, got {self.val_samples}")
        require(self.val_timesteps >= 1, f"val_timesteps must be at least 1, got {self.val_timesteps}")
        require(self.eval_every >= 0, f"eval_every must be 0 (off) or more, got {self.eval_every}")
        require(not self.eval_every or bool(self.eval_depth or self.eval_camera),
                "--eval-every needs --eval-depth and/or --eval-camera")
        require(not self.eval_every or bool(self.vae and self.text_encoder),
                "--eval-every samples predictions: it needs --vae and --text-encoder")
        require(self.eval_items >= 1 and self.eval_sample_steps >= 1, "eval_items and eval_sample_steps must be >= 1")
        # the data order follows the run's seed, and the training stream skips the held-out samples
        if (self.data.seed, self.data.holdout) != (self.seed, self.val_fraction):
            object.__setattr__(self, "data", replace(self.data, seed=self.seed, holdout=self.val_fraction))

    @property
    def validates(self) -> bool:
        """Whether the run computes validation losses (a validation set and a positive `val_every`)."""
        return self.val_every > 0 and bool(self.val_shards or self.val_fraction > 0)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config` and one flag per TrainConfig field (default None: not given, the config's value is kept)."""
    parser.add_argument("--config", help="JSON file of TrainConfig fields; flags override it")
    add_arguments(parser, TrainConfig)


def config_from_values(values: Mapping[str, Any], where: str = "") -> TrainConfig:
    """TrainConfig from a JSON-like mapping: `"data": {...}` for the loader, or the bare legacy names
    (module docstring); an unknown key or a wrong type is a SettingError naming `where`."""
    return from_table(TrainConfig, values, where)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from --config FILE.json, overridden by any flag given on the command line."""
    values = {}
    if args.config:
        with open(args.config) as handle:
            values = table_values(TrainConfig, json.load(handle), f"--config {args.config}")
    return from_args(TrainConfig, args, values)
