"""The cluster data path at scale, on this machine (issue: workers commit, the driver only plans).

    python bench/scale.py [--images 1000] [--size 512] [--rows 10000,100000] [--parquet-mb 1024]

(i)   driver CPU seconds per GB written by ingest, annotate (canny,blur,lowres,inpaint) and build,
      measured with getrusage of the driver process alone (workers are other processes);
(ii)  a synthetic GPU-like annotator (fixed sleep per batch, ~1 MB of output per row) on 1, 2, 4, 8
      actors: rows/s against the 1-actor run, and the driver's CPU seconds;
(iii) ingest -> canny -> build of N tiny (64 px) images for each N in --rows: peak RSS of the driver and
      of the largest worker, sampled every 0.2 s; ratio of the peaks at the largest N to the smallest;
(iv)  bytes read / bytes of a Parquet source while its parts are read (the ingest read path, in this
      process, from /proc/self/io rchar): the goal is <= 1.1.
Every number is a ratio against a baseline measured in the same run. Results: bench/results/scale.txt.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from onegen.annotators.base import Annotator
from onegen.annotators.conditions import BlurAnnotator, CannyAnnotator, InpaintAnnotator, LowresAnnotator
from onegen.pipelines.jobs.annotate import run_annotators
from onegen.pipelines.jobs.build import BuildConfig, run_build
from onegen.pipelines.jobs.ingest import IngestConfig, run_ingest
from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray, shutdown_ray
from onegen.pipelines.sources.kinds import list_items, read_items
from onegen.pipelines.sources.listing import cut_parts
from onegen.pipelines.sources.settings import SourceSpec

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_images(folder: Path, count: int, size: int) -> None:
    import skimage.data

    folder.mkdir(parents=True)
    bases = [np.asarray(getattr(skimage.data, name)()) for name in PHOTOS]
    bases = [np.repeat(b[..., None], 3, 2) if b.ndim == 2 else b[..., :3] for b in bases]
    side = max(size, 600)
    bases = [np.asarray(Image.fromarray(b).resize((side, side))) for b in bases]  # resized once, cropped per image
    rng = np.random.default_rng(0)
    for i in range(count):
        base = bases[i % len(bases)]
        y, x = rng.integers(0, base.shape[0] - size + 1), rng.integers(0, base.shape[1] - size + 1)
        (folder / f"img{i:06d}.jpg").write_bytes(_jpeg(np.ascontiguousarray(base[y:y + size, x:x + size])))
        (folder / f"img{i:06d}.txt").write_text(f"photo {i}")


def _driver_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def driver_cost(work: Path, images: int, size: int, ray: RayConfig) -> list[str]:
    """(i): driver CPU s per GB of each job's output."""
    write_images(work / "photos", images, size)
    root, shards = work / "d", work / "s"
    annotators = [CannyAnnotator(), BlurAnnotator(), LowresAnnotator(), InpaintAnnotator()]
    jobs = [("ingest", lambda: run_ingest(IngestConfig(SourceSpec(str(work / "photos")), str(root)), ray), root / "catalog"),
            ("annotate", lambda: run_annotators(str(root), annotators, False, ray), root / "annotations"),
            ("build", lambda: run_build(BuildConfig(str(root), str(shards)), ray), shards),
            # the first ingest pays this process's first imports of the job's modules (~0.3 s): the same
            # job again, into another root, shows what ingest itself costs the driver
            ("ingest (again, modules imported)",
             lambda: run_ingest(IngestConfig(SourceSpec(str(work / "photos")), str(work / "d2")), ray), work / "d2" / "catalog")]
    init_ray(ray)
    lines = []
    for name, job, output in jobs:
        before, start = _driver_cpu(), time.perf_counter()
        job()
        cpu, wall, gb = _driver_cpu() - before, time.perf_counter() - start, _bytes(output) / 1e9
        lines.append(f"(i) {name} {images} x {size}px: {gb:.3f} GB in {wall:.1f} s; driver CPU {cpu:.2f} s "
                     f"= {cpu / gb:.2f} s/GB (before this change: ingest n/a, annotate 8.2, build 4.4)")
    return lines


