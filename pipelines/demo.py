"""`onegen demo`: the whole spine on real photos that ship inside installed wheels, fully offline.

Inputs: scikit-image's bundled sample photos (astronaut, coffee, chelsea, rocket, moon, ...),
written as an image folder with an imagefolder-style metadata.jsonl of hand-written captions, plus
three deliberately bad files (not an image, a truncated JPEG, a 16-pixel image) to show that bad input
is recorded, not fatal. Runs ingest -> annotate (canny, blur, lowres, inpaint) -> build -> stats ->
verify and prints where everything is. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from onegen.pipelines.ray_setup import RayConfig

DEMO_PHOTOS = {
    "astronaut": "a portrait of an astronaut in a white spacesuit in front of an American flag",
    "coffee": "a cup of coffee with latte art on a saucer, seen from above",
    "chelsea": "a tabby cat looking to the side, close-up photo",
    "rocket": "a rocket standing on its launch pad under a blue sky",
    "moon": "a black and white close-up of craters on the surface of the moon",
    "hubble_deep_field": "a deep field of distant galaxies photographed by a space telescope",
    "immunohistochemistry": "a microscope image of stained tissue cells",
    "retina": "a photograph of the back of a human eye showing the retina and blood vessels",
    "camera": "a black and white photo of a man with a camera on a tripod",
    "coins": "old coins laid out in rows, black and white photo",
}
WEIGHT_FREE_ANNOTATORS = "canny,blur,lowres,inpaint"


def write_demo_inputs(folder: Path) -> int:
    """Write the bundled photos (+ captions and three bad files) into `folder`; returns the photo count."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    metadata = []
    for name, caption in DEMO_PHOTOS.items():
        loader = getattr(skimage.data, name, None)
        try:
            pixels = loader() if loader else None
        except Exception:  # noqa: BLE001 - a photo this skimage build does not bundle: skip it
            pixels = None
        if pixels is None:
            continue
        Image.fromarray(np.asarray(pixels)).save(folder / f"{name}.png")
        metadata.append({"file_name": f"{name}.png", "text": caption})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metadata))
    bad = folder / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "notes.png").write_bytes(b"this is a text file with an image name\n")
    buffer = io.BytesIO()
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(buffer, format="JPEG")
    (bad / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(bad / "tiny.png")
    return len(metadata)


def run_demo(out: str, ray_config: RayConfig) -> int:
    from onegen.pipelines.cli import main

    root = Path(out).resolve()
    inputs, dataset, shards = root / "inputs" / "photos", root / "dataset", root / "shards"
    photos = write_demo_inputs(inputs)
    print(f"[demo] wrote {photos} bundled photos and 3 bad files to {inputs}")
    common = _ray_args(ray_config)
    steps = [
        ["ingest", str(inputs), "--out", str(dataset), "--rows-per-part", "4", *common],
        ["annotate", str(dataset), "--annotators", WEIGHT_FREE_ANNOTATORS, *common],
        ["build", str(dataset), "--out", str(shards), "--samples-per-shard", "8", *common],
        ["manifest", "stats", str(shards)],
        ["manifest", "verify", str(shards)],
    ]
    for step in steps:
        print(f"[demo] onegen {' '.join(step[:2])} ...", flush=True)
        code = main(step)
        if code != 0:
            print(f"[demo] step failed with exit code {code}")
            return code
    from onegen.pipelines.preview import write_preview

    report = write_preview(str(shards), str(root / "preview"), per_task=4)
    print(f"[demo] done. catalog + annotations: {dataset}\n[demo] shards: {shards} (index: {shards / 'index.json'})")
    print(f"[demo] preview report: {report}")
    return 0


def _ray_args(config: RayConfig) -> list[str]:
    args = []
    if config.address:
        args += ["--address", config.address]
    if config.num_cpus:
        args += ["--num-cpus", str(config.num_cpus)]
    if config.object_store_memory:
        args += ["--object-store-mb", str(config.object_store_memory // 2**20)]
    if not config.progress_bars:
        args.append("--no-progress")
    return args


