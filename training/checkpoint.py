"""Training checkpoints: sharded `torch.distributed.checkpoint` step folders, resume, and export.

The trainer hands a `Checkpointer` the named `Stateful` parts it saves (objects with `state_dict()` and
`load_state_dict()`, torch.distributed.checkpoint.stateful.Stateful), in two mappings by where their state
lives; the checkpointer knows no part by name, so adding a part is one more entry in a mapping:
- `parts`: state sharded across ranks and resharded on another world size (model, optimizer, EMA):
  one DCP checkpoint of {name: part}; DCP calls `state_dict()` itself (on load too, for the templates
  it loads into in place) and `load_state_dict()` after loading.
- `rank_parts`: per-rank plain data (RNG states, the loader's position): one `torch.save` of
  {name: part.state_dict()} per rank, loaded with weights_only=True, restored only on the same world size.

Layout of one checkpoint (every rank writes its own shards; nothing is gathered on one rank), with the
trainer's parts (training/train.py):

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
again. `Checkpointer.keep` (default None: all) keeps only the newest K complete folders: an older one loses
its marker first, so a removal cut short leaves debris, never a complete folder with missing files.
`export_weights` consolidates a folder's model or EMA weights, on one process and without building a
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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from onegen.core.errors import PathError
from onegen.model.flow import ScheduleConfig
from onegen.model.nextdit import PRESETS, build_model

log = logging.getLogger(__name__)
MARKER = "COMPLETE"


# --------------------------------------------------------------------------- Stateful parts


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


@dataclass
class RngState:
    """This process's RNGs (python, numpy, torch, CUDA) and the loss generator, as a per-rank part."""

    loss_generator: torch.Generator

    def state_dict(self) -> dict:
        return rng_states(self.loss_generator)

    def load_state_dict(self, state: dict) -> None:
        set_rng_states(state, self.loss_generator)


@dataclass
class ModelState:
    """A (DDP / FSDP2 / compiled) model's weights under their plain names (`get_model_state_dict`)."""

    model: torch.nn.Module

    def state_dict(self) -> dict:
        return get_model_state_dict(self.model)

    def load_state_dict(self, state: dict) -> None:
        set_model_state_dict(self.model, state)


@dataclass
class OptimizerState:
    """An optimizer's state keyed by parameter names (`get_optimizer_state_dict`; on a fresh optimizer it
    creates the state first, so that DCP has templates to load into)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def state_dict(self) -> dict:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state: dict) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state)


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


def training_meta(config) -> dict:
    """What meta.json records of a TrainConfig besides step and world size: the preset and its model
    config, the TrainConfig, the scheduler config (read back by `export_weights` and `onegen sample`)."""
    return {"preset": config.preset, "model_config": dataclasses.asdict(PRESETS[config.preset]),
            "config": dataclasses.asdict(config), "scheduler": dataclasses.asdict(ScheduleConfig())}


@dataclass
class Checkpointer:
    """Saves and restores named Stateful parts as OUT/checkpoints/step_N folders (module docstring).

    Every rank constructs it with its own parts and calls `save` / `resume` together. `meta` goes into
    meta.json after {"step", "world_size"}. `keep`: the newest complete folders kept after a save
    (None: all)."""

    out: str
    parts: Mapping[str, Stateful]  # -> state/ (DCP), resharded on another world size
    rank_parts: Mapping[str, Stateful]  # -> rank_NNNNN.pt, restored on the same world size only
    meta: dict
    keep: int | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"keep must be at least 1 checkpoint (or None: all), not {self.keep}")

    def save(self, step: int) -> str:
        """Write step folder `step` from every rank (all ranks call it); returns it."""
        rank, world = _rank_world()
        folder = step_folder(self.out, step)
        if rank == 0:
            if os.path.exists(folder):  # an incomplete save of this step (a complete one is never redone)
                shutil.rmtree(folder)
            os.makedirs(folder)
        _barrier()
        dcp.save(dict(self.parts), checkpoint_id=os.path.join(folder, "state"), no_dist=not dist.is_initialized())
        torch.save({name: part.state_dict() for name, part in self.rank_parts.items()},
                   os.path.join(folder, f"rank_{rank:05d}.pt"))
        _barrier()
        if rank == 0:
            meta = {"step": step, "world_size": world, **self.meta}
            _write_text(os.path.join(folder, "meta.json"), json.dumps(meta, indent=1))
            _write_text(os.path.join(folder, MARKER), "")
            _write_text(os.path.join(self.out, "checkpoints", "latest.txt"), os.path.basename(folder))
            self._drop_old()
        _barrier()
        return folder

    def _drop_old(self) -> None:
        """Remove complete folders older than the newest `keep` (marker first: see the module docstring)."""
        if self.keep is None:
            return
        for folder in complete_folders(self.out)[:-self.keep]:
            os.remove(os.path.join(folder, MARKER))
            shutil.rmtree(folder)

    def restore(self, folder: str) -> int:
        """Load a step folder into the parts in place (all ranks call it); returns its step.

        `parts` reshard to the current world size; `rank_parts` are per rank, so on another world size they
        are not restored (logged) and keep their current state (the data stream starts afresh)."""
        rank, world = _rank_world()
        with open(os.path.join(folder, "meta.json")) as handle:
            meta = json.load(handle)
        dcp.load(dict(self.parts), checkpoint_id=os.path.join(folder, "state"), no_dist=not dist.is_initialized())
        if meta["world_size"] != world:
            log.warning("checkpoint %s was saved on %d ranks, running on %d: RNG and data stream not restored",
                        folder, meta["world_size"], world)
            return int(meta["step"])
        per_rank = torch.load(os.path.join(folder, f"rank_{rank:05d}.pt"), map_location="cpu", weights_only=True)
        missing = sorted(set(self.rank_parts) - set(per_rank))
        if missing:
            raise KeyError(f"checkpoint {folder} holds no per-rank state for {missing} (it has {sorted(per_rank)})")
        for name, part in self.rank_parts.items():
            part.load_state_dict(per_rank[name])
        return int(meta["step"])

    def resume(self) -> tuple[int, str | None]:
        """Restore the newest complete step folder of `out`, if any: (its step, the folder), else (0, None)."""
        folder = latest_checkpoint(self.out)
        return (self.restore(folder), folder) if folder else (0, None)


def is_complete(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, MARKER))


def complete_folders(out: str) -> list[str]:
    """The complete step folders under OUT/checkpoints, oldest first."""
    root = os.path.join(out, "checkpoints")
    if not os.path.isdir(root):
        return []
    return [os.path.join(root, name) for name in sorted(os.listdir(root))
            if name.startswith("step_") and is_complete(os.path.join(root, name))]


def latest_checkpoint(out: str) -> str | None:
    """The newest complete step folder under OUT/checkpoints, or None; refuses a run of the older single-file
    format (step_N.pt), which cannot resume into this one (a new OUT starts afresh)."""
    root = os.path.join(out, "checkpoints")
    if not os.path.isdir(root):
        return None
    done = complete_folders(out)
    legacy = sorted(name for name in os.listdir(root) if name.startswith("step_") and name.endswith(".pt"))
    if legacy and not done:
        raise FileExistsError(f"{root} holds single-file checkpoints of an older onegen ({legacy[-1]}); they cannot "
                              "resume as sharded step folders: train into a new --out")
    return done[-1] if done else None


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
