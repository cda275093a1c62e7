"""Benchmark: Plücker ray latents for one scene of 12 views at 512 px (64 x 64 rays per view).

Times the vectorised `onegen.core.camera_geometry` path (plucker_rays + rays_to_latent, all views in
one call) against a plain per-pixel numpy reference (a Python loop over views and cells), checks
that both agree, prints both times and the ratio, and writes bench/results/rays.txt with the machine.

    python bench/rays.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from onegen.core.camera_geometry import RAY_SCALE, normalize_cameras, plucker_rays, rays_to_latent
from onegen.pipelines.demo.synthetic_scene import look_at

VIEWS, SIZE, STRIDE = 12, 512, 8


def scene_cameras() -> tuple[np.ndarray, np.ndarray]:
    angles = 2 * np.pi * np.arange(VIEWS) / VIEWS
    eyes = np.stack([3 * np.cos(angles), 3 * np.sin(angles), np.full(VIEWS, 1.5)], axis=1)
    c2w, _ = normalize_cameras(np.stack([look_at(eye, np.zeros(3)) for eye in eyes]))
    k = np.array([[550.0, 0, SIZE / 2], [0, 550.0, SIZE / 2], [0, 0, 1]])
    return c2w, np.stack([k] * VIEWS)


def vectorised(c2w: np.ndarray, k: np.ndarray) -> np.ndarray:
    return rays_to_latent(plucker_rays(c2w, k, SIZE, SIZE, STRIDE))  # (12, 16, 64, 64)


def per_pixel(c2w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The reference: one cell at a time, the textbook formulas."""
    cells = SIZE // STRIDE
    out = np.zeros((VIEWS, 16, cells, cells))
    for n in range(VIEWS):
        k_inv = np.linalg.inv(k[n])
        for i in range(cells):
            for j in range(cells):
                d = c2w[n, :3, :3] @ (k_inv @ np.array([(j + 0.5) * STRIDE, (i + 0.5) * STRIDE, 1.0]))
                d = d / np.linalg.norm(d)
                m = np.cross(c2w[n, :3, 3], d)
                out[n, :, i, j] = RAY_SCALE * np.concatenate([d, m, d, m, d, m[:1]])
    return out


def best_time(fn, repeats: int, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"CPU: {model}; cores available: {cores}; python {platform.python_version()}; numpy {np.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    c2w, k = scene_cameras()
    np.testing.assert_allclose(vectorised(c2w, k), per_pixel(c2w, k), atol=1e-10)
    fast = best_time(vectorised, args.repeats, c2w, k)
    slow = best_time(per_pixel, max(1, args.repeats // 10), c2w, k)
    lines = [
        f"rays for one scene: {VIEWS} views x {SIZE}x{SIZE} px -> {SIZE // STRIDE}x{SIZE // STRIDE} rays, 16 channels",
        machine() + " (shared with other jobs while measured)",
        f"vectorised numpy: {fast * 1e3:.2f} ms per scene (best of {args.repeats})",
        f"per-pixel loop:   {slow * 1e3:.2f} ms per scene (best of {max(1, args.repeats // 10)})",
        f"speed-up: {slow / fast:.1f}x (outputs agree to 1e-10)",
    ]
    print("\n".join(lines))
    out = Path(__file__).parent / "results" / "rays.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
