"""Where a small job's fixed seconds go: imports, `ray.init`, first unit, warm jobs, shutdown.

    python bench/startup.py [--images 10] [--repeats 2]

Each repeat runs two fresh Python processes (the order alternates, the machine is shared):
- "tasks": the job path of pipelines/runtime/units.py `run_unit_tasks` (ingest and build as plain Ray tasks);
- "dataset": the same ingest unit through a one-block Ray Data `map_batches` (the shape ingest and
  build had before; annotate's reads still use it).
In each process the phases are timed one after the other: importing ray + the job modules, `init_ray`,
a second `init_ray` (a recipe's later stages: must cost nothing), the first ingest of `--images` JPEGs
(one unit: the first-unit latency after ray.init returned), a build of them, a warm ingest + build
(a later stage of the same run), and `shutdown_ray`. Printed: every phase, the ratio of the first-unit
latency to `ray.init` in the same process, and the dataset/tasks ratio of first-unit latencies.
Then, per repeat, the process walls a user meets: `python -c pass`, `onegen ingest` and `onegen run`
(ingest + build in one process) of the same images.
Results: bench/results/startup.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("imports", "init_ray", "  of it: raylet registration", "init_ray again", "first ingest (1 unit)", "first build (1 unit)",
          "warm ingest", "warm build", "shutdown")


def write_jpegs(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
        (folder / f"{i:04d}.txt").write_text(f"photo {i}")


def phases(work: Path, path: str) -> dict[str, float]:
    """One process's timings (run by `--child`)."""
    times: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        times[name], start = now - start, now

    import ray  # noqa: F401  - what a CLI job imports before it starts Ray

    if path == "dataset":
        import ray.data  # noqa: F401  - the old shape's driver imported it; plain-task jobs do not

    from onegen.pipelines.jobs import build, ingest
    from onegen.pipelines.runtime import ray_local
    from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray, shutdown_ray
    from onegen.pipelines.sources.settings import SourceSpec
    lap("imports")
    wait_until_registered = ray_local.wait_until_registered

    def timed_wait(*args, **kwargs):
        started = time.perf_counter()
        try:
            return wait_until_registered(*args, **kwargs)
        finally:
            times["  of it: raylet registration"] = time.perf_counter() - started

    ray_local.wait_until_registered = timed_wait
    config = RayConfig(num_cpus=2, progress_bars=False)
    init_ray(config)
    lap("init_ray")
    init_ray(config)
    lap("init_ray again")
    if path == "dataset":
        ingest.IngestJob.run_pending = _dataset_pending  # the old shape, same work
    source = SourceSpec(str(work / "photos"))
    for round_name in ("first", "warm"):
        root, shards = work / f"{path}-{round_name}-d", work / f"{path}-{round_name}-s"
        ingest.run_ingest(ingest.IngestConfig(source, str(root)), config)
        lap("first ingest (1 unit)" if round_name == "first" else "warm ingest")
        build.run_build(build.BuildConfig(str(root), str(shards), tasks=("text2image",)), config)
        lap("first build (1 unit)" if round_name == "first" else "warm build")
    shutdown_ray()
    lap("shutdown")
    return times


def _dataset_pending(job, units, ray_config):
    """IngestJob.run_pending through `_dataset_runner` instead of plain tasks."""
    from onegen.pipelines.runtime.unit_job import run_one_unit

    return _dataset_runner(run_one_unit, units, (job,), job.num_cpus, job.description, ray_config.progress_bars)


def _dataset_runner(fn, units, fn_args, num_cpus, description, progress):
    """ingest's units through a one-block-per-unit Ray Data map (as before run_unit_tasks)."""
    from onegen.pipelines.runtime.units import collect_records, unit_dataset, unit_of

    def step(batch, *args):
        return fn(units[unit_of(batch)], *args)

    dataset = unit_dataset(range(len(units))).map_batches(step, fn_args=fn_args, batch_size=1, batch_format="pyarrow",
                                              num_cpus=num_cpus)
    return collect_records(dataset, len(units), description, progress)


def child(path: str, work: Path) -> dict[str, float]:
    started = time.perf_counter()
    output = subprocess.run([sys.executable, __file__, "--child", path, "--work", str(work)], check=True,
                            capture_output=True, text=True).stdout
    times = json.loads(output.strip().splitlines()[-1])
    times["process wall"] = time.perf_counter() - started
    return times


def cli_walls(work: Path) -> dict[str, float]:
    """Process walls as a user meets them: an empty interpreter, `onegen ingest`, `onegen run` (ingest +
    build of the same images in one process, one Ray)."""
    onegen = [sys.executable, "-m", "onegen.pipelines.cli.main"]
    for old in work.glob("cli-*"):
        shutil.rmtree(old)
    recipe = work / "cli-recipe" / "recipe.toml"
    recipe.parent.mkdir()
    recipe.write_text(f'root = "d"\nshards = "s"\n[[sources]]\npath = "{work / "photos"}"\n'
                      '[build]\ntasks = ["text2image"]\n')
    walls = {}
    for name, argv in (("python -c pass", [sys.executable, "-c", "pass"]),
                       ("CLI onegen ingest", [*onegen, "ingest", str(work / "photos"), "--out", str(work / "cli-d"),
                                              "--no-progress"]),
                       ("CLI onegen run (ingest+build)", [*onegen, "run", str(recipe), "--no-progress"])):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        walls[name] = time.perf_counter() - started
    return walls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=("tasks", "dataset"))
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(phases(Path(args.work), args.child)))
        return
    work = Path(tempfile.mkdtemp(prefix="onegen-startup-"))
    runs: dict[str, list[dict[str, float]]] = {"tasks": [], "dataset": []}
    cli: list[dict[str, float]] = []
    try:
        write_jpegs(work / "photos", args.images)
        for repeat in range(args.repeats):
            for path in (("tasks", "dataset") if repeat % 2 == 0 else ("dataset", "tasks")):
                for old in work.glob(f"{path}-*"):
                    shutil.rmtree(old)
                runs[path].append(child(path, work))
            cli.append(cli_walls(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.images} JPEGs "
          f"(512 px) per job; median of {args.repeats} fresh processes per path")
    median = {path: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]} for path, rs in runs.items()}
    print(f"{'phase':28s} {'tasks':>8s} {'dataset':>8s}")
    for name in (*PHASES, "process wall"):
        print(f"{name:28s} {median['tasks'][name]:7.2f}s {median['dataset'][name]:7.2f}s")
    for name in cli[0]:
        print(f"{name:28s} {sorted(c[name] for c in cli)[len(cli) // 2]:7.2f}s")
    first = {path: m["first ingest (1 unit)"] for path, m in median.items()}
    print(f"first-unit latency / ray.init (same process): tasks {first['tasks'] / median['tasks']['init_ray']:.2f}, "
          f"dataset {first['dataset'] / median['dataset']['init_ray']:.2f}")
    print(f"first-unit latency dataset / tasks: {first['dataset'] / first['tasks']:.2f} "
          f"(goal: tasks <= 3 s after ray.init returns: {first['tasks']:.2f} s)")


if __name__ == "__main__":
    main()
