"""A mini One-Gen that learns on a CPU (bench/mini_onegen.py, tests/pipelines/test_mini_onegen.py).

Synthetic scenes with EXACT depth and cameras (pipelines/demo/synthetic_scene.py) go through the real
commands, `onegen.pipelines.cli.main.main([...])`: ingest -> annotate -> build -> precompute -> train ->
sample -> eval, with the `tiny` Next-DiT, a small fitted latent codec (pipelines/demo/mini_codec.py) and
a tiny T5 (pipelines/demo/tiny_models.py), every image 64 x 64.

Inputs (under OUT/inputs):
- hypersim/    the training scenes in Hypersim's published layout (pipelines/demo/hypersim_layout.py), so
               the exact depth enters through `ingest --kind hypersim` + the `depth_gt` annotator;
- scenes/      the same scenes as nerfstudio transforms.json folders (`ingest --kind scenes`) for
               multiview / camera pose (cameras annotator);
- heldout/     scenes never ingested: images/, depth (planar z, metres, 0 = sky) and cameras.
Tasks trained: depth2image (+ image2depth), deblurring (the `blur` annotator), multiview (+ camera_pose).
Evaluated on the held-out scenes, each beside its baselines, all through `onegen eval`:
- depth: `eval depth --dataset folder` (AbsRel, delta1 after Marigold's scale + shift fit in disparity)
  of `sample --task image2depth` vs a constant map and the per-pixel mean of the training depth conditions;
- camera: `eval camera --dataset folder` (centre accuracy at 0.1 / 0.3 of the scene scale, RayDiffusion)
  of `sample --task camera_pose` on `views_per_scene` views in random order vs all cameras at one pose
  and a canonical evenly spaced orbit in the given order;
- deblurring: `eval nvs --dataset folder` PSNR of `sample --task deblurring` vs the PSNR of the blurred
  input itself (the exact target is the sharp render; the blur is the `blur` annotator's own code).
The depth condition the pipeline wrote (annotations/depth_gt@1) is checked against the renderer's exact
depth: `check_depth_conditions` (error and bound documented there).

`run_mini(config, out)` returns the results dict (metrics, baselines, per-stage wall seconds, codec PSNR,
the depth check); `summary_table(results)` formats it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onegen.core.config_fields import setting
from onegen.core.tasks import CAMERA_POSE, DEBLURRING, DEPTH2IMAGE, IMAGE2IMAGE, MULTIVIEW, TASKS
from onegen.pipelines.demo.hypersim_layout import scene_name, write_camera_csv, write_hypersim_scene
from onegen.pipelines.demo.synthetic_scene import SceneConfig, make_scene, render

IMAGE2DEPTH = TASKS[DEPTH2IMAGE].sample_as[1]  # the sampler's name of depth2image with the roles swapped
SIZE = 64  # pixels: the catalog's minimum side, the training bucket and the sample size
FLOAT16_RELATIVE = 2.0**-11  # half of float16's epsilon: Hypersim stores depth_meters as float16
PNG16_STEP = 1.0 / 65535  # the depth annotator's png16 step of the normalised inverse depth


@dataclass(frozen=True)
class MiniConfig:
    """How big the mini run is: scenes, codec fit, training and sampling."""

    train_scenes: int = setting("synthetic scenes ingested for training", 16)
    heldout_scenes: int = setting("held-out synthetic scenes evaluated", 3)
    views: int = setting("rendered views per scene (an orbit)", 8)
    eval_frames: int = setting("held-out frames per scene for depth and deblurring", 4)
    views_per_scene: int = setting("views given to camera_pose per held-out scene (a random subset, random "
                                   "order); also the multiview samples' view count", 3)
    samples_per_scene: int = setting("multiview samples built per training scene", 8)
    codec_steps: int = setting("Adam steps fitting the latent codec", 80)
    train_steps: int = setting("Next-DiT training steps", 6000)
    batch_size: int = setting("training batch size", 8)
    lr: float = setting("AdamW learning rate", 2e-3)
    sample_steps: int = setting("Euler steps per sample", 20)
    blur_sigma: tuple[float, float] = setting("JSON [min, max] Gaussian blur sigma (pixels) of the deblurring "
                                              "task, training and held-out", (2.5, 3.5))
    seed: int = setting("seed of the scenes, the held-out view choice and the model", 0)


@dataclass
class Rendered:
    """One rendered scene: images (N, H, W, 3) uint8, planar z-depth (N, H, W) (0 = sky), OpenCV c2w (N, 4, 4), K."""

    images: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    k: np.ndarray
    config: SceneConfig = field(default_factory=SceneConfig)


def scene_configs(config: MiniConfig) -> list[SceneConfig]:
    """Training scenes first, then held-out ones; orbits of varied radius and height so that neither the
    mean depth map nor a fixed camera guess fits every scene."""
    rng = np.random.default_rng(config.seed)
    return [SceneConfig(seed=1000 * config.seed + i, n_views=config.views, width=SIZE, height=SIZE,
                        orbit_radius=float(rng.uniform(2.4, 3.6)), orbit_height=float(rng.uniform(0.9, 2.2)))
            for i in range(config.train_scenes + config.heldout_scenes)]


def render_scene(scene_config: SceneConfig) -> Rendered:
    scene = make_scene(scene_config)
    images, depth, _ = render(scene, scene_config.width, scene_config.height)
    return Rendered(images, depth, scene.c2w, scene.intrinsics, scene_config)


def write_inputs(config: MiniConfig, inputs: Path) -> tuple[list[Rendered], list[Rendered]]:
    """Render every scene and write hypersim/, scenes/ (training) and heldout/ (module docstring)."""
    from onegen.pipelines.demo.synthetic_scene import write_scene

    configs = scene_configs(config)
    train, heldout, rows = [], [], []
    for index, scene_config in enumerate(configs):
        rendered = render_scene(scene_config)
        if index < config.train_scenes:
            rows.append(write_hypersim_scene(inputs / "hypersim", scene_name(index), rendered.images,
                                             rendered.depth, rendered.c2w, rendered.k))
            folder = inputs / "scenes" / f"scene-{index:03d}"
            write_scene(folder, scene_config)
            (folder / "caption.txt").write_text("coloured spheres and boxes on a checkered floor")
            train.append(rendered)
        else:
            write_scene(inputs / "heldout" / f"scene-{index:03d}", scene_config)
            heldout.append(rendered)
    write_camera_csv(inputs / "hypersim", rows)
    return train, heldout


def normalised_inverse_depth(z: np.ndarray) -> np.ndarray:
    """The depth annotator's normalised inverse depth of an exact planar depth map (H, W): (1/z - low) /
    (high - low) over surface pixels, 0 on sky (annotators/depth.py `encode_inverse_depth`)."""
    valid = z > 0
    inverse = np.where(valid, 1.0 / np.where(valid, z, 1.0), 0.0)
    low, high = inverse[valid].min(), inverse[valid].max()
    return np.where(valid, (inverse - low) / (high - low), 0.0)


def depth_pictures(scenes: list[Rendered]) -> np.ndarray:
    """Every frame's depth condition as the annotator renders it: (N, H, W, 3) uint8 grey, near white."""
    maps = np.stack([normalised_inverse_depth(z.astype(np.float64)) for r in scenes for z in r.depth])  # (N, H, W)
    return np.repeat(np.round(maps * 255).astype(np.uint8)[..., None], 3, axis=-1)


