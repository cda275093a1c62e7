"""Training checkpoints: sharded `torch.distributed.checkpoint` step folders, resume, and export.

Layout of one checkpoint (every rank writes its own shards; nothing is gathered on one rank):

    OUT/checkpoints/step_00001000/
        state/        DCP checkpoint (.metadata + *.distcp) of {"model", "optimizer", "ema"}: the FSDP2
                      convention of `get_state_dict` (sharded DTensors under FSDP2, deduplicated
                      replicas under DDP, plain tensors on one process)
        rank_00000.pt per rank: {"rng": every RNG state, "loader": `Loader.state_dict()`} (plain data and
                      tensors, loaded with weights_only=True)
        meta.json     step, world size, preset and its config, the TrainConfig, the scheduler config
        COMPLETE      written last, by rank 0, after every rank finished: the folder counts only with it
    OUT/checkpoints/latest.txt  name of the newest complete folder (for people; resume scans for COMPLETE)

A folder without COMPLETE is debris of a killed save; it is ignored, and removed when that step is saved
again. `export_weights` consolidates a folder's model or EMA weights, on one process and without building a
model (tensors are allocated from the preset's shapes on the meta device), into one safetensors file whose
metadata names the preset, its config and the scheduler config; `model.nextdit.load_model_checkpoint` and
`onegen sample` read it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from onegen.core.errors import PathError
from onegen.model.flow import ScheduleConfig
from onegen.model.nextdit import PRESETS, build_model

log = logging.getLogger(__name__)
MARKER = "COMPLETE"


# --------------------------------------------------------------------------- RNG states


def rng_states(loss_generator: torch.Generator) -> dict:
    """Every RNG this process draws from, as plain values and tensors (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached],
              "torch": torch.get_rng_state(), "loss_generator": loss_generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, loss_generator: torch.Generator) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    loss_generator.set_state(states["loss_generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# --------------------------------------------------------------------------- save / resume


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _write_text(path: str, text: str) -> None:
    """Write, fsync and rename into place."""
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)


def step_folder(out: str, step: int) -> str:
    return os.path.join(out, "checkpoints", f"step_{step:08d}")


def save_training_checkpoint(config, step: int, model: torch.nn.Module, ema: dict[str, torch.Tensor],
                             optimizer: torch.optim.Optimizer, loss_generator: torch.Generator,
                             loader_state: dict) -> str:
    """Write the step folder of the module docstring from every rank (all ranks call it); returns it."""
    rank, world = _rank_world()
    folder = step_folder(config.out, step)
    if rank == 0:
        if os.path.exists(folder):  # an incomplete save of this step (a complete one is never redone)
            shutil.rmtree(folder)
        os.makedirs(folder)
    _barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state, "ema": ema},
             checkpoint_id=os.path.join(folder, "state"), no_dist=not dist.is_initialized())
    torch.save({"rng": rng_states(loss_generator), "loader": loader_state},
               os.path.join(folder, f"rank_{rank:05d}.pt"))
    _barrier()
    if rank == 0:
        meta = {"step": step, "world_size": world, "preset": config.preset,
                "model_config": dataclasses.asdict(PRESETS[config.preset]), "config": dataclasses.asdict(config),
                "scheduler": dataclasses.asdict(ScheduleConfig())}
        _write_text(os.path.join(folder, "meta.json"), json.dumps(meta, indent=1))
        _write_text(os.path.join(folder, MARKER), "")
        _write_text(os.path.join(config.out, "checkpoints", "latest.txt"), os.path.basename(folder))
    _barrier()
    return folder


def is_complete(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, MARKER))


