"""Benchmark: batches/s of the training loader against a plain `webdataset.WebDataset` pipeline, in one run.

Both read the same precomputed latent shards (synthetic, the layout `onegen precompute` writes: the V float16
latent views in `views.npy` + `kinds.txt`, T5 states `t5.npy` + `t5mask.npy`, `json`; or --shards), with the same
DataLoader worker count, shuffle buffer and batch size, and decode the same members into the same tensors:
  ours:     `training.data.make_loader` (seekable shard streams, family mixing, roles, pending batches by
            shape, a resumable state snapshot per batch);
  baseline: `wds.WebDataset(urls, resampled=True).shuffle(buffer).map(decode).batched(batch)` in a
            DataLoader (no mixing, no roles, no state).
Both are started and warmed up (workers started, buffers filled), then timed in alternating chunks of
--chunk batches until each has given --batches; the report is the ratio ours / baseline (goal >= 0.9) and goes
to --out.

    python bench/loader.py --out bench/results/loader_cpu.txt          # CPU, 2 workers
    python bench/loader.py --views 4 --size 256 --workers 8 --batches 400 --out bench/results/loader_gpu.txt
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
import webdataset as wds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import synthetic_shards  # noqa: E402

from onegen.manifests.query import select_shards  # noqa: E402
from onegen.training.data import DataConfig, make_loader  # noqa: E402


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode(sample: dict) -> dict:
    """The members our loader decodes, into the same dtypes: latents and T5 states float32, mask bool."""
    packed = _npy(sample["views.npy"])  # (V, 16, h, w)
    kinds = sample["kinds.txt"].decode().split()
    assert len(kinds) == packed.shape[0]
    return {"views": [torch.from_numpy(view.astype(np.float32)) for view in packed],
            "t5": torch.from_numpy(_npy(sample["t5.npy"]).astype(np.float32)),
            "t5mask": torch.from_numpy(_npy(sample["t5mask.npy"]).astype(bool)),
            "meta": json.loads(sample["json"]), "key": sample["__key__"]}


def collate(items: list[dict]) -> dict:
    return {"views": [torch.stack([it["views"][v] for it in items]) for v in range(len(items[0]["views"]))],
            "t5": torch.stack([it["t5"] for it in items]), "t5mask": torch.stack([it["t5mask"] for it in items]),
            "key": [it["key"] for it in items]}


def baseline_loader(urls: list[str], batch: int, buffer: int, workers: int):
    dataset = (wds.WebDataset(urls, resampled=True, shardshuffle=False, nodesplitter=None, seed=0)
               .shuffle(buffer, initial=buffer).map(decode).batched(batch, collation_fn=collate, partial=False))
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                            persistent_workers=workers > 0))


def interleaved(loaders: dict, batches: int, chunk: int, warmup: int) -> dict[str, float]:
    """Batches/s of each loader, timed in alternating chunks of `chunk` batches (all loaders alive and warm),
    so that load from other processes on a shared machine falls on every side alike."""
    for loader in loaders.values():
        for _ in range(warmup):
            next(loader)
    spent = dict.fromkeys(loaders, 0.0)
    for _ in range(max(1, batches // chunk)):
        for name, loader in loaders.items():
            start = time.perf_counter()
            for _ in range(chunk):
                next(loader)
            spent[name] += time.perf_counter() - start
    return {name: max(1, batches // chunk) * chunk / seconds for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="pixel size of a view (latents are size / 8)")
    parser.add_argument("--caption-width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--buffer", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--samples", type=int, default=64, help="synthetic samples (16 per shard)")
    parser.add_argument("--chunk", type=int, default=10, help="batches per timed chunk (the sides alternate)")
    parser.add_argument("--shards", help="precomputed faceid shards (default: synthetic ones in a temp dir)")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    shards = args.shards or synthetic_shards(tempfile.mkdtemp(prefix="bench-loader-"), args.views, args.size,
                                             args.caption_width, args.samples)
    urls = select_shards(shards, tasks=["faceid"])
    config = DataConfig(shards, args.batch, ((args.size, args.size),), (("id", 1.0),), caption_dropout=0.0,
                        shuffle_buffer=args.buffer, num_workers=args.workers)
    warmup = 2 * max(1, args.workers)
    loaders = {"ours": make_loader(config), "baseline": baseline_loader(urls, args.batch, args.buffer, args.workers)}
    rates = interleaved(loaders, args.batches, args.chunk, warmup)
    o, b = rates["ours"], rates["baseline"]
    lines = [f"machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cpus) | torch {torch.__version__} | "
             f"webdataset {wds.__version__}",
             f"config: {json.dumps({k: v for k, v in vars(args).items() if k != 'shards'})}",
             f"ours: {o:.1f} batches/s | plain WebDataset: {b:.1f} batches/s | ratio {o / b:.2f} (goal >= 0.9)"]
    report = "\n".join(lines)
    print(report)
    print(f"summary: loader {o / b:.2f}x a plain WebDataset pipeline ({o:.1f} vs {b:.1f} batches/s, "
          f"{args.workers} workers)")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    main()