def check_depth_conditions(root: str, train: list[Rendered]) -> dict:
    """Compare every `depth_gt` row the pipeline wrote with the renderer's exact depth.

    Expected: the depth annotator's encoding of the exact planar depth, d = (1/z - low) / (high - low) over
    the surface pixels (low, high: the exact inverse depth's range), 0 on sky. Allowed error per pixel:
    the png16 rounding (0.5 / 65535) plus what float16 storage of the distance (Hypersim's format, relative
    error <= 2^-11) moves d: <= 3 * 2^-11 * high / (high - low) (the pixel's own inverse depth and the two
    range ends each move by at most 2^-11 of `high`). Returns {"rows", "max_error", "max_bound",
    "max_range_error", "within"}; the sky mask must match exactly.
    """
    from onegen.core.image_codec import decode_png16
    from onegen.manifests import files
    from onegen.manifests.layout import DatasetLayout

    layout = DatasetLayout(root)
    store = layout.find_store("depth_gt")
    worst = {"rows": 0, "max_error": 0.0, "max_bound": 0.0, "max_range_error": 0.0, "within": True}
    for source, path in layout.catalog_parts():
        if source != "hypersim":
            continue
        metas = {r["key"]: json.loads(r["meta"]) for r in files.read_table(path, columns=["key", "meta"]).to_pylist()}
        for row in files.read_table(layout.store_part(store, path)).to_pylist():
            if row["status"] != "ok":
                raise AssertionError(f"depth_gt row {row['key']} is {row['status']}: {row['error']}")
            meta = metas[row["key"]]
            z = train[int(meta["scene"].rsplit("_", 1)[1])].depth[meta["frame"]].astype(np.float64)  # (H, W)
            valid = z > 0
            inverse = np.where(valid, 1.0 / np.where(valid, z, 1.0), 0.0)
            low, high = inverse[valid].min(), inverse[valid].max()
            expected = np.where(valid, (inverse - low) / (high - low), 0.0)
            got = decode_png16(row["png16"]).astype(np.float64) / 65535
            error = float(np.abs(got - expected).max())
            bound = PNG16_STEP / 2 + 3 * FLOAT16_RELATIVE * high / (high - low)
            range_error = max(abs(row["depth_min"] - low) / low, abs(row["depth_max"] - high) / high)
            sky_ok = bool(((got == 0) | valid).all()) and row["invalid_pixels"] == int((~valid).sum())
            worst["rows"] += 1
            worst["max_error"] = max(worst["max_error"], error)
            worst["max_bound"] = max(worst["max_bound"], bound)
            worst["max_range_error"] = max(worst["max_range_error"], range_error)
            worst["within"] &= error <= bound and range_error <= 2 * FLOAT16_RELATIVE and sky_ok
    return worst


