"""onegen against img2dataset on the same work: local JPEGs with caption sidecars -> text2image WebDataset.

    python bench/peer_img2dataset.py [--images 4000] [--venv /tmp/i2d]

img2dataset runs in its own environment, made beforehand:

    python -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset

Both read the same `--images` JPEGs (512 px, q95 crops of scikit-image photos, a `.txt` caption each):
- img2dataset: `--resize_mode no`, file:// urls from a Parquet list (url, caption), 2 processes x 16
  threads, 1000 samples per shard, as a subprocess of its venv;
- onegen: `onegen ingest` then `onegen build --tasks text2image` (1000 samples per shard, build units
  of 1000 rows: the default, 4 x samples per shard, would make 4,000 images one unit on one core), each a
  subprocess, start-up and shutdown included, as a user runs them; and "one Ray": the same two
  jobs as one recipe, `onegen run recipe.toml` (one process, one `ray.init`).
Each is run at `--images` and at a quarter of it; the marginal cost per image is the difference of
the two walls over the difference of the counts (fixed costs cancel). Printed: walls, images/s end
to end, marginal ms per image, and the ratio onegen / img2dataset of images/s (goal >= 1.0).
Results: bench/results/peer_img2dataset.txt.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
RECIPE = """root = "d"
shards = "s"

[[sources]]
path = "{photos}"

[build]
tasks = ["text2image"]
samples_per_shard = 1000
rows_per_unit = 1000
"""


def photo_bases() -> list:
    """scikit-image's bundled photos (PHOTOS) as 900 x 900 RGB arrays, the material both peers' crops come from."""
    import numpy as np
    import skimage.data
    from PIL import Image

    bases = []
    for name in PHOTOS:
        pixels = np.asarray(getattr(skimage.data, name)())
        pixels = np.repeat(pixels[..., None], 3, 2) if pixels.ndim == 2 else pixels[..., :3]
        bases.append(np.asarray(Image.fromarray(pixels).resize((900, 900))))
    return bases


def write_inputs(folder: Path, count: int) -> int:
    """`count` 512 px JPEG crops with a caption sidecar each; returns their total bytes."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    bases = photo_bases()
    rng = np.random.default_rng(0)
    total = 0
    for i in range(count):
        base = bases[i % len(bases)]
        y, x = rng.integers(0, base.shape[0] - 512), rng.integers(0, base.shape[1] - 512)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(base[y:y + 512, x:x + 512])).save(buffer, format="JPEG", quality=95)
        (folder / f"{i:06d}.jpg").write_bytes(buffer.getvalue())
        (folder / f"{i:06d}.txt").write_text(f"a photo crop number {i}")
        total += len(buffer.getvalue())
    return total


def url_list(folder: Path, count: int, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(folder.glob("*.jpg"))[:count]
    pq.write_table(pa.table({"url": [f"file://{p}" for p in names],
                             "caption": [p.with_suffix(".txt").read_text() for p in names]}), out)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def run_img2dataset(venv: Path, urls: Path, out: Path) -> float:
    return timed([str(venv / "bin" / "img2dataset"), "--url_list", str(urls), "--input_format", "parquet",
                  "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset",
                  "--output_folder", str(out), "--processes_count", "2", "--thread_count", "16",
                  "--resize_mode", "no", "--number_sample_per_shard", "1000", "--enable_wandb", "False"])


def run_onegen(photos: Path, work: Path) -> tuple[float, float]:
    onegen = [sys.executable, "-m", "onegen.pipelines.cli.main"]
    ingest = timed([*onegen, "ingest", str(photos), "--out", str(work / "d"), "--no-progress"])
    build = timed([*onegen, "build", str(work / "d"), "--out", str(work / "s"), "--tasks", "text2image",
                   "--samples-per-shard", "1000", "--rows-per-unit", "1000", "--no-progress"])
    return ingest, build


def subset(photos: Path, count: int, out: Path) -> Path:
    """A folder of the first `count` inputs (hard links: same files, no copy)."""
    out.mkdir(parents=True)
    for path in sorted(photos.glob("*.jpg"))[:count]:
        for member in (path, path.with_suffix(".txt")):
            os.link(member, out / member.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--venv", default="/tmp/i2d")
    args = parser.parse_args()
    venv = Path(args.venv)
    work = Path(tempfile.mkdtemp(prefix="onegen-peer-"))
    counts = (args.images // 4, args.images)
    walls: dict[str, dict[int, float]] = {"img2dataset": {}, "onegen ingest": {}, "onegen build": {},
                                          "onegen run (one Ray)": {}}
    try:
        megabytes = write_inputs(work / "photos", args.images) / 1e6
        for count in counts:
            photos = work / "photos" if count == args.images else subset(work / "photos", count, work / f"p{count}")
            url_list(photos, count, work / f"urls{count}.parquet")
            walls["img2dataset"][count] = run_img2dataset(venv, work / f"urls{count}.parquet", work / f"i2d{count}")
            walls["onegen ingest"][count], walls["onegen build"][count] = run_onegen(photos, work / f"og{count}")
            recipe = work / f"one{count}" / "recipe.toml"
            recipe.parent.mkdir()
            recipe.write_text(RECIPE.format(photos=photos))
            walls["onegen run (one Ray)"][count] = timed([sys.executable, "-m", "onegen.pipelines.cli.main", "run", str(recipe),
                                                    "--no-progress"])
            assert all(len(list(folder.glob("*.tar"))) for folder in
                       (work / f"i2d{count}", work / f"og{count}" / "s", work / f"one{count}" / "s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([str(venv / "bin" / "pip"), "show", "img2dataset"], capture_output=True,
                             text=True).stdout.split("Version: ")[-1].split()[0]
    small, large = counts
    walls["onegen ingest+build"] = {c: walls["onegen ingest"][c] + walls["onegen build"][c] for c in counts}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {large} JPEGs "
          f"(512 px, {megabytes:.0f} MB, caption sidecars); img2dataset {version}; marginal = slope "
          f"between {small} and {large} images")
    print(f"{'':22s} {'wall ' + str(small):>10s} {'wall ' + str(large):>10s} {'images/s':>9s} {'ms/image':>9s}")
    for name, wall in walls.items():
        marginal = (wall[large] - wall[small]) / (large - small) * 1e3
        print(f"{name:22s} {wall[small]:9.1f}s {wall[large]:9.1f}s {large / wall[large]:9.1f} {marginal:9.2f}")
    peer = walls["img2dataset"][large]
    print(f"ratio onegen / img2dataset images/s at {large}: two CLI jobs {peer / walls['onegen ingest+build'][large]:.2f}, "
          f"onegen run {peer / walls['onegen run (one Ray)'][large]:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
