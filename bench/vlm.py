"""Captions/s of the batched VLM generator against one-request-at-a-time HF generate, in one run.

    python bench/vlm.py                      # real ids from the local HF cache, on the GPU
    python bench/vlm.py --real               # LLaVA-NeXT Mistral-7B, random weights (bench/real_configs.py)
    python bench/vlm.py --tiny --n 16        # tiny random models built on the fly (CPU smoke run)

Both sides use the same loaded model, prompt, images (scikit-image photos at mixed sizes) and greedy
decoding with a fixed `max_new_tokens`. Each batch size runs on the first min(n, 2 x batch size) requests;
the baseline calls generate once per request (batch_size=1) on the first --baseline-n. Captions/s counts
requests answered per wall-clock second, including preprocessing and decoding. Random weights seldom emit
the end token, so their requests decode about `max_new_tokens` each (a real captioner stops at its
caption's end: 100-150 words, ~130-200 tokens). The batched sizes are measured first and each result is
printed as it exists (`summary:` lines), so a run killed at its time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from onegen.annotators.caption import CAPTION_PROMPT
from onegen.annotators.vlm import GenerationSettings, LoadedVLM, VLMRequest, generate, load_vlm

REAL_MODELS = ("llava-hf/llava-v1.6-mistral-7b-hf", "allenai/Molmo2-4B")
SIZES = [(336, 336), (480, 640), (640, 480), (512, 512), (300, 900), (720, 400)]  # (H, W)


def requests(n: int, scale: float) -> list[VLMRequest]:
    """`n` requests cycling over 4 photos x 6 sizes (scaled by `scale`)."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    out = []
    for i in range(n):
        height, width = SIZES[i % len(SIZES)]
        size = (max(8, int(width * scale)), max(8, int(height * scale)))
        image = np.asarray(Image.fromarray(photos[i % len(photos)]).resize(size, Image.BILINEAR))
        out.append(VLMRequest(f"bench-{i}", image, CAPTION_PROMPT))
    return out


def rate(vlm: LoadedVLM, reqs: list[VLMRequest], settings: GenerationSettings, batch_size: int) -> float:
    if vlm.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    generate(vlm, reqs, settings, batch_size)
    if vlm.device == "cuda":
        torch.cuda.synchronize()
    return len(reqs) / (time.perf_counter() - start)


def tiny_checkpoints(root: str, families: list[str]) -> list[str]:
    """Build the tests' tiny LLaVA-NeXT and / or Molmo2 under `root` (onegen.pipelines.demo.tiny_models)."""
    from onegen.pipelines.demo.tiny_models import tiny_llava_next, tiny_molmo2

    builders = {"llava_next": tiny_llava_next, "molmo2": tiny_molmo2}
    return [builders[family](f"{root}/{family}") for family in families]


def real_checkpoints(root: str, device: str) -> list[str]:
    """LLaVA-NeXT Mistral-7B at its real architecture with random weights (bench/real_configs.py), under `root`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_configs import real_llava_next

    return [real_llava_next(f"{root}/llava_next", device)]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def measure(vlm: LoadedVLM, model_id: str, reqs: list[VLMRequest], settings: GenerationSettings,
            batch_sizes: list[int], baseline_n: int) -> None:
    """Batched rates first (the number that matters; each on the first min(n, 2 x batch size) requests), then
    one-at-a-time on the first `baseline_n` requests."""
    name = f"{vlm.family:<10} {Path(model_id).name:<24}"
    batched = {}
    for batch_size in batch_sizes:
        count = min(len(reqs), 2 * batch_size)  # at most two full batches: enough for a rate, and it bounds the time
        batched[batch_size] = rate(vlm, reqs[:count], settings, batch_size)
        print(f"{name} batch {batch_size}: {batched[batch_size]:8.2f} captions/s ({count} requests)")
        print(f"summary: {vlm.family} batch {batch_size}: {batched[batch_size]:.2f} captions/s")
    baseline = rate(vlm, reqs[:baseline_n], settings, batch_size=1)
    ratios = " ".join(f"batch {size} {value / baseline:.2f}x" for size, value in batched.items())
    print(f"{name} one-at-a-time {baseline:8.2f} captions/s ({baseline_n} requests) | {ratios}")
    print(f"summary: {vlm.family} one-at-a-time: {baseline:.2f} captions/s ({ratios})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(REAL_MODELS))
    parser.add_argument("--tiny", action="store_true", help="tiny random models, CPU smoke run")
    parser.add_argument("--families", default="llava_next,molmo2", help="--tiny: which tiny models")
    parser.add_argument("--real", action="store_true", help="LLaVA-NeXT 7B, random weights, built in a temp dir")
    parser.add_argument("--n", type=int, default=128, help="requests (a batch size runs on at most two batches)")
    parser.add_argument("--baseline-n", type=int, help="requests of the one-at-a-time measurement (default: --n)")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--max-new-tokens", type=int, default=200)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
    print(
        f"machine: {platform.node()} ({platform.machine()}) | {device}: {machine} | torch threads: "
        f"{torch.get_num_threads()} | torch {torch.__version__} | python {sys.version.split()[0]}"
    )
    print(f"n={args.n} requests, max_new_tokens={args.max_new_tokens}, greedy, tiny={args.tiny}, real={args.real}")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    reqs = requests(args.n, scale=0.1 if args.tiny else 1.0)
    with tempfile.TemporaryDirectory(prefix="vlm-bench-") as root:
        if args.tiny:
            models = tiny_checkpoints(root, args.families.split(","))
        else:
            models = real_checkpoints(root, device) if args.real else args.models
        for model_id in models:
            vlm = load_vlm(model_id, device)
            generate(vlm, reqs[:2], settings, batch_size=2)  # warm-up: kernels, allocator
            measure(vlm, model_id, reqs, settings, args.batch_sizes, args.baseline_n or args.n)
            del vlm
            if device == "cuda":
                torch.cuda.empty_cache()

if __name__ == "__main__":
    main()
