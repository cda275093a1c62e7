"""The paths a command reads, checked before it runs: a missing or wrong-kind folder is one line, rc 2.

`check_paths(args)` runs in `cli.main` after parsing and before the command (so before any Ray start,
log file or output folder): it raises `PathError` (a user error: `onegen: error: <line>`, exit 2) when

- annotate / dedup / build get a ROOT that does not exist or holds no catalog (never ingested), or a
  shards folder instead of a dataset root;
- manifest stats|verify|select / preview / precompute get a SHARDS that does not exist or is not a
  shards folder (no build.json, no manifests/), e.g. a dataset root;
- train gets no shards, a missing --config, a SHARDS that is not a shards folder, or an unknown --preset;
- sample / export get a --checkpoint (or --condition / --cameras file) that does not exist, or sample an
  unknown --preset;
- any command that starts Ray gets an `--address` (or RAY_ADDRESS) HOST:PORT where nothing accepts a
  connection: Ray itself would retry joining it for many minutes.

Nothing is created on the way: the checks only read.
"""

from __future__ import annotations

import argparse
import os
import socket

from onegen.core.errors import PathError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, ShardLayout


def dataset_root(path: str) -> None:
    """Raise PathError unless `path` is a dataset root with at least one catalog part."""
    if not files.exists(path):
        raise PathError(f"{path}: no such folder (expected a dataset root made by `onegen ingest SOURCE --out ROOT`)")
    if DatasetLayout(path).catalog_parts():
        return
    if _is_shards(path):
        raise PathError(f"{path} is a shards folder, not a dataset root: pass the --out folder of `onegen ingest`")
    raise PathError(f"{path} has no catalog (nothing ingested): run `onegen ingest SOURCE --out {path}` first")


def shards_folder(path: str) -> None:
    """Raise PathError unless `path` is a shards folder (`onegen build --out`, or precompute's --out)."""
    if not files.exists(path):
        raise PathError(f"{path}: no such folder (expected a shards folder made by `onegen build ROOT --out SHARDS`)")
    if _is_shards(path):
        return
    if files.exists(DatasetLayout(path).catalog()):
        raise PathError(f"{path} is a dataset root (catalog/), not a shards folder: pass the --out folder of "
                        "`onegen build`")
    raise PathError(f"{path} is not a shards folder (no build.json, no manifests/): pass the --out folder of "
                    "`onegen build`")


def _is_shards(path: str) -> bool:
    layout = ShardLayout(path)
    return files.exists(layout.record()) or bool(layout.manifest_paths())


def existing(path: str, what: str) -> None:
    if not files.exists(path):
        raise PathError(f"{path}: no such {what}")


def known_preset(name: str) -> None:
    """Raise PathError for a Next-DiT preset that does not exist (imports the model: run time only)."""
    from onegen.model.nextdit import PRESETS

    if name not in PRESETS:
        raise PathError(f"unknown --preset {name!r}; presets: {', '.join(sorted(PRESETS))}")


def _check_train(args: argparse.Namespace) -> None:
    from onegen.training.train_config import config_from_args

    if args.config:
        existing(args.config, "--config file")
    config = config_from_args(args)  # the config file (nested or older flat names) + flags, checked
    if not config.data.shards:
        raise PathError("train needs --shards SHARDS (a shards folder, ideally from `onegen precompute`)")
    shards_folder(config.data.shards)
    known_preset(config.preset)


def _check_sample(args: argparse.Namespace) -> None:
    existing(args.checkpoint, "--checkpoint (an exported .safetensors, a .pt or a training step folder)")
    for condition in args.condition:
        existing(condition, "--condition image")
    if args.cameras:
        existing(args.cameras, "--cameras file")
    known_preset(args.preset)


def ray_address(address: str, seconds: float = 5.0) -> None:
    """Raise PathError when `address` is [ray://]HOST:PORT and nothing there accepts a TCP connection.
    "auto", "local" and forms without a port are left to Ray."""
    host, colon, port = address.split("://", 1)[-1].rpartition(":")
    if not colon or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as error:
        raise PathError(f"--address {address}: no Ray cluster answers there ({error.strerror or error}); "
                        "start one with `ray start --head`, or leave --address out for a local Ray") from None


def check_paths(args: argparse.Namespace) -> None:
    """Raise PathError when a path `args` names cannot be what its command reads (module docstring)."""
    command = args.command
    if hasattr(args, "address") and not getattr(args, "plan", False):  # `run --plan` starts no Ray
        ray_address(args.address or os.environ.get("RAY_ADDRESS", ""))
    if command in ("annotate", "dedup", "build"):
        dataset_root(args.root)
    elif command in ("manifest", "preview", "precompute"):
        shards_folder(args.shards)
    elif command == "train":
        _check_train(args)
    elif command == "sample":
        _check_sample(args)
    elif command == "export":
        existing(args.checkpoint, "checkpoint (a step folder OUT/checkpoints/step_N, or OUT)")
