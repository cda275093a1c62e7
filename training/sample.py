"""`onegen sample`: Euler sampling of a trained Next-DiT for every task family (docs/design.md §6).

One call builds a view layout and a generate mask, then runs `sample_euler` over the generated views;
condition views stay clean and get the released sampler's last timestep (`--cond-timestep zero`: 0). The
schedule is the released img2img one (`--schedule release`): exp(mu) shift with mu linear in the generated
tokens, base/max values from the checkpoint's scheduler config (else `flow.ScheduleConfig`'s defaults);
`--schedule fixed --shift 3` uses one fixed shift. The checkpoint (an exported .safetensors, a
`save_checkpoint` .pt, or a training step folder, whose EMA is used) is read without pickle and must hold
`--preset`. Tasks (`TASKS`):
  text2image                      1 generated view
  <cond>2image (canny2image, ...) [image (generated), condition (--condition)]
  image2<cond> (image2depth, ...) roles swapped: [image (--condition), condition (generated)]
  multiview                       [img0, ray0, img1, ray1, ...]: --condition images first, rays from
                                  --cameras (JSON {"c2w": OpenCV (N, 4, 4), "intrinsics": (N, 3, 3)} or the
                                  released orbit {"azimuths", "elevations", "distances"}, N = all views; see
                                  `_ray_latents`), the remaining images generated
  camera_pose                     images (--condition) clean, rays generated, then `cameras_from_rays`
                                  -> cameras.json (released frame + OpenCV / OpenGL c2w relative to camera 0)
  faceid                          [target (generated), references (--condition)]; prompt
                                  `[[faceid]] [[img0]] <--prompt> [[img1]] <--reference-prompt 1> ...`,
                                  built by the shard builder's own `task_prompts.faceid_prompt`
CFG is text-only: the negative prompt (no task token) replaces the caption; an empty negative prompt
means "no caption" (all-False mask), which is what caption dropout trains. Writes view_<i>.png per image
view (generated and given) and grid.png.
`--prompts FILE.jsonl` (GenEval, `write_geneval`): text2image for every line of GenEval's prompt file, in
GenEval's folder layout, 4 images a prompt; there --steps and --cfg-scale default to the paper's 100 and 5.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from onegen.core.task_prompts import faceid_prompt
from onegen.core.task_prompts import task_prompt as prompt_of
from onegen.core.tasks import (
    CAMERA_POSE,
    FACEID,
    MULTIVIEW,
    TEXT2IMAGE,
    condition_tasks,
    sampler_tasks,
    swapped_tasks,
)
from onegen.model.flow import ScheduleConfig, fixed_sigmas, release_schedule, sample_euler
from onegen.model.nextdit import (
    NextDiT,
    build_model,
    check_preset,
    checkpoint_info,
    load_model_checkpoint,
)
from onegen.training.data import fit_to_bucket

# from the task table (core/tasks.py): reverse tasks -> their token, two-view tasks, every --task name
SWAPPED = swapped_tasks()
CONDITION_TASKS = condition_tasks()
TASKS = sampler_tasks()
GENEVAL_STEPS, GENEVAL_CFG = 100, 5.0  # the paper's GenEval settings (Euler), the defaults of --prompts


@dataclass(frozen=True)
class SampleRequest:
    task: str
    prompt: str = ""
    conditions: tuple[str, ...] = ()  # image paths
    cameras: str | None = None  # JSON path (multiview)
    num_views: int = 2  # multiview: images in all (given + generated)
    size: tuple[int, int] = (256, 256)  # pixel (H, W)
    steps: int = 30
    cfg_scale: float = 4.0
    negative_prompt: str = ""
    cond_last_timestep: bool = True  # condition views at the schedule's last timestep (False: 0)
    seed: int = 0
    reference_prompts: tuple[str, ...] = ()  # faceid: caption of each --condition reference, in order
    schedule: str = "release"  # "release" (dynamic shift) or "fixed" (`shift`)
    shift: float = 3.0


def load_denoiser(path: str, device: torch.device, preset: str) -> tuple[NextDiT, dict]:
    """(model, {"train_config", "scheduler"}) from an exported .safetensors, a `save_checkpoint` .pt or a
    training step folder (its EMA); weights only, and `CheckpointMismatch` unless it holds `preset`."""
    if os.path.isdir(path):
        from onegen.training.checkpoint import consolidated_weights, latest_checkpoint

        folder = path if os.path.exists(os.path.join(path, "meta.json")) else (latest_checkpoint(path) or path)
        weights, meta = consolidated_weights(folder, ema=True)
        check_preset({"preset": meta["preset"], "config": meta["model_config"]}, preset, folder)
        model = build_model(preset)
        model.load_state_dict(weights, strict=True)
        info = {"train_config": meta.get("config") or {}, "scheduler": meta.get("scheduler")}
    else:
        model = load_model_checkpoint(path, preset)
        info = checkpoint_info(path)
    return model.to(device).eval(), info


def task_prompt(request: SampleRequest) -> str:
    token = SWAPPED.get(request.task, request.task)
    if token == CAMERA_POSE:
        token = MULTIVIEW
    if token == FACEID:  # the shard builder's function: one [[imgN]] per view, each with its caption
        if len(request.reference_prompts) > len(request.conditions):
            raise ValueError(f"{len(request.reference_prompts)} --reference-prompt for "
                             f"{len(request.conditions)} --condition references")
        refs = [*request.reference_prompts, *[None] * (len(request.conditions) - len(request.reference_prompts))]
        return faceid_prompt([request.prompt, *refs])
    return prompt_of(token, request.prompt)


def _ray_latents(request: SampleRequest, n: int) -> torch.Tensor:
    """Condition rays as the released `img2img(is_multiview=True)` builds them: the cameras of the JSON
    (`sampling_cameras`: OpenCV / OpenGL c2w + K, or the released azimuth/elevation orbit) moved into
    camera 0's pytorch3d view frame without rescaling (`first_camera_frame`); "normalize": true applies
    the training data's normalisation (camera 0 1.7 from the axes' intersection) instead."""
    from onegen.core.camera_geometry import (
        first_camera_frame,
        normalize_cameras,
        plucker_rays,
        rays_to_latent,
        sampling_cameras,
    )

    with open(request.cameras) as handle:
        cams = json.load(handle)
    c2w, intrinsics = sampling_cameras(cams, n, request.size[1], request.size[0])
    c2w, _ = normalize_cameras(c2w) if cams.get("normalize") else first_camera_frame(c2w)
    rays = plucker_rays(c2w, intrinsics, request.size[1], request.size[0])  # (n, h, w, 6)
    return torch.from_numpy(rays_to_latent(rays).astype(np.float32))  # (n, 16, h, w)


def layout(request: SampleRequest, vae) -> tuple[list[torch.Tensor | None], list[str], list[bool]]:
    """(clean latents per view or None, view kinds "image"/"ray", generate flags)."""
    given = [vae.encode(fit_to_bucket(Image.open(p), request.size)[None])[0] for p in request.conditions]  # (16, h, w)
    task = request.task
    needed = {TEXT2IMAGE: 0, MULTIVIEW: 1, CAMERA_POSE: 2}.get(task, 1)
    if len(given) < needed:
        raise ValueError(f"task {task!r} needs at least {needed} --condition image(s), got {len(given)}")
    if task == TEXT2IMAGE:
        return [None], ["image"], [True]
    if task in CONDITION_TASKS:
        return [None, given[0]], ["image", "image"], [True, False]
    if task in SWAPPED:
        return [given[0], None], ["image", "image"], [False, True]
    if task == FACEID:
        return [None, *given], ["image"] * (1 + len(given)), [True] + [False] * len(given)
    if task in (MULTIVIEW, CAMERA_POSE):
        n = request.num_views if task == MULTIVIEW else len(given)
        rays = _ray_latents(request, n) if task == MULTIVIEW else [None] * n
        views, kinds, generate = [], [], []
        for i in range(n):
            views += [given[i] if i < len(given) else None, rays[i]]
            kinds += ["image", "ray"]
            generate += [i >= len(given), task == CAMERA_POSE]
        return views, kinds, generate
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def _caption(text_encoder, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not prompt:  # "no caption", as caption dropout trains it
        return torch.zeros(1, 1, text_encoder.width), torch.zeros(1, 1, dtype=torch.bool)
    states, mask = text_encoder.encode([prompt])
    return states.float(), mask


@torch.no_grad()
def generate(model: NextDiT, request: SampleRequest, vae, text_encoder,
             scheduler: ScheduleConfig | None = None) -> tuple[torch.Tensor, list[str], list[bool]]:
    """Run the sampler (`scheduler`: the checkpoint's schedule values, None: the defaults); returns
    (latents (1, 16, V, h, w), kinds, generate flags)."""
    device = next(model.parameters()).device
    views, kinds, flags = layout(request, vae)
    h, w = request.size[0] // 8, request.size[1] // 8
    clean = torch.stack([v if v is not None else torch.zeros(16, h, w) for v in views], dim=1)[None]  # (1, 16, V, h, w)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(request.seed))
    caption, mask = _caption(text_encoder, task_prompt(request))
    neg, neg_mask = _caption(text_encoder, request.negative_prompt)
    generate_mask = torch.tensor([flags], device=device)  # (1, V)
    if request.schedule == "fixed":
        sigmas = fixed_sigmas(request.steps, request.shift)  # (steps + 1,)
    else:
        sigmas = release_schedule(generate_mask, h * w // 4, request.steps, scheduler or ScheduleConfig())
    latents = sample_euler(model, noise.to(device), clean.to(device), generate_mask,
                           caption.to(device), mask.to(device), neg.to(device), neg_mask.to(device), request.steps,
                           request.cfg_scale, sigmas, cond_last_timestep=request.cond_last_timestep)
    return latents.cpu(), kinds, flags


def to_uint8(view: torch.Tensor) -> np.ndarray:
    """A decoded view (3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((view.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def write_outputs(latents: torch.Tensor, kinds: list[str], flags: list[bool], vae, out: str, task: str,
                  conditions: tuple[str, ...] = ()) -> list[str]:
    """view_<i>.png per image view, grid.png, and cameras.json for camera_pose; returns the PNG paths.

    Generated views are decoded by the VAE; a given view is written as given (`conditions`, the request's
    images in order: the non-generated image views are exactly those), fitted to the sample size as the
    model saw it, not through a VAE round trip. Without `conditions` given views are decoded too."""
    os.makedirs(out, exist_ok=True)
    images, paths = [], []
    given = iter(conditions)
    size = (latents.shape[-2] * 8, latents.shape[-1] * 8)
    for i, kind in enumerate(kinds):
        if kind != "image":
            continue
        path = None if flags[i] else next(given, None)
        view = fit_to_bucket(Image.open(path), size) if path else vae.decode(latents[:, :, i])[0]  # (3, H, W)
        pixels = to_uint8(view)  # (H, W, 3)
        paths.append(os.path.join(out, f"view_{i}{'_generated' if flags[i] else ''}.png"))
        Image.fromarray(pixels).save(paths[-1])
        images.append(pixels)
    Image.fromarray(np.concatenate(images, axis=1)).save(os.path.join(out, "grid.png"))
    if task == CAMERA_POSE:
        from onegen.core.camera_geometry import camera0_c2w, cameras_from_rays, latent_to_rays

        rays = latent_to_rays(latents[0, :, 1::2].permute(1, 0, 2, 3).numpy().astype(np.float64))  # (n, h, w, 6)
        cams = cameras_from_rays(rays)  # OpenCV c2w in the released frame (camera 0's pytorch3d view frame)
        c2w = np.stack([c.c2w for c in cams])  # (n, 4, 4)
        with open(os.path.join(out, "cameras.json"), "w") as handle:
            json.dump({"c2w": c2w.tolist(), "intrinsics": [c.intrinsics.tolist() for c in cams],
                       "c2w_opencv": camera0_c2w(c2w, "opencv").tolist(),
                       "c2w_opengl": camera0_c2w(c2w, "opengl").tolist(),
                       "frame": "c2w: OpenCV c2w in the released frame (camera 0's pytorch3d view frame); "
                                "c2w_opencv / c2w_opengl: relative to camera 0 (identity)"}, handle)
    return paths


def read_prompt_file(path: str) -> list[dict]:
    """GenEval's prompt file (prompts/evaluation_metadata.jsonl): one JSON object with a "prompt" a line,
    kept whole; a missing file or a line that is not one is a PathError (one `onegen: error:` line) naming it."""
    from onegen.core.errors import PathError  # the file named by --prompts is not one cli.main can read

    if not os.path.isfile(path):
        raise PathError(f"{path}: no such --prompts file (GenEval's evaluation_metadata.jsonl)")
    prompts = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                metadata = json.loads(line)
            except ValueError as error:
                raise PathError(f"{path}:{number}: not a JSON line ({error})") from None
            if not isinstance(metadata, dict) or not isinstance(metadata.get("prompt"), str):
                raise PathError(f"{path}:{number}: no \"prompt\" string")
            prompts.append(metadata)
    return prompts


def write_geneval(model: NextDiT, request: SampleRequest, prompts: list[dict], out: str, images: int, vae,
                  text_encoder, scheduler: ScheduleConfig | None = None) -> int:
    """GenEval's folder layout, as its generation/diffusers_generate.py writes it and its
    evaluation/evaluate_images.py reads it (djghosh13/geneval): `<out>/<index:05d>/metadata.jsonl` (the prompt
    file's line) and `<out>/<index:05d>/samples/<n:05d>.png`, `images` text2image samples a prompt, the n-th
    with seed `request.seed + index * images + n`. Returns the number of images written."""
    for index, metadata in enumerate(prompts):
        folder = os.path.join(out, f"{index:05d}")
        os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
        with open(os.path.join(folder, "metadata.jsonl"), "w") as handle:
            json.dump(metadata, handle)
        for n in range(images):
            one = replace(request, prompt=metadata["prompt"], seed=request.seed + index * images + n)
            latents, _, _ = generate(model, one, vae, text_encoder, scheduler)
            Image.fromarray(to_uint8(vae.decode(latents[:, :, 0])[0])).save(
                os.path.join(folder, "samples", f"{n:05d}.png"))
    return len(prompts) * images


def _cmd_sample(args: argparse.Namespace) -> int:
    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae

    if args.prompts and args.task != TEXT2IMAGE:
        from onegen.core.errors import PathError

        raise PathError(f"--prompts samples text2image (GenEval); got --task {args.task}")
    prompts = read_prompt_file(args.prompts) if args.prompts else None
    defaults = (GENEVAL_STEPS, GENEVAL_CFG) if prompts is not None else (SampleRequest.steps, SampleRequest.cfg_scale)
    steps = defaults[0] if args.steps is None else args.steps
    cfg_scale = defaults[1] if args.cfg_scale is None else args.cfg_scale
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, info = load_denoiser(args.checkpoint, device, args.preset)  # CheckpointMismatch: a user error
    config = info.get("train_config") or {}
    encoders = {"--text-encoder": args.text_encoder or config.get("text_encoder", ""),
                "--vae": args.vae or config.get("vae", "")}
    missing = [flag for flag, value in encoders.items() if not value]
    if missing:  # a .pt of save_checkpoint, or a run trained without them, names none
        from onegen.core.errors import PathError

        raise PathError(f"{args.checkpoint} names no {' / '.join(m[2:] for m in missing)} (its training config has "
                        f"none): pass {' and '.join(f'{m} ID' for m in missing)}")
    text_encoder = TextEncoder.load(encoders["--text-encoder"], device)
    vae = Vae.load(encoders["--vae"], device)
    height, width = (int(v) for v in args.size.lower().split("x"))
    request = SampleRequest(args.task, args.prompt, tuple(args.condition), args.cameras, args.num_views,
                            (height, width), steps, cfg_scale, args.negative_prompt,
                            args.cond_timestep == "last", args.seed, tuple(args.reference_prompt), args.schedule,
                            args.shift)
    scheduler = ScheduleConfig.from_scheduler_config(info.get("scheduler"))
    if prompts is not None:
        written = write_geneval(model, request, prompts, args.out, args.images_per_prompt, vae, text_encoder, scheduler)
        print(f"sample: wrote {written} images for {len(prompts)} prompts (GenEval layout) to {args.out}")
        return 0
    latents, kinds, flags = generate(model, request, vae, text_encoder, scheduler)
    paths = write_outputs(latents, kinds, flags, vae, args.out, args.task, request.conditions)
    print(f"sample: wrote {len(paths)} views + grid to {args.out}")
    return 0
