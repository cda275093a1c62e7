"""`add_commands(subparsers)`: the training sub-commands of `onegen` (precompute, train, export, sample).

The parsers are defined here without importing torch (or anything heavy): each command's `run` imports
its module when the command runs, so `--help` and argument errors start fast (measured by
bench/cli_startup.py, checked by tests/pipelines/test_cli_entry.py).
"""

from __future__ import annotations

import argparse
import importlib

from onegen.core.job_output import add_verbose_flag
from onegen.core.tasks import sampler_tasks
from onegen.training.train_config import PRESET_NAMES, add_train_arguments

_PRESETS = ", ".join(PRESET_NAMES)


def _lazy(module: str, function: str):
    """A `run` that imports `module` only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return run


def _run_train(args: argparse.Namespace) -> int:
    """`onegen train`, with the `--eval-every` evaluators of evaluation/in_training.py (imported only now)."""
    from onegen.evaluation.in_training import training_evaluators
    from onegen.training.train import run_train_command

    return run_train_command(args, training_evaluators)


def _run_precompute(args: argparse.Namespace) -> int:
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return _lazy("onegen.training.precompute", "_cmd_precompute")(args)


def add_precompute_command(subparsers) -> None:
    parser = subparsers.add_parser("precompute", help="shards -> shards with VAE latents + T5 states",
                                   description="Encode every image view with the VAE and every prompt with T5 "
                                               "once, so training reads latents and is GPU-bound.")
    parser.add_argument("shards", help="shards folder (`onegen build --out`)")
    parser.add_argument("--out", required=True, help="folder for the precomputed shards (train --shards on it)")
    parser.add_argument("--text-encoder", required=True,
                        help="T5 encoder: hub id in the offline HF cache (e.g. google/t5-v1_1-xxl) or a local folder")
    parser.add_argument("--vae", required=True, help="16-channel AutoencoderKL: hub id or local folder")
    parser.add_argument("--buckets", default="256x256",
                        help="HxW resolution buckets, comma separated; each image goes to its nearest (default: 256x256)")
    parser.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    add_verbose_flag(parser)
    parser.set_defaults(run=_run_precompute)


def add_train_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train the Next-DiT on (precomputed) shards",
        description="Flow-matching training of the Next-DiT. The defaults are the paper's (onediffusion-2.8b, "
                    "100k steps, bf16 on CUDA): on a CPU use e.g. --preset tiny --steps 200. Multi-GPU: "
                    "torchrun --nproc-per-node N -m onegen.pipelines.cli.main train ... (FSDP2 for the 2.8B preset). "
                    f"Presets: {_PRESETS}.")
    add_train_arguments(parser)
    add_verbose_flag(parser)
    parser.set_defaults(run=_run_train)


def add_export_command(subparsers) -> None:
    parser = subparsers.add_parser("export", help="consolidate a training checkpoint into one .safetensors file")
    parser.add_argument("checkpoint", help="a step folder OUT/checkpoints/step_N (or OUT: its latest)")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights (default: the model's)")
    parser.set_defaults(run=_lazy("onegen.training.checkpoint", "_cmd_export"))


def add_sample_command(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="sample a trained Next-DiT for one task")
    parser.add_argument("--checkpoint", required=True,
                        help="an exported .safetensors (`onegen export`, model or --ema), a .pt, or a training "
                             "step folder (its EMA)")
    parser.add_argument("--preset", default="onediffusion-2.8b",
                        help=f"the Next-DiT preset the checkpoint must hold: {_PRESETS} (default: onediffusion-2.8b)")
    parser.add_argument("--task", required=True, choices=sampler_tasks(), metavar="TASK",
                        help=f"one of: {', '.join(sampler_tasks())}")
    parser.add_argument("--prompt", default="", help="caption (the task token is added)")
    parser.add_argument("--condition", action="append", default=[],
                        help="condition image (repeat for several); written to the output as given")
    parser.add_argument("--reference-prompt", action="append", default=[],
                        help="faceid: caption of the matching --condition reference (repeat, in order)")
    parser.add_argument("--cameras", help="multiview: JSON with OpenCV c2w (N,4,4) and intrinsics (N,3,3)")
    parser.add_argument("--num-views", type=int, default=2, help="multiview: images in all, given + generated")
    parser.add_argument("--size", default="256x256", help="HxW pixels (default: 256x256)")
    parser.add_argument("--steps", type=int, help="Euler steps (default: 30; with --prompts the paper's 100)")
    parser.add_argument("--cfg-scale", type=float,
                        help="text-only classifier-free guidance (default: 4; with --prompts the paper's 5)")
    parser.add_argument("--prompts", metavar="FILE.jsonl",
                        help="GenEval: text2image for every line of its prompt file, written as "
                             "OUT/<index>/metadata.jsonl + OUT/<index>/samples/<n>.png for its evaluate_images.py")
    parser.add_argument("--images-per-prompt", type=int, default=4, help="--prompts: images a prompt (default: 4)")
    parser.add_argument("--negative-prompt", default="", help="CFG's unconditional caption (default: none)")
    parser.add_argument("--cond-timestep", choices=("last", "zero"), default="last",
                        help="condition views' timestep: the schedule's last (released sampler) or 0")
    parser.add_argument("--schedule", choices=("release", "fixed"), default="release",
                        help="release: dynamic shift from the generated tokens; fixed: --shift")
    parser.add_argument("--shift", type=float, default=3.0, help="the fixed schedule's shift")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--text-encoder", help="default: the training config's")
    parser.add_argument("--vae", help="default: the training config's")
    parser.add_argument("--out", required=True, help="folder for view_<i>.png, grid.png (and cameras.json)")
    add_verbose_flag(parser)
    parser.set_defaults(run=_lazy("onegen.training.sample", "_cmd_sample"))


def add_commands(subparsers) -> None:
    """Add `precompute`, `train`, `export` and `sample`; each sets `run` (args -> exit code)."""
    add_precompute_command(subparsers)
    add_train_command(subparsers)
    add_export_command(subparsers)
    add_sample_command(subparsers)
