"""The training leg of `onegen demo`: tiny local T5 + VAE, precompute, a short CPU train, samples.

`build_tiny_text_encoder(path)` / `build_tiny_vae(path)` (from `onegen.pipelines.demo.tiny_models`) write
random checkpoints from configs (save_pretrained) that load through the same `TextEncoder.load` /
`Vae.load` code as hub ids; tests use them too.
`run_training_demo(shards, out)` returns {"checkpoint", "samples", "final_loss", ...}.
"""

from __future__ import annotations

import time
from pathlib import Path

from onegen.core.tasks import CAMERA_POSE, FACEID, MULTIVIEW, TEXT2IMAGE
from onegen.pipelines.demo.tiny_models import tiny_text_encoder as build_tiny_text_encoder
from onegen.pipelines.demo.tiny_models import tiny_vae as build_tiny_vae

__all__ = ["build_tiny_text_encoder", "build_tiny_vae", "run_training_demo"]


def _view_images(shards: str, task: str, folder: Path, first: int = 1) -> list[str]:
    """Write the image views imgN (N >= `first`) of the first `task` sample in the raw shards to PNGs."""
    import io

    import webdataset as wds
    from PIL import Image

    from onegen.manifests.query import select_shards

    urls = select_shards(shards, tasks=[task])
    for sample in wds.DataPipeline(wds.SimpleShardList(urls[:1]), wds.tarfile_to_samples()):
        names = sorted((k for k in sample if k.startswith("img")), key=lambda k: int(k[3:].split(".")[0]))
        paths = []
        for name in names[first:]:
            path = folder / f"{task}-{name.split('.')[0]}.png"
            Image.open(io.BytesIO(sample[name])).convert("RGB").save(path)
            paths.append(str(path))
        return paths
    return []


# One sample per task family: (family's task in the shards, task asked of the sampler, first view to give).
FAMILY_REQUESTS = ((FACEID, FACEID, 1), (MULTIVIEW, CAMERA_POSE, 0))


def run_training_demo(shards: str, out: str, steps: int = 200) -> dict:
    """Tiny T5 + VAE -> precompute (64 px) -> `tiny` Next-DiT for `steps` CPU steps -> one sample per family.

    Returns {"checkpoint", "latents", "samples": {task: [png paths]}, "final_loss", "trained_steps",
    "seconds"}; on a rerun whose run folder is already at `steps`, nothing trains: "trained_steps" is 0
    and "final_loss" None, and the samples come from that checkpoint.
    """
    import torch

    from onegen.core.tasks import condition_tasks
    from onegen.manifests.query import read_manifests
    from onegen.model.flow import ScheduleConfig
    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae
    from onegen.training.precompute import PrecomputeConfig, run_precompute
    from onegen.training.sample import SampleRequest, generate, load_denoiser, write_outputs
    from onegen.training.train import TrainConfig, train
    from onegen.training.train_config import DataConfig

    start, root = time.time(), Path(out)
    folder = root / "training"
    folder.mkdir(parents=True, exist_ok=True)
    t5, vae_path = build_tiny_text_encoder(folder / "tiny-t5"), build_tiny_vae(folder / "tiny-vae")
    print(f"[demo] tiny T5 + VAE written to {folder}", flush=True)
    latents = str(folder / "latent-shards")
    print(f"[demo] precompute: {run_precompute(PrecomputeConfig(shards, latents, t5, vae_path, ((64, 64),)))}", flush=True)
    config = TrainConfig(out=str(folder / "run"), preset="tiny", text_encoder=t5, vae=vae_path, steps=steps,
                         lr=2e-3, ema_decay=0.95, ckpt_every=steps, progress=False,
                         data=DataConfig(shards=latents, batch_size=4, num_workers=0, buckets=((64, 64),)))
    result = train(config)
    final_loss = result["losses"][-1] if result["losses"] else None
    if final_loss is None:  # a rerun: the run folder already holds step `steps`, nothing was trained
        print(f"[demo] training: {config.out} is already at step {steps}; sampling from it", flush=True)
    else:
        print(f"[demo] trained {steps} steps, final loss {final_loss:.4f}", flush=True)
    model, info = load_denoiser(result["checkpoint"], torch.device("cpu"), "tiny")  # the step folder's EMA
    schedule = ScheduleConfig.from_scheduler_config(info.get("scheduler"))
    vae, text_encoder = Vae.load(vae_path), TextEncoder.load(t5)
    tasks = set(read_manifests(shards, ["task"]).to_pydict().get("task", []))
    two_view = sorted(tasks & set(condition_tasks()))  # the task table's two-view tasks the sampler takes
    requests = [(TEXT2IMAGE, ())] if TEXT2IMAGE in tasks else []
    if two_view:  # image-to-image family: the first condition task, from its condition view
        requests.append((two_view[0], tuple(_view_images(shards, two_view[0], folder)[:1])))
    for family, task, first in FAMILY_REQUESTS:
        if family in tasks:
            requests.append((task, tuple(_view_images(shards, family, folder, first))))
    samples = {}
    for task, conditions in requests:
        request = SampleRequest(task, "a photo", conditions, size=(64, 64), steps=10)
        latent, kinds, flags = generate(model, request, vae, text_encoder, schedule)
        samples[task] = write_outputs(latent, kinds, flags, vae, str(folder / "samples" / task), task, conditions)
        print(f"[demo] sample {task}: {samples[task]}", flush=True)
    return {"checkpoint": result["checkpoint"], "latents": latents, "samples": samples,
            "final_loss": final_loss, "trained_steps": len(result["losses"]), "seconds": time.time() - start}
