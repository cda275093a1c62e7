"""Pipeline throughput on this machine: `onegen ingest` + `annotate canny,blur,lowres,inpaint` + `build`
through Ray, against a plain single-process loop doing the same per-image work (validate, four
conditions, write the same five tasks' tar members with webdataset.TarWriter), in one run.

    python bench/pipeline.py [--images 400] [--size 256] [--num-cpus 2]

Prints images/s for both and the ratio. The pipeline pays for Ray start-up (one local Ray for all
three jobs), Parquet stores, manifests and commits; it wins back by using every core.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from onegen.annotators.base import RowError
from onegen.annotators.conditions import BlurAnnotator, CannyAnnotator, InpaintAnnotator, LowresAnnotator
from onegen.core.image_codec import decode_rgb
from onegen.pipelines.sources.image_checks import ImageLimits, normalise_image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def write_inputs(folder: Path, count: int, size: int) -> None:
    import skimage.data

    folder.mkdir(parents=True)
    bases = [np.asarray(getattr(skimage.data, name)()) for name in PHOTOS]
    rng = np.random.default_rng(0)
    for i in range(count):
        base = bases[i % len(bases)]
        y, x = rng.integers(0, base.shape[0] - size), rng.integers(0, base.shape[1] - size)
        Image.fromarray(np.ascontiguousarray(base[y : y + size, x : x + size])).save(folder / f"{i:05d}.png")
    (folder / "metadata.jsonl").write_text("".join(f'{{"file_name": "{i:05d}.png", "text": "a photo crop"}}\n'
                                                   for i in range(count)))


def plain_loop(folder: Path, out: Path) -> float:
    annotators = [CannyAnnotator(), BlurAnnotator(), LowresAnnotator(), InpaintAnnotator()]
    tasks = ["canny2image", "deblurring", "super_resolution", "image_inpainting"]
    start = time.perf_counter()
    out.mkdir(parents=True)
    sinks = {t: wds.TarWriter(str(out / f"{t}.tar")) for t in [*tasks, "text2image"]}
    for path in sorted(folder.glob("*.png")):
        image = normalise_image(path.read_bytes(), ImageLimits())
        row = {"key": path.stem, "image": decode_rgb(image.data)}
        sinks["text2image"].write({"__key__": path.stem, "img0.jpg": image.data, "txt": "[[text2image]] a photo crop"})
        for annotator, task in zip(annotators, tasks, strict=True):
            try:
                outputs = annotator.annotate_one(dict(row))
            except RowError:  # e.g. a flat crop without edges: no sample, as in the pipeline
                continue
            sinks[task].write({"__key__": path.stem, "img0.jpg": image.data, "img1.png": outputs["condition"],
                               "txt": f"[[{task}]] a photo crop"})
    for sink in sinks.values():
        sink.close()
    return time.perf_counter() - start


def pipeline(folder: Path, work: Path, num_cpus: int) -> float:
    from onegen.pipelines.cli.main import main

    ray = ["--num-cpus", str(num_cpus), "--object-store-mb", "500", "--no-progress"]
    start = time.perf_counter()
    assert main(["ingest", str(folder), "--out", str(work / "d"), "--rows-per-part", "64", *ray]) == 0
    assert main(["annotate", str(work / "d"), "--annotators", "canny,blur,lowres,inpaint", *ray]) == 0
    assert main(["build", str(work / "d"), "--out", str(work / "s"), "--samples-per-shard", "500", *ray]) == 0
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onegen-bench-"))
    try:
        write_inputs(work / "photos", args.images, args.size)
        plain = plain_loop(work / "photos", work / "plain")
        ours = pipeline(work / "photos", work, args.num_cpus)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.images} images of {args.size} px, "
          f"5 tasks each (text2image + canny, blur, lowres, inpaint)")
    print(f"plain loop (1 process, no stores)  {plain:7.1f} s  {args.images / plain:6.1f} images/s")
    print(f"onegen ingest+annotate+build (Ray) {ours:7.1f} s  {args.images / ours:6.1f} images/s")
    print(f"ratio onegen / plain loop: {plain / ours:.2f}")


if __name__ == "__main__":
    main()
