"""`onegen demo`: the whole product on real inputs that ship inside installed wheels, fully offline.

Inputs, written under OUT/inputs:
- photos/    scikit-image's bundled sample photos (astronaut, coffee, chelsea, rocket, moon, ...) with an
             imagefolder-style metadata.jsonl of hand-written captions, plus three deliberately bad files
             (not an image, a truncated JPEG, a 16-pixel image) that end up as recorded rejects;
- scenes/    one procedurally rendered multiview scene (transforms.json, known cameras);
- subjects/  an ID set: one subject (the astronaut photo in five framings) and one without a face.
Steps: ingest (3 sources) -> annotate (weight-free conditions, cameras, faces, then depth / pose / HED /
grounded-SAM / captions / entities on TINY RANDOM checkpoints built locally: the plumbing is real, the
pictures are not) -> build -> stats -> verify -> preview report -> precompute + a short tiny-model
training run + one sample per task family. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from onegen.pipelines.runtime.ray_setup import RayConfig

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


def _photo(name: str) -> np.ndarray | None:
    import skimage.data

    loader = getattr(skimage.data, name, None)
    return None if loader is None else np.asarray(loader())


def write_photos(folder: Path) -> int:
    """The bundled photos (+ captions and three bad files) in `folder`; returns the photo count."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = []
    for name, caption in DEMO_PHOTOS.items():
        pixels = _photo(name)
        if pixels is None:
            continue
        Image.fromarray(pixels).save(folder / f"{name}.png")
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


def write_scenes(folder: Path) -> None:
    from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene

    write_scene(folder / "spheres-and-boxes", SceneConfig(seed=3, n_views=8, width=128, height=128))
    (folder / "spheres-and-boxes" / "caption.txt").write_text("coloured spheres and boxes on a grey floor")


def write_subjects(folder: Path) -> None:
    """One subject with a face in five framings, one 'subject' (a cat) whose photos have no face."""
    astronaut, cat = _photo("astronaut"), _photo("chelsea")
    for subject, pixels in (("astronaut", astronaut), ("cat", cat)):
        (folder / subject).mkdir(parents=True, exist_ok=True)
        side = min(pixels.shape[:2]) - 40
        for i in range(5 if subject == "astronaut" else 4):
            crop = np.ascontiguousarray(pixels[i * 8 : i * 8 + side, i * 6 : i * 6 + side])
            Image.fromarray(crop).save(folder / subject / f"{subject}-{i}.png")


DEMO_FOLDERS = ("inputs", "tiny-checkpoints", "dataset", "shards", "preview", "training")  # what a demo makes in --out


def clear_demo_outputs(root: Path) -> list[str]:
    """`demo --overwrite`: remove the folders a demo makes under `root` (nothing else there); their names."""
    import shutil

    removed = [name for name in DEMO_FOLDERS if (root / name).is_dir()]
    for name in removed:
        shutil.rmtree(root / name)
    return removed


def run_demo(out: str, ray_config: RayConfig, overwrite: bool = False) -> int:
    """Every step of the demo under `out` (module docstring); 0, or 1 when the shards fail verification."""
    from onegen.pipelines.demo.tiny_models import demo_annotator_settings
    from onegen.pipelines.demo.train_step import run_training_demo
    from onegen.pipelines.preview.report import write_preview
    from onegen.pipelines.recipe.parse import bundled_recipe, load_recipe
    from onegen.pipelines.recipe.run import run_recipe

    root = Path(out).resolve()
    if overwrite:  # start over: a rerun without it resumes and finds every stage done
        removed = clear_demo_outputs(root)
        print(f"[demo] --overwrite: removed {', '.join(removed) or 'nothing'} under {root}", flush=True)
    inputs, dataset, shards = root / "inputs", root / "dataset", root / "shards"
    photos = write_photos(inputs / "photos")
    write_scenes(inputs / "scenes")
    write_subjects(inputs / "subjects")
    print(f"[demo] inputs in {inputs}: {photos} bundled photos + 3 bad files, 1 rendered scene, 2 ID subjects")
    names, _ = demo_annotator_settings(root / "tiny-checkpoints")  # recipes/demo.toml names these paths
    print(f"[demo] tiny RANDOM checkpoints for {', '.join(names)} in {root / 'tiny-checkpoints'}: "
          "the plumbing is real, the pictures are not")
    recipe = load_recipe(bundled_recipe("demo"), str(root))
    print(f"[demo] onegen run {recipe.path} --dir {root} ...", flush=True)
    run_recipe(recipe, ray_config, echo=lambda line: print(f"[demo] {line}", flush=True))
    if not check_shards(shards):
        return 1
    report = write_preview(str(shards), str(root / "preview"), per_task=4)
    print(f"[demo] preview report: {report}", flush=True)
    training = run_training_demo(str(shards), str(root))
    print(demo_summary(dataset, shards, report, training, root))
    return 0


def check_shards(shards: Path) -> bool:
    """Print the stats table of `shards` (`onegen manifest stats`; its --json has every count) and verify
    them (`onegen manifest verify`); False when verification finds a problem."""
    from onegen.manifests.query import shard_stats
    from onegen.manifests.stats_table import stats_table
    from onegen.manifests.verify import summary_line, verify_shards

    print(f"[demo] onegen manifest stats {shards} (all counts: --json):")
    print("\n".join(f"[demo]   {line}" for line in stats_table(shard_stats(str(shards))).splitlines()), flush=True)
    print(f"[demo] onegen manifest verify {shards} ...", flush=True)
    checked, problems = verify_shards(str(shards))
    for line in [*problems, summary_line(checked, problems)]:
        print(f"[demo] {line}", flush=True)
    return not problems


def demo_summary(dataset: Path, shards: Path, report: str, training: dict, root: Path) -> str:
    """The demo's closing lines; the last one names the samples folder and says why they are noise."""
    from onegen.core.job_output import current_log
    from onegen.manifests.layout import ShardLayout

    loss = (f"final loss {training['final_loss']:.4f}" if training["final_loss"] is not None
            else "already trained: this rerun trained no steps")
    log = current_log()
    return (f"[demo] done. dataset: {dataset}\n[demo] shards: {shards} (index: {ShardLayout(str(shards)).index()})\n"
            f"[demo] preview: {report}\n[demo] tiny model checkpoint: {training['checkpoint']} ({loss})\n"
            + (f"[demo] third-party messages and Ray worker output: {log}\n" if log else "")
            + f"[demo] samples: {root / 'training' / 'samples'} (noise by design: the tiny models are random "
            "and trained for seconds; the plumbing is real, the pictures are not)")