@dataclass
class GpuLike(Annotator):
    """A stand-in for a GPU model: one declared GPU per actor, state set up once per actor (so the
    runner keeps it in the streaming actor pool, as a real model), a fixed sleep per batch and ~1 MB
    of output per row."""

    name: ClassVar[str] = "gpulike"
    output_schema: ClassVar[pa.Schema] = pa.schema([("blob", pa.binary())])
    decode_images: ClassVar[bool] = False
    seconds_per_batch: float = 1.0

    def setup(self):
        self.blob = BLOB  # what a model annotator loads once per actor

    def annotate(self, rows):
        time.sleep(self.seconds_per_batch)
        return [{"blob": self.blob} for _ in rows]  # the same 1 MB each time: the bench measures the data path


BLOB = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8).tobytes()


def actor_scaling(work: Path, ray: RayConfig, rows: int) -> list[str]:
    """(ii): rows/s of the GPU-like annotator on 1, 2, 4, 8 actors; driver CPU for each.

    Ray is started with 8 declared GPUs (Ray schedules on the resource; nothing here touches CUDA), so
    each actor holds one "GPU" and the pool has exactly the asked-for size, as on a GPU node. The
    catalog is ingested once; each run annotates every part again (its store removed)."""
    write_images(work / "tiny", rows, 64)
    root = work / "g"
    shutdown_ray()
    gpus = RayConfig(num_cpus=ray.num_cpus, num_gpus=8, object_store_memory=ray.object_store_memory, progress_bars=False)
    run_ingest(IngestConfig(SourceSpec(str(work / "tiny")), str(root), rows_per_part=16), gpus)
    lines, base = [], None
    for actors in (1, 2, 4, 8):
        shutil.rmtree(root / "annotations", ignore_errors=True)
        before, start = _driver_cpu(), time.perf_counter()
        run_annotators(str(root), [GpuLike(num_gpus=1, num_cpus=0.05, batch_size=8, concurrency=actors)], False, gpus)
        wall, cpu = time.perf_counter() - start, _driver_cpu() - before
        rate = rows / wall
        base = base or rate
        lines.append(f"(ii) {actors} actor(s): {rate:.1f} rows/s ({rate / base:.2f}x of 1 actor; ideal {actors}x), "
                     f"{wall:.1f} s, driver CPU {cpu:.2f} s for {rows} rows of ~1 MB")
    shutdown_ray()
    return lines


class PeakRss:
    """Samples the RSS of this process and of its descendants every 0.2 s."""

    def __init__(self):
        self.driver = self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            for child in me.children(recursive=True):
                try:
                    if "ray::" in " ".join(child.cmdline()[:1]) or "default_worker" in " ".join(child.cmdline()):
                        self.worker = max(self.worker, child.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def memory_growth(work: Path, sizes: list[int], ray: RayConfig) -> list[str]:
    """(iii): peak RSS of driver and largest worker for ingest -> canny -> build of N 64 px images.

    Each N runs in a fresh driver process (`--peak-rss N`), and the images are written by another
    process before it starts: the bench's own image writing and an earlier N's run would otherwise
    be part of the driver's peak."""
    lines, peaks = [], {}
    for n in sizes:
        folder = work / f"m{n}"
        subprocess.run([sys.executable, __file__, "--write-images", str(folder), "--rows", str(n)], check=True)
        start = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--peak-rss", str(work / f"run{n}"), "--images-from",
                                str(folder), "--num-cpus", str(ray.num_cpus)], check=True, capture_output=True, text=True)
        driver, worker = (int(v) for v in child.stdout.split("peak-rss ", 1)[1].split())
        peaks[n] = (driver, worker)
        lines.append(f"(iii) {n} rows: {time.perf_counter() - start:.0f} s, peak RSS driver {driver / 2**20:.0f} MiB, "
                     f"largest worker {worker / 2**20:.0f} MiB")
        shutil.rmtree(folder)
    small, large = min(sizes), max(sizes)
    lines.append(f"(iii) peak at {large} / peak at {small}: driver {peaks[large][0] / peaks[small][0]:.2f}, "
                 f"worker {peaks[large][1] / peaks[small][1]:.2f} (goal <= 1.2)")
    return lines


