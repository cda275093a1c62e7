"""`onegen train`: flow-matching training of the Next-DiT on shards (DESIGN §6).

Reads top to bottom: setup (devices, DDP), data (`training.data`), model + EMA + AdamW, the loop,
checkpoints. A checkpoint (OUT/checkpoints/step_XXXXXXXX.pt, pointed to by OUT/checkpoints/latest.txt)
holds the model, EMA, optimizer, step, data position (batches drawn), every RNG state and the config
that made it, so a rerun with the same OUT resumes exactly: the loader is deterministic given the seed
and is fast-forwarded by the stored position. OUT/ema_XXXXXXXX.pt is the EMA in `save_checkpoint`
format for `onegen sample`.

Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DDP, or sharded with FSDP2
`fully_shard` per block when `fsdp` is set (default for the 2.8B preset). bf16 autocast on CUDA only.
Logs: tqdm, and TensorBoard scalars loss/<family> per step under OUT/tb; at each checkpoint an image
`samples/<family>` per family seen since the last one (`sample_grid`). `data_log` (debug) writes
OUT/data_log/rank{N}.jsonl: per step the sample keys this rank trained on and a hash of the full
parameters, so tests can see the split by node and the DDP/FSDP sync from the outside.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from onegen.model.flow import flow_loss
from onegen.model.nextdit import NextDiT, build_model, save_checkpoint
from onegen.training.data import DEFAULT_WEIGHTS, DataConfig, batch_caption, batch_latents, make_loader

log = logging.getLogger(__name__)


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

    def data(self) -> DataConfig:
        return DataConfig(self.shards, self.batch_size, self.buckets, self.task_weights, self.caption_dropout,
                          self.shuffle_buffer, seed=self.seed, num_workers=self.num_workers)


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


def _unwrap(model: torch.nn.Module) -> NextDiT:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A full (unsharded) CPU copy; FSDP2 parameters are DTensors."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().cpu().clone()


# --------------------------------------------------------------------------- loss per task


class _Recorder(torch.nn.Module):
    """Passes calls to the model and keeps the last noised input, timesteps and prediction."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.seen = model, {}

    def forward(self, x: torch.Tensor, t: torch.Tensor, caption: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = self.model(x, t, caption, mask)
        self.seen = {"x": x.detach(), "t": t.detach(), "v": v.detach()}
        return v


def per_sample_loss(seen: dict, x0: torch.Tensor, generate: torch.Tensor) -> torch.Tensor:
    """(B,) flow loss of each sample over its generated views, from a recorded call (for logging).

    x_sigma = x0 + sigma * (noise - x0), so the target noise - x0 = (x_sigma - x0) / sigma (sigma > 0 on
    generated views).
    """
    sigma = (seen["t"] / 1000).clamp(min=1e-6)[:, None, :, None, None]  # (B, 1, V, 1, 1)
    target = (seen["x"].float() - x0.float()) / sigma  # (B, C, V, H, W)
    err = (seen["v"].float() - target).pow(2).mean(dim=(1, 3, 4))  # (B, V)
    weight = generate.float()
    return (err * weight).sum(1) / weight.sum(1).clamp(min=1)  # (B,)


# --------------------------------------------------------------------------- checkpoints


def rng_states(loss_generator: torch.Generator) -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "loss_generator": loss_generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, loss_generator: torch.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    loss_generator.set_state(states["loss_generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_checkpoint(config: TrainConfig, step: int, model, ema: dict[str, torch.Tensor], optimizer,
                             loss_generator: torch.Generator, rank: int) -> str:
    """Write OUT/checkpoints/step_N.pt (+ latest.txt) and OUT/ema_N.pt; returns the checkpoint path.

    "rng" holds every rank's RNG states (a list indexed by rank): the loss noise generator is seeded per
    rank, so restoring rank 0's states everywhere would give all ranks the same noise after a resume.
    """
    rng = [rng_states(loss_generator)]
    if dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_state, optim_state = get_state_dict(model, optimizer,
                                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        rng = [None] * dist.get_world_size()
        dist.all_gather_object(rng, rng_states(loss_generator))
    else:
        model_state, optim_state = _unwrap(model).state_dict(), optimizer.state_dict()
    ema_state = {k: _full(v) for k, v in ema.items()}
    folder = os.path.join(config.out, "checkpoints")
    path = os.path.join(folder, f"step_{step:08d}.pt")
    if rank == 0:
        os.makedirs(folder, exist_ok=True)
        payload = {"step": step, "data_position": step, "model": model_state, "ema": ema_state,
                   "optimizer": optim_state, "rng": rng, "config": dataclasses.asdict(config),
                   "preset": config.preset}
        torch.save(payload, path + ".tmp")
        os.replace(path + ".tmp", path)
        ema_model = build_model(config.preset)
        ema_model.load_state_dict(ema_state)
        save_checkpoint(ema_model, os.path.join(config.out, f"ema_{step:08d}.pt"), config.preset)
        with open(os.path.join(folder, "latest.txt.tmp"), "w") as handle:
            handle.write(os.path.basename(path))
        os.replace(os.path.join(folder, "latest.txt.tmp"), os.path.join(folder, "latest.txt"))
    if dist.is_initialized():
        dist.barrier()
    return path


def latest_checkpoint(out: str) -> str | None:
    pointer = os.path.join(out, "checkpoints", "latest.txt")
    if not os.path.exists(pointer):
        return None
    with open(pointer) as handle:
        return os.path.join(out, "checkpoints", handle.read().strip())


def load_training_checkpoint(path: str, model, ema: dict[str, torch.Tensor], optimizer,
                             loss_generator: torch.Generator) -> int:
    """Restore everything `save_training_checkpoint` wrote; returns the step to continue from."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=payload["model"], optim_state_dict=payload["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    else:
        _unwrap(model).load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    with torch.no_grad():
        for name, tensor in ema.items():
            full = payload["ema"][name].to(tensor.device)
            if hasattr(tensor, "full_tensor"):  # FSDP2 shard: take this rank's slice of the full tensor
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full, tensor.device_mesh, tensor.placements)
            tensor.copy_(full)
    states = payload["rng"] if isinstance(payload["rng"], list) else [payload["rng"]]  # older: one dict
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if len(states) == world:
        set_rng_states(states[rank], loss_generator)
    else:  # a different world size cannot resume exactly anyway; keep this rank's fresh seeds
        log.warning("checkpoint %s holds RNG states of %d ranks, running on %d: RNG not restored",
                    path, len(states), world)
    return int(payload["step"])


# --------------------------------------------------------------------------- loop


def train_step(model, batch: dict, optimizer, ema: dict[str, torch.Tensor], config: TrainConfig, device,
               loss_generator: torch.Generator, vae=None, text_encoder=None) -> tuple[float, dict[str, float]]:
    """One optimizer step; returns (loss, {family: mean loss of its samples in this batch})."""
    x0 = batch_latents(batch, vae).to(device)  # (B, 16, V, h, w)
    caption, mask = batch_caption(batch, text_encoder)  # (B, L, D), (B, L)
    caption, mask = caption.to(device), mask.to(device)
    generate = batch["generate"].to(device)  # (B, V)
    recorder = _Recorder(model)
    with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda" and config.bf16):
        loss = flow_loss(recorder, x0, caption, mask, generate, config.shift, loss_generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    with torch.no_grad():
        params = dict(_unwrap(model).named_parameters())
        torch._foreach_lerp_(list(ema.values()), [params[k].detach() for k in ema], 1 - config.ema_decay)
        per_sample = per_sample_loss(recorder.seen, x0, generate).cpu()  # (B,)
    per_family: dict[str, list[float]] = {}
    for family, value in zip(batch["family"], per_sample.tolist(), strict=True):
        per_family.setdefault(family, []).append(value)
    return loss.item(), {f: sum(v) / len(v) for f, v in per_family.items()}


def train(config: TrainConfig) -> dict:
    """Run (or resume) training to config.steps; returns {"step", "losses", "checkpoint"}."""
    from tqdm import tqdm

    rank, world, device = setup_distributed()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = build_model(config.preset).to(device)
    model = wrap_model(model, config, world, device)
    ema = {k: p.detach().clone() for k, p in _unwrap(model).named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    loss_generator = torch.Generator(device).manual_seed(config.seed * 1_000_003 + rank)
    start = 0
    resume = latest_checkpoint(config.out)
    if resume:
        start = load_training_checkpoint(resume, model, ema, optimizer, loss_generator)
    vae, text_encoder = _encoders(config, device)
    batches = make_loader(config.data(), skip=start)
    writer = _tensorboard(config, rank)
    losses, checkpoint = [], resume
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               disable=rank != 0 or not config.progress, desc="train")
    recent: dict[str, dict] = {}  # family -> its latest samples, for the checkpoint-time grids
    for step in bar:
        batch = next(batches)
        loss, per_family = train_step(model, batch, optimizer, ema, config, device, loss_generator,
                                      vae, text_encoder)
        losses.append(loss)
        if config.data_log:
            _log_data(config, rank, step + 1, batch, model)
        if writer is not None:
            writer.add_scalar("loss/all", loss, step + 1)
            for family, value in per_family.items():
                writer.add_scalar(f"loss/{family}", value, step + 1)
            recent.update(family_samples(batch, config.sample_rows))
        if (step + 1) % config.log_every == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
        if (step + 1) % config.ckpt_every == 0 or step + 1 == config.steps:
            checkpoint = save_training_checkpoint(config, step + 1, model, ema, optimizer, loss_generator, rank)
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


# --------------------------------------------------------------------------- sample grids and data log


def family_samples(batch: dict, rows: int) -> dict[str, dict]:
    """{family: {"views": V tensors (n, C, H, W) on CPU, "kinds"}} of the first `rows` samples of each family
    in a batch (a batch is homogeneous in views and size, not in family)."""
    chosen: dict[str, list[int]] = {}
    for index, family in enumerate(batch["family"]):
        if len(chosen.setdefault(family, [])) < rows:
            chosen[family].append(index)
    return {family: {"views": [view[indices].detach().cpu() for view in batch["views"]], "kinds": batch["kinds"]}
            for family, indices in chosen.items() if indices}


def _view_pictures(view: torch.Tensor, kind: str, vae) -> list[np.ndarray]:
    """One view of n samples -> n (H, W, 3) uint8 pictures at pixel size (latents are 8x upsampled)."""
    from PIL import Image

    from onegen.pipelines.preview_render import ray_false_colour

    if kind == "ray":
        return [np.asarray(ray_false_colour(latent.float().numpy())) for latent in view]  # (8h, 8w, 3)
    if kind == "latent" and vae is not None:
        view = vae.decode(view).cpu()  # (n, 3, 8h, 8w) in [-1, 1]
    if kind == "latent" and vae is None:  # no VAE to decode with: channels 0-2 stretched to [-1, 1]
        rgb = view[:, :3].float()  # (n, 3, h, w)
        low, high = rgb.amin(dim=(1, 2, 3), keepdim=True), rgb.amax(dim=(1, 2, 3), keepdim=True)
        view = (rgb - low) / (high - low).clamp(min=1e-6) * 2 - 1
    pixels = ((view.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if kind == "latent" and vae is None:
        return [np.asarray(Image.fromarray(p).resize((p.shape[1] * 8, p.shape[0] * 8), Image.NEAREST))
                for p in pixels]
    return list(pixels)  # n x (H, W, 3)


def sample_grid(samples: dict, vae=None) -> np.ndarray:
    """(n * H, V * W, 3) uint8: one row per sample, its V views side by side at pixel size.

    `samples` as from `family_samples`. "pixels" views are shown as they are, "latent" views decoded with
    `vae` (a model.vae.Vae; without one, latent channels 0-2 stretched), "ray" views in the false colour
    of `onegen preview` (direction channels 0-2 / RAY_SCALE, [-1, 1] -> RGB).
    """
    columns = [_view_pictures(view, kind, vae) for view, kind in zip(samples["views"], samples["kinds"],
                                                                      strict=True)]
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(*columns, strict=True)], axis=0)


def param_digest(model: torch.nn.Module) -> str:
    """sha256 of the full parameters (name and float32 bytes, in named_parameters order).

    Under FSDP2 this gathers every parameter: all ranks must call it together."""
    digest = hashlib.sha256()
    for name, param in _unwrap(model).named_parameters():
        digest.update(name.encode())
        digest.update(_full(param).float().numpy().tobytes())
    return digest.hexdigest()


def _log_data(config: TrainConfig, rank: int, step: int, batch: dict, model: torch.nn.Module) -> None:
    """Append {"step", "keys", "params" (`param_digest`), "wrapper" (the wrapped model's class name)} to
    OUT/data_log/rank{rank}.jsonl (the `data_log` debug option)."""
    folder = os.path.join(config.out, "data_log")
    os.makedirs(folder, exist_ok=True)
    record = {"step": step, "keys": list(batch["key"]), "params": param_digest(model),
              "wrapper": type(getattr(model, "_orig_mod", model)).__name__}
    with open(os.path.join(folder, f"rank{rank}.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- CLI


def _field_type(field: dataclasses.Field):
    """argparse type for a TrainConfig field: tuples and optional bools arrive as JSON."""
    default = field.default
    if isinstance(default, bool) or default is None:
        return lambda text: json.loads(text.lower())
    if isinstance(default, tuple):
        return lambda text: _tuples(json.loads(text))
    return type(default)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


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


def add_train_command(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train the Next-DiT on (precomputed) shards")
    parser.add_argument("--config", help="JSON file of TrainConfig fields; flags override it")
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=_field_type(field),
                            default=None, help=f"default: {json.dumps(field.default)}")
    parser.set_defaults(run=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    if result["losses"]:
        print(f"train: step {result['step']}, last loss {result['losses'][-1]:.5f}, checkpoint {result['checkpoint']}")
    return 0
