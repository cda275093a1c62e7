"""`TrainConfig`: the whole configuration of `onegen train`, and its command line, without importing torch.

Kept apart from training/train.py so that `onegen --help`, `onegen train --help` and argument errors
start in well under a second (torch is imported only when a command runs). Every field has a line of
help (`FIELD_HELP`, checked by tests/training/test_cli_help.py); booleans are flags (`--bf16` /
`--no-bf16`), tuples arrive as JSON. `PRESET_NAMES` lists the Next-DiT presets of model/nextdit.py
(the test checks they agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

from onegen.core.tasks import FAMILIES

DEFAULT_WEIGHTS = tuple((family, 1.0) for family in FAMILIES)
PRESET_NAMES = ("onediffusion-2.8b", "small", "tiny")  # model.nextdit.PRESETS


@dataclass(frozen=True)
class TrainConfig:
    shards: str = ""
    out: str = "runs/onegen"
    preset: str = "onediffusion-2.8b"
    text_encoder: str = ""  # needed only for raw (not precomputed) shards, and by `onegen sample`
    vae: str = ""
    batch_size: int = 4
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    steps: int = 100_000
    shift: float = 3.0
    clean_condition_prob: float = 0.0  # per sample: hold its condition views clean, out of the loss
    bf16: bool = True  # autocast on CUDA only
    compile: bool = False
    fsdp: bool | None = None  # None: FSDP2 for the 2.8B preset under torchrun, DDP otherwise
    log_every: int = 10
    ckpt_every: int = 1000
    seed: int = 0
    task_weights: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS
    buckets: tuple[tuple[int, int], ...] = ((256, 256),)
    caption_dropout: float = 0.1
    shuffle_buffer: int = 64
    num_workers: int = 2
    progress: bool = True
    sample_rows: int = 4  # samples per family in the checkpoint-time TensorBoard grid (0: none)
    data_log: bool = False  # debug: OUT/data_log/rank{N}.jsonl (keys seen, parameter hash) every step

    def data(self):
        """The loader's `DataConfig` (training/data.py)."""
        from onegen.training.data import DataConfig

        return DataConfig(self.shards, self.batch_size, self.buckets, self.task_weights, self.caption_dropout,
                          self.shuffle_buffer, seed=self.seed, num_workers=self.num_workers)


_FAMILIES_HELP = "; ".join(f"{family} = {', '.join(tasks)}" for family, tasks in FAMILIES.items())
FIELD_HELP = {
    "shards": "shards folder to train on (`onegen precompute` output: latents + T5 states; raw shards need "
              "--text-encoder and --vae)",
    "out": "run folder: checkpoints/step_N (resumed on a rerun), tb/ (TensorBoard)",
    "preset": f"Next-DiT size: {', '.join(PRESET_NAMES)} (2.8B needs GPUs; use tiny or small on a CPU)",
    "text_encoder": "T5 encoder (hub id in the offline cache or a local folder); raw shards and `sample` need it",
    "vae": "16-channel AutoencoderKL (hub id or folder); raw shards and `sample` need it",
    "batch_size": "samples per step per process",
    "lr": "AdamW learning rate",
    "betas": "AdamW betas, JSON, e.g. [0.9, 0.95]",
    "weight_decay": "AdamW weight decay",
    "ema_decay": "EMA decay per step (the EMA is what `sample` uses)",
    "grad_clip": "gradient-norm clip",
    "steps": "train until this step (a rerun of a finished run trains nothing; raise it to continue)",
    "shift": "logit-normal sigma shift per view (paper: 3)",
    "clean_condition_prob": "probability that a sample holds its condition views clean and out of the loss",
    "bf16": "bf16 autocast on CUDA (ignored on CPU)",
    "compile": "torch.compile the model",
    "fsdp": "FSDP2 under torchrun (default: on for onediffusion-2.8b, DDP otherwise)",
    "log_every": "steps between loss updates on the progress bar",
    "ckpt_every": "steps between checkpoints (the last step is always saved)",
    "seed": "seed of the model init, the loss noise and the data order",
    "task_weights": f"JSON [[family, weight], ...] over task families ({_FAMILIES_HELP})",
    "buckets": "JSON [[H, W], ...] resolution buckets; batches are homogeneous in (views, bucket)",
    "caption_dropout": "probability of training a sample without its caption (for CFG)",
    "shuffle_buffer": "samples per family stream shuffle buffer",
    "num_workers": "data loader worker processes",
    "progress": "progress bar on rank 0",
    "sample_rows": "samples per family in the checkpoint-time TensorBoard grid (0: none)",
    "data_log": "debug: OUT/data_log/rank{N}.jsonl of the keys seen every step",
}


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _json_tuples(text: str):
    return _tuples(json.loads(text))


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config` and one flag per TrainConfig field (default None: not given, the config's value is kept)."""
    parser.add_argument("--config", help="JSON file of TrainConfig fields; flags override it")
    for field in dataclasses.fields(TrainConfig):
        flag = f"--{field.name.replace('_', '-')}"
        text = f"{FIELD_HELP[field.name]} (default: {json.dumps(field.default)})"
        if isinstance(field.default, bool) or field.name == "fsdp":
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(field.default, tuple):
            parser.add_argument(flag, dest=field.name, type=_json_tuples, default=None, metavar="JSON", help=text)
        else:
            parser.add_argument(flag, dest=field.name, type=type(field.default), default=None, help=text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from --config FILE.json, overridden by any flag given on the command line."""
    values = {}
    if args.config:
        with open(args.config) as handle:
            values = {k: _tuples(v) for k, v in json.load(handle).items()}
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = given
    return TrainConfig(**values)