def _cli(cli, argv: list[str], log: list[str]) -> str:
    """Run `onegen ARGV` in this process through `cli` (`onegen.pipelines.cli.main.main`, handed in by the
    caller: the cli room sits above this one); its stdout, also kept in `log`. A non-zero exit status is a
    bug of the run, raised."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli(argv)
    log.append(f"$ onegen {' '.join(argv)}\n{buffer.getvalue()}")
    if code != 0:
        raise RuntimeError(f"onegen {' '.join(argv)} exited {code}:\n{buffer.getvalue()}")
    return buffer.getvalue()


def _pick_views(config: MiniConfig, index: int) -> list[int]:
    rng = np.random.default_rng(config.seed * 7919 + index)
    return [int(v) for v in rng.permutation(config.views)[: config.views_per_scene]]


def _eval_frames(config: MiniConfig) -> list[int]:
    return [int(round(f)) for f in np.linspace(0, config.views - 1, config.eval_frames)]


def write_eval_truth(config: MiniConfig, train: list[Rendered], heldout: list[Rendered], out: Path) -> dict:
    """Ground truth and baselines of the held-out scenes (layouts of `onegen eval` folder datasets)."""
    from PIL import Image

    from onegen.annotators.conditions import BlurAnnotator
    from onegen.core.image_codec import decode_rgb

    blur = BlurAnnotator(sigma_min=config.blur_sigma[0], sigma_max=config.blur_sigma[1])
    # the per-pixel mean of the training depth conditions' normalised inverse depth, (H, W)
    mean_map = np.mean([normalised_inverse_depth(z.astype(np.float64)) for r in train for z in r.depth], axis=0)
    work = {"depth_inputs": [], "deblur_inputs": [], "camera_inputs": []}
    for s, rendered in enumerate(heldout):
        name = f"heldout-{s}"
        images = out / "heldout-images" / name
        images.mkdir(parents=True, exist_ok=True)
        for f in _eval_frames(config):
            stem = f"frame_{f:02d}"
            Image.fromarray(rendered.images[f]).save(images / f"{stem}.png")
            for folder in ("depth-gt", "depth-constant", "depth-mean"):
                (out / folder / name).mkdir(parents=True, exist_ok=True)
            np.save(out / "depth-gt" / name / f"{stem}.npy", rendered.depth[f])  # metres, 0 = sky (invalid)
            np.save(out / "depth-constant" / name / f"{stem}.npy", np.full((SIZE, SIZE), 0.5))
            np.save(out / "depth-mean" / name / f"{stem}.npy", mean_map)
            work["depth_inputs"].append((str(images / f"{stem}.png"), f"{name}/{stem}"))
            degraded = blur.annotate_one({"key": f"{name}-{stem}", "image": rendered.images[f]})["condition"]
            for folder, pixels in (("deblur-gt", rendered.images[f]), ("deblur-input", decode_rgb(degraded))):
                (out / folder / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(pixels)[..., :3]).save(out / folder / name / f"{stem}.png")
            work["deblur_inputs"].append((str(out / "deblur-input" / name / f"{stem}.png"), f"{name}/{stem}"))
        views = _pick_views(config, s)
        for i in views:
            Image.fromarray(rendered.images[i]).save(images / f"view_{i:02d}.png")
        truth = {"c2w": rendered.c2w[views].tolist(), "scene_c2w": rendered.c2w.tolist()}
        _write_json(out / "camera-gt" / name / "cameras.json", truth)
        same = np.repeat(np.eye(4)[None], len(views), axis=0)  # every camera at one pose
        _write_json(out / "camera-mean-pose" / name / "cameras.json", {"c2w": same.tolist()})
        angles = 2 * np.pi * np.arange(len(views)) / len(views)  # evenly spaced, in the order given
        orbit = same.copy()
        orbit[:, :3, 3] = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
        _write_json(out / "camera-orbit" / name / "cameras.json", {"c2w": orbit.tolist()})
        work["camera_inputs"].append(([str(images / f"view_{i:02d}.png") for i in views], name))
    return work


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _eval(onegen, kind: str, predictions: Path, gt: Path, out: Path, extra: list[str]) -> dict:
    onegen(["eval", kind, str(predictions), "--gt", str(gt), "--out", str(out), *extra])
    return json.loads(out.read_text())


def run_mini(config: MiniConfig, out: str | Path, ray_args: list[str], cli) -> dict:
    """The whole mini run under `out` (module docstring) through `cli` (`onegen.pipelines.cli.main.main`:
    argv -> exit status); `ray_args` go to ingest / annotate / build."""
    from onegen.pipelines.demo.mini_codec import CodecConfig, fit_codec, reconstruction_psnr
    from onegen.pipelines.demo.tiny_models import tiny_text_encoder

    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    inputs, root, shards, latents, run = out / "inputs", out / "dataset", out / "shards", out / "latents", out / "run"
    times: dict[str, float] = {}
    log: list[str] = []

    def onegen(argv: list[str]) -> str:
        return _cli(cli, argv, log)

    def timed(stage: str, work):
        start = time.perf_counter()
        value = work()
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - start
        return value

    train, heldout = timed("render", lambda: write_inputs(config, inputs))
    train_images = np.concatenate([r.images for r in train])  # (N, H, W, 3)
    # the codec encodes photos and depth conditions (grey inverse depth) alike: it is fitted on both
    fit_images = np.concatenate([train_images, depth_pictures(train)])  # (2N, H, W, 3)
    codec = timed("codec", lambda: fit_codec(fit_images, out / "codec", CodecConfig(steps=config.codec_steps,
                                                                                   seed=config.seed)))
    codec["psnr_heldout"] = reconstruction_psnr(codec["path"], np.concatenate([r.images for r in heldout]))
    codec["psnr_heldout_depth"] = reconstruction_psnr(codec["path"], depth_pictures(heldout))
    t5 = tiny_text_encoder(out / "tiny-t5")
    blur = [f"blur.sigma_min={config.blur_sigma[0]}", f"blur.sigma_max={config.blur_sigma[1]}"]
    timed("ingest", lambda: [onegen(["ingest", str(inputs / "hypersim"), "--kind", "hypersim", "--name", "hypersim",
                                   "--out", str(root), *ray_args]),
                             onegen(["ingest", str(inputs / "scenes"), "--kind", "scenes", "--name", "scenes",
                                   "--out", str(root), *ray_args])])
    timed("annotate", lambda: onegen(["annotate", str(root), "--annotators", "depth_gt,blur,cameras",
                                    *[a for s in blur for a in ("--set", s)], *ray_args]))
    depth_check = check_depth_conditions(str(root), train)
    timed("build", lambda: onegen(["build", str(root), "--out", str(shards), "--tasks",
                                 ",".join((DEPTH2IMAGE, DEBLURRING, MULTIVIEW)), "--views", str(config.views_per_scene),
                                 "--view-resolution", str(SIZE), "--samples-per-scene", str(config.samples_per_scene),
                                 *ray_args]))
    timed("precompute", lambda: onegen(["precompute", str(shards), "--out", str(latents), "--text-encoder", t5,
                                      "--vae", codec["path"], "--buckets", f"{SIZE}x{SIZE}", "--device", "cpu"]))
    train_config = {"out": str(run), "preset": "tiny", "text_encoder": t5, "vae": codec["path"], "lr": config.lr,
                    "ema_decay": 0.99, "steps": config.train_steps, "ckpt_every": config.train_steps,
                    "progress": False, "sample_rows": 0, "bf16": False, "seed": config.seed,
                    "data": {"shards": str(latents), "batch_size": config.batch_size, "buckets": [[SIZE, SIZE]],
                             "num_workers": 0, "caption_dropout": 0.0, "pose_prob": 0.5,
                             "task_weights": [[IMAGE2IMAGE, 2.0], [MULTIVIEW, 1.0]]}}
    _write_json(out / "mini-train.json", train_config)
    trained = timed("train", lambda: onegen(["train", "--config", str(out / "mini-train.json")]))
    loss = re.search(r"last loss ([0-9.]+)", trained)
    work = write_eval_truth(config, train, heldout, out)
    common = ["--checkpoint", str(run), "--preset", "tiny", "--size", f"{SIZE}x{SIZE}", "--steps",
              str(config.sample_steps), "--cfg-scale", "1", "--seed", str(config.seed)]
    for task, key, folder in ((IMAGE2DEPTH, "depth_inputs", "depth-pred"),
                              (DEBLURRING, "deblur_inputs", "deblur-samples")):
        for path, item in work[key]:
            timed("sample", lambda t=task, p=path, i=item, f=folder: onegen(
                ["sample", *common, "--task", t, "--condition", p, "--out", str(out / f / i)]))
    for paths, name in work["camera_inputs"]:
        timed("sample", lambda p=paths, n=name: onegen(
            ["sample", *common, "--task", CAMERA_POSE, *[a for x in p for a in ("--condition", x)],
             "--out", str(out / "camera-pred" / n)]))
    for _, item in work["deblur_inputs"]:  # the generated image of each deblurring sample, named as the truth
        target = out / "deblur-pred" / f"{item}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "deblur-samples" / item / "view_0_generated.png", target)
    results_dir = out / "eval"
    results_dir.mkdir()

    def evaluate():
        depth = {name: _eval(onegen, "depth", out / folder, out / "depth-gt", results_dir / f"depth-{name}.json",
                             ["--dataset", "folder"])
                 for name, folder in (("model", "depth-pred"), ("constant", "depth-constant"), ("mean", "depth-mean"))}
        camera = {name: _eval(onegen, "camera", out / folder, out / "camera-gt", results_dir / f"camera-{name}.json", [])
                  for name, folder in (("model", "camera-pred"), ("mean_pose", "camera-mean-pose"),
                                       ("orbit", "camera-orbit"))}
        deblur = {name: _eval(onegen, "nvs", out / folder, out / "deblur-gt", results_dir / f"deblur-{name}.json",
                              ["--dataset", "folder", "--size", str(SIZE)])
                  for name, folder in (("model", "deblur-pred"), ("blurred_input", "deblur-input"))}
        return depth, camera, deblur

    depth, camera, deblur = timed("eval", evaluate)
    (out / "commands.log").write_text("\n".join(log))
    return {"config": asdict(config), "times": times, "codec": codec, "depth_check": depth_check,
            "final_loss": float(loss.group(1)) if loss else None,
            "depth": {k: v["summary"] for k, v in depth.items()},
            "camera": {k: v["summary"] for k, v in camera.items()},
            "deblur": {k: v["summary"] for k, v in deblur.items()},
            "counts": {"train_frames": len(train_images), "heldout_frames": len(work["depth_inputs"]),
                       "heldout_scenes": len(heldout)}}


def metric_rows(results: dict) -> list[tuple[str, str, float, str, float, str]]:
    """(metric, baseline, model value, better when, baseline value, comparison) for every metric vs every baseline."""
    rows = []
    for name, higher in (("abs_rel", False), ("delta1", True)):
        for base in ("constant", "mean"):
            rows.append((f"depth {name}", f"{base} depth map", results["depth"]["model"][name], higher,
                         results["depth"][base][name]))
    for name in ("acc_0.1", "acc_0.3"):
        for base in ("mean_pose", "orbit"):
            rows.append((f"camera {name}", base.replace("_", " "), results["camera"]["model"][name], True,
                         results["camera"][base][name]))
    rows.append(("deblur PSNR dB", "blurred input", results["deblur"]["model"]["psnr"], True,
                 results["deblur"]["blurred_input"]["psnr"]))
    return [(m, b, v, "higher" if h else "lower", bv, _compare(v, bv, h, m.endswith("dB"))) for m, b, v, h, bv in rows]


def _compare(value: float, base: float, higher: bool, difference: bool) -> str:
    wins = value > base if higher else value < base
    if difference:
        text = f"{value - base:+.2f} dB"
    elif base:
        text = f"x{value / base:.2f}"
    else:
        text = f"{value - base:+.3f}"
    return f"{text} {'WIN' if wins else 'no win'}"


def summary_table(results: dict) -> str:
    """The metrics table, the codec, the depth check and the stages' wall times, as text."""
    lines = [f"{'metric':<18} {'baseline':<18} {'model':>9} {'baseline':>9}  vs baseline (better: ...)"]
    for metric, base, value, better, base_value, comparison in metric_rows(results):
        lines.append(f"{metric:<18} {base:<18} {value:>9.4f} {base_value:>9.4f}  {comparison} ({better})")
    codec, check = results["codec"], results["depth_check"]
    lines.append(f"codec: AutoencoderKL {codec['path'].rsplit('/', 1)[-1]}, held-out reconstruction PSNR "
                 f"{codec['psnr_heldout']:.2f} dB on photos, {codec['psnr_heldout_depth']:.2f} dB on depth "
                 f"conditions (fit MSE {codec['final_mse']:.4f}, scaling {codec['scaling_factor']:.3f})")
    lines.append(f"depth condition vs exact depth: {check['rows']} rows, max |error| {check['max_error']:.2e} "
                 f"(bound {check['max_bound']:.2e}), range rel. error {check['max_range_error']:.1e}: "
                 f"{'within' if check['within'] else 'OUTSIDE'}")
    lines.append(f"final training loss: {results['final_loss']}; counts: {results['counts']}")
    lines.append("wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in results["times"].items())
                 + f", total {sum(results['times'].values()):.1f}")
    return "\n".join(lines)
