"""Captions/s of the batched VLM generator against one-request-at-a-time HF generate, in one run.

    python bench/vlm.py                      # real ids from the local HF cache, on the GPU
    python bench/vlm.py --tiny --n 16        # tiny random models built on the fly (CPU smoke run)

Both sides use the same loaded model, prompt, images (scikit-image photos at mixed sizes) and greedy
decoding with a fixed `max_new_tokens`; the baseline calls generate once per request (batch_size=1).
Captions/s counts requests answered per wall-clock second, including preprocessing and decoding.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def tiny_checkpoints(root: str) -> list[str]:
    """Build the test suite's tiny LLaVA-NeXT and Molmo2 under `root` (same builders as the tests)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "annotators" / "test_vlm.py"
    spec = importlib.util.spec_from_file_location("_tiny_vlm_builders", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [build(f"{root}/{family}") for family, build in module.BUILDERS.items()]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(REAL_MODELS))
    parser.add_argument("--tiny", action="store_true", help="tiny random models, CPU smoke run")
    parser.add_argument("--n", type=int, default=128, help="requests per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--max-new-tokens", type=int, default=200)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = tiny_checkpoints(tempfile.mkdtemp(prefix="vlm-bench-")) if args.tiny else args.models
    machine = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
    print(
        f"machine: {platform.node()} ({platform.machine()}) | {device}: {machine} | torch threads: "
        f"{torch.get_num_threads()} | torch {torch.__version__} | python {sys.version.split()[0]}"
    )
    print(f"n={args.n} requests, max_new_tokens={args.max_new_tokens}, greedy, tiny={args.tiny}")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    reqs = requests(args.n, scale=0.1 if args.tiny else 1.0)
    for model_id in models:
        vlm = load_vlm(model_id, device)
        generate(vlm, reqs[:2], settings, batch_size=2)  # warm-up: kernels, allocator
        baseline = rate(vlm, reqs, settings, batch_size=1)
        line = f"{vlm.family:<10} {Path(model_id).name:<36} one-at-a-time {baseline:8.2f} captions/s"
        for batch_size in args.batch_sizes:
            batched = rate(vlm, reqs, settings, batch_size)
            line += f" | batch {batch_size}: {batched:8.2f} captions/s ({batched / baseline:5.2f}x)"
        print(line, flush=True)
        del vlm
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