def peak_rss_run(work: Path, folder: Path, ray: RayConfig) -> None:
    """The measured run of (iii), in this (fresh) process: prints `peak-rss DRIVER WORKER` in bytes."""
    root = work / "d"
    with PeakRss() as rss:
        run_ingest(IngestConfig(SourceSpec(str(folder)), str(root)), ray)
        run_annotators(str(root), [CannyAnnotator()], False, ray)
        run_build(BuildConfig(str(root), str(work / "s")), ray)
    shutdown_ray()
    shutil.rmtree(work, ignore_errors=True)
    print(f"peak-rss {rss.driver} {rss.worker}")


def _rchar() -> int:
    with open("/proc/self/io") as handle:
        return int(next(line for line in handle if line.startswith("rchar")).split()[1])


def read_amplification(work: Path, megabytes: int) -> list[str]:
    """(iv): bytes read / source bytes when every ingest part of a Parquet source is read."""
    rng = np.random.default_rng(0)
    path = work / "source.parquet"
    blob = rng.integers(0, 255, 200_000, dtype=np.uint8).tobytes()  # incompressible "images"
    rows = megabytes * 5
    writer = pq.ParquetWriter(path, pa.schema([("image", pa.binary()), ("caption", pa.string())]), compression="none")
    for start in range(0, rows, 500):
        count = min(500, rows - start)
        writer.write_table(pa.table({"image": [blob[i % 997:] for i in range(start, start + count)],
                                     "caption": [f"row {i}" for i in range(start, start + count)]}))
    writer.close()
    spec = SourceSpec(str(path))
    parts = cut_parts(list_items(spec), 256)
    list(read_items(spec, parts[0][:1]))  # warm the imports
    before = _rchar()
    read = sum(len(data) for part in parts for _, data in read_items(spec, part) if isinstance(data, bytes))
    amplification = (_rchar() - before) / path.stat().st_size
    return [f"(iv) Parquet source {path.stat().st_size / 1e9:.2f} GB in {len(parts)} parts: read {amplification:.3f}x "
            f"of its bytes ({read / 1e9:.2f} GB of images; goal <= 1.1)"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--gpu-rows", type=int, default=1024)  # batches of 8, 1 s each: 128 s on one actor
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--parquet-mb", type=int, default=1024)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--only", default="i,ii,iii,iv")
    parser.add_argument("--write-images", help=argparse.SUPPRESS)  # (iii)'s helper processes
    parser.add_argument("--peak-rss", help=argparse.SUPPRESS)
    parser.add_argument("--images-from", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ray = RayConfig(num_cpus=args.num_cpus, object_store_memory=1 << 30, progress_bars=False)
    if args.write_images:
        write_images(Path(args.write_images), int(args.rows), 64)
        return
    if args.peak_rss:
        peak_rss_run(Path(args.peak_rss), Path(args.images_from), ray)
        return
    work = Path(tempfile.mkdtemp(prefix="onegen-scale-"))
    parts = set(args.only.split(","))
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Ray on {args.num_cpus} CPUs"]
    try:
        if "iv" in parts:
            lines += read_amplification(work, args.parquet_mb)
        if "i" in parts:
            lines += driver_cost(work / "i", args.images, args.size, ray)
        if "ii" in parts:
            lines += actor_scaling(work / "ii", ray, args.gpu_rows)
        if "iii" in parts:
            lines += memory_growth(work / "iii", [int(n) for n in args.rows.split(",")], ray)
    finally:
        shutdown_ray()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
