"""Resolving model ids / local paths to weights on disk, without ever touching the network.

`resolve_checkpoint("depth-anything/Depth-Anything-V2-Small-hf")` looks in the local HF cache
(offline, `local_files_only=True`); a path that exists is used as it is. A miss raises
`MissingCheckpointError` whose message is one line naming the id and where it was looked for, so a
job fails at actor setup instead of hanging on a hub call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from onegen.core.errors import UserError


class MissingCheckpointError(UserError):
    """Weights for a model id / path are not on this machine."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's files are: `path` is a local folder (or file); `revision` the hub commit or ""."""

    model_id: str
    path: str
    revision: str


def resolve_checkpoint(model_id: str, what: str = "model") -> Checkpoint:
    """Find `model_id` (an existing local path, or a hub repo id in the local HF cache)."""
    if not model_id:
        raise MissingCheckpointError(f"no {what} checkpoint configured: pass a hub id or a local path")
    expanded = os.path.expanduser(model_id)
    if os.path.exists(expanded):
        return Checkpoint(model_id=model_id, path=expanded, revision=_local_revision(expanded))
    if expanded.startswith(("/", ".", "~")) or expanded.count("/") != 1:
        raise MissingCheckpointError(
            f"{what} checkpoint {model_id!r} not found: the path does not exist (give a local dir or a hub id)"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        path = snapshot_download(model_id, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - every miss (not cached, offline, bad id) is one message
        raise MissingCheckpointError(
            f"{what} checkpoint {model_id!r} is not in the local HF cache ({HF_HUB_CACHE}); "
            f"download it there (`hf download {model_id}`) or pass a local dir "
            f"[{type(error).__name__}]"
        ) from None
    return Checkpoint(model_id=model_id, path=path, revision=Path(path).name)


def _local_revision(path: str) -> str:
    """The hub commit when `path` is a snapshot folder of the HF cache, else ""."""
    parts = Path(path).resolve().parts
    if len(parts) >= 2 and parts[-2] == "snapshots":
        return parts[-1]
    return ""


def repo_subfolder(path: str, name: str) -> str:
    """`path/name` when the checkpoint is a diffusers-style repo (text_encoder/, vae/, ...), else `path`."""
    candidate = os.path.join(path, name)
    return candidate if os.path.isdir(candidate) else path


def pick_device(num_gpus: float) -> str:
    """"cuda" when the annotator asked for a GPU and one is visible, else "cpu"."""
    import torch

    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def import_yolo():
    """ultralytics' YOLO class, imported so that it can never reach the network, change Pillow or print
    on stdout.

    ultralytics checks online and auto-installs packages unless told not to (YOLO_OFFLINE,
    YOLO_AUTOINSTALL), and on import it monkey-patches `PIL.Image.open` so that any unidentified image
    triggers a pip install of pi-heif. That would turn a bad input file anywhere in the same process
    into a network call; the original `Image.open` is put back.
    Its logger writes to the `sys.stdout` of import time, and the import itself logs a 3-line banner
    when its settings file is new (a fresh HOME / YOLO_CONFIG_DIR). Those are third-party messages: the
    import runs with stdout sent to stderr, and the logger then writes to whatever `sys.stderr` is when
    it logs, which a quiet job sends to its log file (core/job_output.py).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    from PIL import Image

    with contextlib.redirect_stdout(sys.stderr):
        from ultralytics import YOLO
    for handler in logging.getLogger("ultralytics").handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _CurrentStderr):
            handler.setStream(_CurrentStderr())
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and hasattr(patches, "_image_open"):
        Image.open = patches._image_open  # the Pillow original, kept by ultralytics when it patched
    return YOLO


class _CurrentStderr:
    """A stream that writes to `sys.stderr` as it is at each write (a quiet job swaps it for its log)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
