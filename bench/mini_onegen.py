"""Benchmark: a mini One-Gen that learns on a CPU, end to end on the real commands (onegen issue 24, part 3).

Synthetic scenes with exact depth and cameras -> ingest (Hypersim layout and nerfstudio scenes) -> annotate
(depth_gt, blur, cameras) -> build -> precompute (a small AutoencoderKL fitted here, tiny T5) -> train (tiny
Next-DiT) -> sample -> `onegen eval` depth / camera / deblurring PSNR on held-out scenes, each metric beside
its baselines (constant and mean depth maps; cameras at one pose and on a canonical orbit; the blurred input).
What runs is `onegen.pipelines.demo.mini_onegen.run_mini` (its docstring says every step); this script picks
the size, starts one local Ray, and writes the summary table, the machine (with its load average: the VM is
shared) and every stage's wall time to --out.

    python bench/mini_onegen.py                          # -> bench/results/mini_onegen.txt
    python bench/mini_onegen.py --train-steps 300 --codec-steps 100 --out /tmp/mini.txt --work /tmp/mini
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from onegen.core.config_fields import add_arguments, from_args
from onegen.pipelines.cli.main import main as onegen_main
from onegen.pipelines.demo.mini_onegen import MiniConfig, run_mini, summary_table
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray, shutdown_ray

CPUS, STORE_MB = 2, 300


def machine_line() -> str:
    import torch

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {platform.node()} ({platform.machine()}), {os.cpu_count()} CPU threads (a VM shared with other "
            f"workers), {gpu}, torch {torch.__version__}, torch threads {torch.get_num_threads()}; "
            f"load average (1, 5, 15 min) {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, MiniConfig)
    parser.add_argument("--out", default="bench/results/mini_onegen.txt", help="the results file")
    parser.add_argument("--work", default="", help="folder for the run's files (default: a temp dir, removed)")
    args = parser.parse_args()
    config = from_args(MiniConfig, args)
    before = machine_line()
    init_ray(RayConfig(num_cpus=CPUS, object_store_memory=STORE_MB << 20, progress_bars=False))
    start = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="mini-onegen-") as temp:
            results = run_mini(config, args.work or os.path.join(temp, "mini"),
                               ["--num-cpus", str(CPUS), "--object-store-mb", str(STORE_MB), "--no-progress"], onegen_main)
    finally:
        shutdown_ray()
    table = summary_table(results)
    text = "\n".join([before + " (at the start)", machine_line() + " (at the end)",
                      f"wall time in all: {time.time() - start:.0f} s", f"config: {json.dumps(results['config'])}",
                      table, "results: " + json.dumps({k: results[k] for k in ("depth", "camera", "deblur")})]) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