def latest_checkpoint(out: str) -> str | None:
    """The newest complete step folder under OUT/checkpoints, or None; refuses a run of the older single-file
    format (step_N.pt), which cannot resume into this one (a new OUT starts afresh)."""
    root = os.path.join(out, "checkpoints")
    if not os.path.isdir(root):
        return None
    names = os.listdir(root)
    done = sorted(name for name in names if name.startswith("step_") and is_complete(os.path.join(root, name)))
    legacy = sorted(name for name in names if name.startswith("step_") and name.endswith(".pt"))
    if legacy and not done:
        raise FileExistsError(f"{root} holds single-file checkpoints of an older onegen ({legacy[-1]}); they cannot "
                              "resume as sharded step folders: train into a new --out")
    return os.path.join(root, done[-1]) if done else None


def load_training_checkpoint(folder: str, model: torch.nn.Module, ema: dict[str, torch.Tensor],
                             optimizer: torch.optim.Optimizer, loss_generator: torch.Generator) -> tuple[int, dict | None]:
    """Restore a step folder in place (all ranks call it); returns (step, this rank's loader state or None).

    Model, optimizer and EMA reshard to the current world size; RNG and loader states are per rank, so on
    another world size they are not restored (logged) and the data stream starts afresh."""
    rank, world = _rank_world()
    with open(os.path.join(folder, "meta.json")) as handle:
        meta = json.load(handle)
    model_state, optim_state = get_state_dict(model, optimizer)  # templates (initialises AdamW state)
    state = {"model": model_state, "optimizer": optim_state, "ema": ema}
    dcp.load(state, checkpoint_id=os.path.join(folder, "state"), no_dist=not dist.is_initialized())  # in place
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    if meta["world_size"] != world:
        log.warning("checkpoint %s was saved on %d ranks, running on %d: RNG and data stream not restored",
                    folder, meta["world_size"], world)
        return int(meta["step"]), None
    per_rank = torch.load(os.path.join(folder, f"rank_{rank:05d}.pt"), map_location="cpu", weights_only=True)
    set_rng_states(per_rank["rng"], loss_generator)
    return int(meta["step"]), per_rank["loader"]


# --------------------------------------------------------------------------- export


def read_meta(folder: str) -> dict:
    if not is_complete(folder):
        raise PathError(f"{folder} is not a complete onegen checkpoint (no {MARKER} marker)")
    with open(os.path.join(folder, "meta.json")) as handle:
        return json.load(handle)


def consolidated_weights(folder: str, ema: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(full CPU state dict of the EMA or the model, meta.json) of a step folder, on one process."""
    meta = read_meta(folder)
    if meta["preset"] not in PRESETS:
        raise ValueError(f"checkpoint {folder} holds unknown preset {meta['preset']!r}; known: {sorted(PRESETS)}")
    with torch.device("meta"):
        shapes = build_model(meta["preset"]).state_dict()
    weights = {name: torch.empty(t.shape, dtype=t.dtype) for name, t in shapes.items()}
    dcp.load({"ema" if ema else "model": weights}, checkpoint_id=os.path.join(folder, "state"), no_dist=True)
    return weights, meta


def export_weights(folder: str, out: str, ema: bool = False) -> str:
    """Consolidate a step folder into one safetensors file (metadata: preset, config, scheduler, step)."""
    from safetensors.torch import save_file

    weights, meta = consolidated_weights(folder, ema)
    metadata = {"format": "onegen-nextdit", "preset": meta["preset"], "config": json.dumps(meta["model_config"]),
                "scheduler": json.dumps(meta.get("scheduler") or {}), "step": str(meta["step"]),
                "weights": "ema" if ema else "model", "train_config": json.dumps(meta.get("config") or {})}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(weights, out + ".tmp", metadata=metadata)
    os.replace(out + ".tmp", out)
    return out


def _cmd_export(args) -> int:
    folder = args.checkpoint
    if not os.path.exists(os.path.join(folder, "meta.json")):
        folder = latest_checkpoint(folder) or folder
    meta = read_meta(folder)
    path = export_weights(folder, args.out, ema=args.ema)
    print(f"export: {'EMA' if args.ema else 'model'} of {meta['preset']} step {meta['step']} -> {path}")
    return 0
