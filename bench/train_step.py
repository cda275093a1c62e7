"""Benchmark: one Next-DiT train step, bare vs fed by the real shard loader from precomputed shards.

Default (GPU): preset onediffusion-2.8b, bf16 autocast, 4 views of 256 px (32 x 32 latents), batch 4. It
writes synthetic precomputed shards (random float16 latents + T5 states, the layout `onegen precompute`
writes) to a temp dir unless --shards is given, then times
  bare: `Trainer.step` on one fixed batch already on the device (model + optimizer + EMA only);
  data: `Trainer.step` on batches drawn from `make_loader` (decode, collate, host->device copy too);
first eager, then (on a GPU, unless --no-compile) under torch.compile, as training runs it. Each result is
printed as it exists (`summary:` lines), so a run killed during compilation keeps the eager numbers. On a GPU
the model is built on the device (initialising 2.8B parameters on the CPU takes longer than the steps).
MFU = achieved FLOP/s / peak, FLOPs per step = 6 * params * tokens + attention (12 * depth * hidden * N^2
per sample, fwd + bwd); peak from --peak-tflops (989 for H100 bf16 dense; none on CPU: MFU not shown).

    python bench/train_step.py                                  # GPU, 2.8B, eager then compiled
    python bench/train_step.py --preset tiny --device cpu --size 64 --out bench/results/train_step_cpu_tiny.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.model.nextdit import PRESETS, build_model
from onegen.training.data import DataConfig, make_loader
from onegen.training.train import Ema, TrainConfig, Trainer, wrap_model


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def synthetic_shards(out: str, views: int, size: int, width: int, n: int = 64) -> str:
    """n faceid-like samples of `views` latent views (views.npy float16 (V, 16, size/8, size/8), as precompute
    writes them) + 120 T5 tokens."""
    rng = np.random.default_rng(0)
    writer = ShardWriter(out, "bench", "faceid", samples_per_shard=16, max_shard_bytes=1 << 34)
    for i in range(n):
        latents = rng.standard_normal((views, 16, size // 8, size // 8)).astype(np.float16)  # (V, 16, h, w)
        members = [("views.npy", _npy(latents)), ("kinds.txt", " ".join(["latent"] * views).encode())]
        meta = {"task": "faceid", "n_views": views, "roles": ["image"] * views, "prompt": "[[faceid]] x"}
        members += [("txt", b"[[faceid]] x"), ("json", json.dumps(meta).encode()),
                    ("t5.npy", _npy(rng.standard_normal((120, width)).astype(np.float16))),
                    ("t5mask.npy", _npy(np.ones(120, dtype=bool)))]
        writer.add(Sample(f"b{i}", "faceid", "[[faceid]] x", "bench", members, views, [], [], size, size, i))
    writer.finish()
    return out


def step_flops(preset: str, batch: int, views: int, size: int) -> float:
    cfg = PRESETS[preset]
    tokens = views * (size // 16) ** 2
    params = sum(p.numel() for p in build_model(preset).parameters()) if preset != "onediffusion-2.8b" else 2.8e9
    return batch * (6 * params * tokens + 12 * cfg.depth * cfg.hidden * tokens**2)


def timed(fn, steps: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up (compilation, allocator)
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(label: str, model, loader, fixed: dict, optimizer, ema: Ema, config: TrainConfig, device: torch.device,
            args, flops: float) -> list[str]:
    """Time the bare and the loader-fed `Trainer.step` of `model`; print and return the report lines."""
    trainer = Trainer(model, optimizer, ema, config, device, torch.Generator(device).manual_seed(0))
    bare = timed(lambda: trainer.step(fixed), args.steps, device)
    fed = timed(lambda: trainer.step(next(loader)), args.steps, device)
    lines = [f"{label:<8} bare step: {bare * 1e3:.1f} ms | with loader: {fed * 1e3:.1f} ms | loader overhead "
             f"{100 * (fed - bare) / bare:+.1f}% | {flops / 1e12:.3f} TFLOP/step"]
    summary = f"summary: {args.preset} {label}: {fed * 1e3:.1f} ms/step with the loader ({bare * 1e3:.1f} bare)"
    if args.peak_tflops:
        mfu_bare, mfu_fed = (100 * flops / t / (args.peak_tflops * 1e12) for t in (bare, fed))
        lines.append(f"{label:<8} MFU bare: {mfu_bare:.1f}% | MFU with loader: {mfu_fed:.1f}% "
                     f"(peak {args.peak_tflops} TFLOP/s)")
        summary += f", MFU {mfu_fed:.1f}% with the loader ({mfu_bare:.1f}% bare)"
    for line in [*lines, summary]:
        print(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="onediffusion-2.8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after 3 warm-up steps)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0 if torch.cuda.is_available() else 0.0)
    parser.add_argument("--shards", help="precomputed shards (default: synthetic ones in a temp dir)")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    device = torch.device(args.device)
    width = PRESETS[args.preset].caption_width
    shards = args.shards or synthetic_shards(tempfile.mkdtemp(prefix="bench-shards-"), args.views, args.size, width)
    compile_too = device.type == "cuda" and not args.no_compile
    config = TrainConfig(out=tempfile.mkdtemp(), preset=args.preset, compile=False,
                         data=DataConfig(shards=shards, batch_size=args.batch, caption_dropout=0.0,
                                         num_workers=args.workers, task_weights=(("id", 1.0),),
                                         buckets=((args.size, args.size),)))
    with torch.device(device):  # parameters initialised where they train
        model = build_model(args.preset)
    ema = Ema(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, fused=device.type == "cuda")
    loader = make_loader(config.data)
    fixed = next(loader)
    fixed = {**fixed, "views": [v.to(device) for v in fixed["views"]], "t5": fixed["t5"].to(device)}
    flops = step_flops(args.preset, args.batch, args.views, args.size)
    lines = [f"machine: {platform.node()} ({platform.machine()}) | cpu threads: {torch.get_num_threads()} | "
             f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} | torch {torch.__version__}",
             f"config: {json.dumps({k: v for k, v in vars(args).items() if k != 'shards'})}",
             f"TrainConfig: bf16={config.bf16 and device.type == 'cuda'} | measured: eager"
             + (", then torch.compile" if compile_too else "")]
    print("\n".join(lines), flush=True)
    lines += measure("eager", wrap_model(model, config, 1, device), loader, fixed, optimizer, ema, config, device,
                     args, flops)
    if compile_too:
        config = dataclasses.replace(config, compile=True)
        lines += measure("compiled", wrap_model(model, config, 1, device), loader, fixed, optimizer, ema, config,
                         device, args, flops)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
